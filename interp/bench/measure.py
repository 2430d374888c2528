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


def cpu_description(path: str = "/proc/cpuinfo") -> dict:
  """{"cpu_model": /proc/cpuinfo's model name, "vector_isa": the widest x86 vector extension
  it lists (avx512f, avx2, avx or None)}; {} where there is no /proc/cpuinfo.

  Timings mean little without it: the machines this project is measured on are not all one CPU
  (2026-12-07: the whole test suite took 1.3x as long, and a float32 matmul ran at 0.6-0.8x the
  rate, on an AVX2-only AMD EPYC as on the machine of the days before, whose CPU went
  unrecorded)."""
  model, flags = None, None
  try:
    with open(path) as fh:
      for line in fh:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
          model = value.strip()
        elif key == "flags" and flags is None:
          flags = set(value.split())
  except OSError:
    return {}
  isa = next((f for f in ("avx512f", "avx2", "avx") if f in (flags or ())), None)
  return {"cpu_model": model, "vector_isa": isa}


def matmul_gflops(n: int = 2048, reps: int = 3) -> float:
  """numpy's float32 [n, n] @ [n, n] rate, GFLOP/s (best of `reps`): one number to compare two
  machines' timings by (about 0.5 s; it varies by 10-20 % run to run)."""
  import numpy as np
  a = np.ones((n, n), np.float32)
  a @ a  # warm: threads started, pages touched
  best = min(timed(lambda: a @ a, lambda out: out)[0] for _ in range(reps))
  return 2 * n ** 3 / best / 1e9


def describe(machine: dict) -> str:
  """`machine()`'s record (with "matmul_gflops" when measured) as "AMD EPYC, avx2, 2 cores;
  numpy float32 matmul 141 GFLOP/s"."""
  isa = f", {machine['vector_isa']}" if machine.get("vector_isa") else ""
  rate = (f"; numpy float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s"
          if machine.get("matmul_gflops") else "")
  return f"{machine.get('cpu_model') or 'unknown CPU'}{isa}, {machine.get('cpu_count')} cores{rate}"


def describe_load(loadavg) -> str:
  """A load average (1, 5, 15 min) as "1.14 / 2.03 / 2.39"."""
  return " / ".join(f"{x:.2f}" for x in loadavg)


def machine() -> dict:
  """Cores, CPU model and vector extension, and load average (other tenants' load makes
  timings noisy)."""
  return {"cpu_count": os.cpu_count(), **cpu_description(), "loadavg": list(os.getloadavg())}


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
