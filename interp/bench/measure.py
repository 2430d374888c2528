"""Process memory, CPU and timing probes for benchmarks (Linux; imports neither JAX nor torch).

Peak memory is the kernel's resident high-water mark VmHWM, which writing 5 to
/proc/self/clear_refs resets, so each phase of a worker process gets its own peak. Benchmarks run
each side in its own process (`interp.bench.harness.spawn`), so one library's allocator, thread
pools and imports never count against the other's. CPU seconds are user + system time of every
thread of this process: less sensitive to other tenants' load than wall time, but they count
spin-waiting.
"""

from __future__ import annotations

import gc
import os
import resource
import time
from typing import Callable


def _status_bytes(field: str) -> int:
  with open("/proc/self/status") as fh:
    for line in fh:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise KeyError(field)


def rss() -> int:
  """Resident set size now, bytes."""
  return _status_bytes("VmRSS")


def peak() -> int:
  """Resident high-water mark since start or the last `reset_peak`, bytes."""
  return _status_bytes("VmHWM")


def reset_peak() -> bool:
  """Resets VmHWM to the current RSS; False where the kernel does not allow it."""
  try:
    with open("/proc/self/clear_refs", "w") as fh:
      fh.write("5")
    return True
  except OSError:
    return False


def malloc_trim() -> None:
  """Returns freed heap pages to the OS, so RSS counts live memory only (glibc; else a no-op)."""
  try:
    import ctypes
    ctypes.CDLL(None).malloc_trim(0)
  except (OSError, AttributeError):
    pass


def settle(timeout: float = 5.0) -> int:
  """RSS once pending frees are done: XLA releases buffers asynchronously, so trim until stable."""
  last, t0 = -1, time.perf_counter()
  while time.perf_counter() - t0 < timeout:
    gc.collect()
    malloc_trim()
    now = rss()
    if abs(now - last) < 2**20:
      return now
    last = now
    time.sleep(0.25)
  return rss()


def time_calls(call: Callable[[], object], block: Callable[[object], object],
               reps: int) -> list[float]:
  """Seconds per call; the previous outputs are dropped before each call so they do not pile up."""
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    out = call()
    block(out)
    times.append(time.perf_counter() - t0)
    del out
  return times


def machine() -> dict:
  """Cores and load average (other tenants' load makes timings noisy)."""
  return {"cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg())}


def cpu_seconds() -> float:
  """User + system CPU seconds this process has used so far, all threads."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def timed(call: Callable[[], object], block: Callable[[object], object]) -> tuple[float, float]:
  """(wall, CPU) seconds of one call, blocked until its outputs exist."""
  c0, t0 = cpu_seconds(), time.perf_counter()
  block(call())
  return time.perf_counter() - t0, cpu_seconds() - c0


def ru_maxrss() -> int:
  """This process's lifetime peak RSS (getrusage), bytes."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
