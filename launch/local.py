"""Run any experiments/ binary as N processes on this host, joined by jax.distributed.

  python launch/local.py --num_processes=2 --devices_per_process=4 --logdir=runs/lm/logs -- \
      python experiments/train_lm.py --workdir=runs/lm --mesh=data:-1

Each process gets JAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port), JAX_NUM_PROCESSES and
JAX_PROCESS_ID, which `interp.parallel.mesh.maybe_initialize_distributed` reads, plus CPU-only
simulated devices. Logs go to <logdir>/process_<i>.log. If any process fails, the others are
stopped, the failing log's tail is printed, and the exit status is non-zero.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time

from absl import app, flags

_NUM = flags.DEFINE_integer("num_processes", 2, "Processes to start.")
_DEVICES = flags.DEFINE_integer("devices_per_process", 4, "Simulated CPU devices per process.")
_LOGDIR = flags.DEFINE_string("logdir", "runs/launch_logs", "Folder for per-process logs.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 0, "Kill everything after this many seconds (0: none).")


@dataclasses.dataclass(frozen=True)
class LocalLaunch:
  command: tuple[str, ...]
  num_processes: int = 2
  devices_per_process: int = 4
  logdir: str = "runs/launch_logs"
  timeout_s: float = 0


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run(cfg: LocalLaunch) -> int:
  """Starts the processes, waits, and returns 0 or the first failing process's exit status."""
  if not cfg.command:
    raise ValueError("launch/local.py: give the command to run after `--`")
  os.makedirs(cfg.logdir, exist_ok=True)
  port = free_port()
  procs, logs = [], []
  for i in range(cfg.num_processes):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(cfg.num_processes), JAX_PROCESS_ID=str(i),
               JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={cfg.devices_per_process}")
    path = os.path.join(cfg.logdir, f"process_{i}.log")
    log = open(path, "w")
    logs.append(path)
    procs.append(subprocess.Popen(list(cfg.command), env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True))
  start, status = time.monotonic(), 0
  try:
    while any(p.poll() is None for p in procs):
      failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
      if failed:
        status = procs[failed[0]].returncode
        _report(logs[failed[0]], failed[0], status)
        break
      if cfg.timeout_s and time.monotonic() - start > cfg.timeout_s:
        print(f"launch/local.py: timed out after {cfg.timeout_s}s", file=sys.stderr)
        status = 124
        break
      time.sleep(0.2)
    else:
      failed = [i for i, p in enumerate(procs) if p.returncode != 0]
      if failed:
        status = procs[failed[0]].returncode
        _report(logs[failed[0]], failed[0], status)
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, 9)
        p.wait()
  return status


def _report(path: str, index: int, status: int) -> None:
  with open(path) as f:
    tail = f.read()[-4000:]
  print(f"launch/local.py: process {index} exited with status {status}; its log ({path}) ends:\n"
        f"{tail}", file=sys.stderr)


def main(argv):
  cfg = LocalLaunch(command=tuple(argv[1:]), num_processes=_NUM.value,
                    devices_per_process=_DEVICES.value, logdir=_LOGDIR.value,
                    timeout_s=_TIMEOUT.value)
  sys.exit(run(cfg))


if __name__ == "__main__":
  app.run(main)
