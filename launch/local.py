r"""Run any experiments/ binary as N processes on this host, joined by jax.distributed.

  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      python experiments/train_lm.py --workdir=runs/lm2 --mesh=data:-1

Each process gets JAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port), JAX_NUM_PROCESSES and
JAX_PROCESS_ID, which `interp.parallel.mesh.maybe_initialize_distributed` reads (it also selects
gloo CPU collectives), plus `--devices_per_process` simulated CPU devices. Each process's output
is appended to <logdir>/process_<i>.log, after a header line per launch (so re-running a command
keeps the log of the run that failed), where logdir defaults to <workdir>/logs when the command
has a --workdir (so the logs sit in the run folder); process 0's is echoed here. While they run,
<logdir>/pids.json holds {"launcher": pid, "processes": [pid of process 0, ...]}; each process
leads its own process group (its pid is the group id), so `kill -9 -<pid>` reaches its children.

When a process dies (a non-zero exit, or killed by a signal such as SIGKILL or the OOM killer),
the others are SIGKILLed at once, without a grace period: a peer blocked in a collective would
wait for the dead one until the gloo/XLA timeout and could not save anyway (a save is itself a
collective). One line names the dead process, how it ended and its log, then the log's tail
follows; the exit status is the dead process's (128 + signal number when killed by a signal).
When several are found dead at once, one killed by a signal is named first: a peer's collective
error is the consequence, not the cause. Nothing half-written is taken for a checkpoint: Orbax
writes each step into `<step>.orbax-checkpoint-tmp` and renames it only after every process has
written its part, and the next start deletes such folders, so re-running the same command resumes
from the last complete step (tests/test_launch.py checks it resumes bit-identically).

A SIGTERM or Ctrl-C to the launcher is forwarded as SIGTERM (train_lm saves a preemption checkpoint
and exits cleanly), and whatever is still running after --grace_s is killed. Every process runs
in its own session and dies with the launcher, so nothing is left running.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

if __package__ in (None, ""):  # run as a script: make `interp` importable from the checkout
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
from interp import jsonio  # noqa: E402
from interp import usage  # noqa: E402

_NUM = flags.DEFINE_integer("num_processes", 2, "Processes to start.")
_DEVICES = flags.DEFINE_integer("devices_per_process", 4, "Simulated CPU devices per process "
                                "(0: leave JAX_PLATFORMS and XLA_FLAGS as they are).")
_LOGDIR = flags.DEFINE_string("logdir", "", "Folder for process_<i>.log (default: <workdir>/logs "
                              "from the command's --workdir, else runs/launch_logs).")
_TIMEOUT = flags.DEFINE_float("timeout_s", 0, "Kill everything after this many seconds (0: none).")
_GRACE = flags.DEFINE_float("grace_s", 30, "After forwarding SIGTERM, kill what still runs after "
                            "this many seconds.")
_ECHO = flags.DEFINE_bool("echo", True, "Echo process 0's output to this terminal.")
# Shared by every launcher in launch/ (they import this module, and a flag is defined once).
DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print what would run, and run nothing.")

DEFAULT_LOGDIR = "runs/launch_logs"
PIDS_FILE = "pids.json"


@dataclasses.dataclass(frozen=True)
class LocalLaunch:
  """Attributes:
    command: the program and its arguments, run unchanged in every process.
    num_processes: processes to start; 1 starts one process without jax.distributed.
    devices_per_process: simulated CPU devices per process (0: the environment decides).
    logdir: where process_<i>.log go ("" = `default_logdir(command)`).
    timeout_s: kill everything after this long (0 = no limit); the status is then 124.
    grace_s: time between a forwarded SIGTERM and the kill.
    echo: copy process 0's output to stdout as it comes.
    env: extra environment variables for every process.
  """

  command: tuple[str, ...]
  num_processes: int = 2
  devices_per_process: int = 4
  logdir: str = ""
  timeout_s: float = 0
  grace_s: float = 30
  echo: bool = False
  env: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    if not self.command:
      raise ValueError("launch/local.py: give the command to run after `--`, e.g. `-- python "
                       "experiments/train_lm.py --workdir=runs/lm2`")
    if self.num_processes < 1 or self.devices_per_process < 0:
      raise ValueError(f"--num_processes={self.num_processes} must be >= 1 and "
                       f"--devices_per_process={self.devices_per_process} >= 0")


def workdir_of(command) -> str | None:
  """The value of --workdir in an absl command line, if any."""
  for i, arg in enumerate(command):
    if arg.startswith("--workdir="):
      return arg.split("=", 1)[1]
    if arg == "--workdir" and i + 1 < len(command):
      return command[i + 1]
  return None


def default_logdir(command) -> str:
  workdir = workdir_of(command)
  return os.path.join(workdir, "logs") if workdir else DEFAULT_LOGDIR


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(cfg: LocalLaunch, index: int, port: int) -> dict[str, str]:
  """The environment of process `index`: distributed coordinates and simulated devices."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
  env["PYTHONUNBUFFERED"] = "1"
  if cfg.num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(cfg.num_processes), JAX_PROCESS_ID=str(index))
  if cfg.devices_per_process:
    others = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                      if not f.startswith("--xla_force_host_platform_device_count"))
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=(
        f"{others} --xla_force_host_platform_device_count={cfg.devices_per_process}").strip())
  env.update(dict(cfg.env))
  return env


def dry_run_text(cfg: LocalLaunch) -> str:
  """The per-process environment and command (the port is chosen when it runs)."""
  lines = [f"# launch/local.py --dry_run: {cfg.num_processes} process(es), logs in "
           f"{cfg.logdir or default_logdir(cfg.command)}/process_<i>.log"]
  for i in range(cfg.num_processes):
    env = process_env(cfg, i, 0)
    shown = {k: env[k].replace(":0", ":<free port>") if k == "JAX_COORDINATOR_ADDRESS" else env[k]
             for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                       "JAX_PLATFORMS", "XLA_FLAGS") + tuple(dict(cfg.env)) if k in env}
    lines.append(" ".join(f"{k}={shlex.quote(v)}" for k, v in shown.items()) + " "
                 + shlex.join(cfg.command))
  return "\n".join(lines) + "\n"


try:  # looked up here, not in the forked child, where only async-signal-safe work belongs
  _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
  _PRCTL = None


def _die_with_parent() -> None:
  """In the child, before exec: SIGKILL me if the launcher dies (Linux), even by SIGKILL."""
  if _PRCTL is not None:
    _PRCTL(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _pump(stream, log_path: str, header: str, echo_prefix: str | None) -> None:
  """Appends a process's output to its log file (and stdout) line by line, as it comes."""
  with open(log_path, "a") as log:
    log.write(header)
    for line in iter(stream.readline, ""):
      log.write(line)
      log.flush()
      if echo_prefix is not None:
        sys.stdout.write(echo_prefix + line)
        sys.stdout.flush()
  stream.close()


def run(cfg: LocalLaunch, stop: threading.Event | None = None) -> int:
  """Starts the processes and waits for them.

  Args:
    cfg: what to run.
    stop: when set (e.g. by a SIGTERM handler), SIGTERM is forwarded to every process, and any
      still running after `cfg.grace_s` is killed.
  Returns:
    0 if every process exited with 0; else the first failing process's status (128 + signal
    number for a process killed by a signal; 124 on timeout).
  """
  logdir = cfg.logdir or default_logdir(cfg.command)
  os.makedirs(logdir, exist_ok=True)
  pids_path = os.path.join(logdir, PIDS_FILE)
  port = free_port()
  procs, logs, pumps = [], [], []
  started = time.strftime("%Y-%m-%d %H:%M:%S")
  try:
    for i in range(cfg.num_processes):
      logs.append(os.path.join(logdir, f"process_{i}.log"))
      proc = subprocess.Popen(this_python(list(cfg.command)), env=process_env(cfg, i, port),
                              encoding="utf-8", errors="replace",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, preexec_fn=_die_with_parent)
      procs.append(proc)
      header = (f"==== launch/local.py {started}: process {i} of {cfg.num_processes}, pid "
                f"{proc.pid}: {shlex.join(cfg.command)}\n")
      prefix = (f"[{i}] " if cfg.num_processes > 1 else "") if cfg.echo and i == 0 else None
      pumps.append(threading.Thread(target=_pump, args=(proc.stdout, logs[i], header, prefix),
                                    daemon=True))
      pumps[-1].start()
    jsonio.write_json_atomic(pids_path, {"launcher": os.getpid(),
                                         "processes": [p.pid for p in procs]})
    return _wait(cfg, procs, logs, pumps, stop or threading.Event())
  finally:
    for p in procs:  # every group, also of exited processes: their children may still run
      _signal_group(p, signal.SIGKILL)
      p.wait()
    for t in pumps:
      t.join(timeout=5)
    if os.path.exists(pids_path):  # the pids are stale now, and may be reused
      os.remove(pids_path)


def _wait(cfg, procs, logs, pumps, stop) -> int:
  start, deadline = time.monotonic(), None
  while True:
    codes = [p.poll() for p in procs]
    # Killed by a signal first: when a peer dies, the survivors' collectives may fail too.
    failed = sorted((i for i, c in enumerate(codes) if c not in (None, 0)),
                    key=lambda i: (codes[i] >= 0, i))
    if failed:
      i = failed[0]
      for p in procs:  # a failed peer leaves the others blocked in collectives: no grace
        _signal_group(p, signal.SIGKILL)  # (the failed one's group: children it left behind)
      pumps[i].join(timeout=5)
      _report(logs[i], i, codes[i], len(procs) - 1, stopped=stop.is_set())
      return _status(codes[i])
    if all(c == 0 for c in codes):
      return 0
    if stop.is_set() and deadline is None:
      print(f"launch/local.py: stopping: SIGTERM to {len(procs)} process(es), killing after "
            f"{cfg.grace_s:g} s", file=sys.stderr)
      for p in procs:
        _signal_group(p, signal.SIGTERM)
      deadline = time.monotonic() + cfg.grace_s
    if deadline is not None and time.monotonic() > deadline:
      return 128 + signal.SIGKILL  # the finally clause of run() kills them
    if cfg.timeout_s and time.monotonic() - start > cfg.timeout_s:
      print(f"launch/local.py: timed out after {cfg.timeout_s:g} s; killing every process "
            f"(logs in {os.path.dirname(logs[0])})", file=sys.stderr)
      return 124
    time.sleep(0.1)


def this_python(command: list[str]) -> list[str]:
  """`command` with a leading `python`/`python3` replaced by the interpreter running this launcher.

  Whatever `python` is first on PATH may be another environment (outside an activated venv it
  is the system's, and every run would fail to import absl); this launcher's interpreter has
  everything the launcher itself imported (absl, interp).
  """
  if command and command[0] in ("python", "python3"):
    return [sys.executable, *command[1:]]
  return command


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(proc.pid, sig)
  except ProcessLookupError:
    pass


def _status(code: int) -> int:
  return 128 - code if code < 0 else code


def how_it_ended(code: int) -> str:
  """A process's end in words.

  Args:
    code: a Popen return code (negative: killed by that signal).
  Returns:
    e.g. "exited with status 3" or "was killed by SIGKILL (status 137)".
  """
  if code >= 0:
    return f"exited with status {code}"
  try:
    name = signal.Signals(-code).name
  except ValueError:
    name = f"signal {-code}"
  return f"was killed by {name} (status {_status(code)})"


def _report(path: str, index: int, code: int, others: int, stopped: bool = False) -> None:
  """One line naming the process, how it ended and its log; then the tail of its latest run."""
  with open(path) as f:
    text = f.read()
  tail = text[max(text.rfind("==== launch/local.py "), 0):][-4000:]
  why = " after being told to stop" if stopped else ""
  killed = f"; killed the other {others} process(es) at once" if others else ""
  print(f"launch/local.py: process {index} {how_it_ended(code)}{why}{killed}; its log: {path}\n"
        f"--- the log ends:\n{tail}", file=sys.stderr)


def stop_on_signals() -> threading.Event:
  """An Event set by SIGTERM or SIGINT (call from the main thread of a launcher binary)."""
  stop = threading.Event()

  def handler(signum, frame):
    del frame
    if stop.is_set():  # a second Ctrl-C: do not wait for the grace period
      raise KeyboardInterrupt
    print(f"launch: got signal {signum}; stopping", file=sys.stderr)
    stop.set()

  signal.signal(signal.SIGTERM, handler)
  signal.signal(signal.SIGINT, handler)
  return stop


def main(argv):
  try:
    cfg = LocalLaunch(command=tuple(argv[1:]), num_processes=_NUM.value,
                      devices_per_process=_DEVICES.value, logdir=_LOGDIR.value,
                      timeout_s=_TIMEOUT.value, grace_s=_GRACE.value, echo=_ECHO.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if DRY_RUN.value:
    sys.stdout.write(dry_run_text(cfg))
    return
  sys.exit(run(cfg, stop_on_signals()))


if __name__ == "__main__":
  usage.run(main)
