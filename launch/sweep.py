r"""Expand a sweep into runs, run them (skipping finished ones), and gather their results.

  python launch/sweep.py --sweep_dir=runs/sweeps/lr --grid=lr=1e-3,3e-3 --grid=seed=0,1 \
      --parallel=2 -- python experiments/train_lm.py --num_steps=100
  python launch/sweep.py --sweep_dir=runs/sweeps/lr --sweep_file=experiments/sweeps/train_lm_lr.py
  python launch/sweep.py --sweep_dir=runs/sweeps/lr --gather_only --plot_metric=final.accuracy

A sweep is data (`launch.hyper`): --grid / --zip flags or a --sweep_file with get_hyper(h). Every
run gets its own folder <sweep_dir>/<name from its overrides>/ (passed as --workdir) and the
command `<command> --workdir=<that folder> --flag=value ...`. A run whose results.json says
"completed" is skipped, so re-running the same sweep after an interruption only runs what is
left (and an interrupted run resumes from its checkpoint). Then every results.json is gathered
into <sweep_dir>/results.csv and <sweep_dir>/summary.png (`launch.gather`).

Where runs go (--launcher):
  local    here, --parallel at a time, each as --num_processes processes with
           --devices_per_process simulated CPU devices (`launch.local`); logs in <run>/logs/
  slurm    one sbatch job per run (`launch.slurm`, with its flags: --nodes, --partition, ...);
           gather later with --gather_only
  tpu_pod  one after another on the pod (`launch.tpu_pod`, with its flags: --tpu, --zone, ...);
           the project is installed once, before the first run
The sweep itself is written to <sweep_dir>/sweep.json, so --gather_only needs no sweep flags.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import json
import os
import shlex
import sys
import threading
import time

from absl import app, flags

if __package__ in (None, ""):  # run as a script: make `launch` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
from interp import jsonio  # noqa: E402
from interp import usage  # noqa: E402
from launch import gather as gather_lib  # noqa: E402
from launch import hyper  # noqa: E402
from launch import local  # noqa: E402
from launch import slurm  # noqa: E402
from launch import tpu_pod  # noqa: E402


class Launcher(str, enum.Enum):
  LOCAL = "local"
  SLURM = "slurm"
  TPU_POD = "tpu_pod"


_DIR = flags.DEFINE_string("sweep_dir", None, "Folder of the sweep: one subfolder per run, plus "
                           "sweep.json, results.csv and summary.png.")
_GRID = flags.DEFINE_multi_string("grid", [], "FLAG=V1,V2,... (repeat: the product of all).")
_ZIP = flags.DEFINE_multi_string("zip", [], "FLAG=V1,V2,... (repeat: zipped together, then "
                                 "producted with --grid).")
_FILE = flags.DEFINE_string("sweep_file", "", "A Python file with get_hyper(h) (and optionally "
                            "COMMAND); see launch/hyper.py.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Local runs at a time.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", [l.value for l in Launcher],
                              "Where the runs go.")
_METRIC = flags.DEFINE_string("plot_metric", "final.loss", "results.csv column to plot.")
_GROUP = flags.DEFINE_list("plot_group", [], "With a results column as --plot_x (e.g. an "
                          "L0-FVU frontier): swept flags that split the runs into lines.")
_X = flags.DEFINE_string("plot_x", "", "Swept flag on the x axis (default: the first that "
                         "varies).")
_GATHER_ONLY = flags.DEFINE_bool("gather_only", False, "Only gather the runs' results.")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """Attributes:
    sweep_dir: the sweep's folder.
    command: the binary and its fixed flags (no --workdir: each run gets its own).
    runs: the flag overrides of each run, in order.
    parallel: local runs at a time.
    launcher: where runs go.
    num_processes, devices_per_process, timeout_s, echo: per local run (`launch.local`).
    plot_metric, plot_x, plot_group: what summary.png shows.
  """

  sweep_dir: str
  command: tuple[str, ...]
  runs: tuple[tuple[tuple[str, str], ...], ...]
  parallel: int = 1
  launcher: Launcher = Launcher.LOCAL
  num_processes: int = 1
  devices_per_process: int = 0
  timeout_s: float = 0
  echo: bool = False
  plot_metric: str = "final.loss"
  plot_x: str = ""
  plot_group: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "launcher", Launcher(self.launcher))
    if not self.command:
      raise ValueError("launch/sweep.py: give the command after `--` (or COMMAND in the "
                       "--sweep_file)")
    if local.workdir_of(self.command):
      raise ValueError(f"launch/sweep.py: the command sets --workdir "
                       f"({local.workdir_of(self.command)}); the sweep gives each run its own "
                       f"under --sweep_dir")
    if not self.runs:
      raise ValueError("launch/sweep.py: the sweep is empty; give --grid, --zip or --sweep_file")
    if self.parallel < 1:
      raise ValueError(f"--parallel={self.parallel} must be >= 1")
    hyper.check_unique(self.run_dicts)

  @property
  def run_dicts(self) -> list[hyper.Run]:
    return [dict(r) for r in self.runs]


def run_dir(cfg: SweepConfig, run: hyper.Run) -> str:
  return os.path.join(cfg.sweep_dir, hyper.name(run))


def run_command(cfg: SweepConfig, run: hyper.Run) -> list[str]:
  return [*cfg.command, f"--workdir={run_dir(cfg, run)}", *(f"--{k}={v}" for k, v in run.items())]


def finished(cfg: SweepConfig, run: hyper.Run) -> bool:
  """The run wrote results.json with status "completed" (remote workdirs always count as not
  finished: re-running a finished run only restores its last checkpoint and stops)."""
  results = gather_lib.read_results(run_dir(cfg, run))
  return results is not None and results.get("status") == "completed"


def write_manifest(cfg: SweepConfig) -> None:
  os.makedirs(cfg.sweep_dir, exist_ok=True)
  manifest = {"command": list(cfg.command),
              "runs": [{"name": hyper.name(r), "overrides": r} for r in cfg.run_dicts]}
  jsonio.write_json_atomic(os.path.join(cfg.sweep_dir, "sweep.json"), manifest)


def read_manifest(sweep_dir: str) -> tuple[list[str], list[hyper.Run]]:
  path = os.path.join(sweep_dir, "sweep.json")
  if not os.path.exists(path):
    raise ValueError(f"--sweep_dir={sweep_dir} has no sweep.json; run the sweep first, or give "
                     "its --grid/--zip/--sweep_file flags")
  with open(path) as f:
    manifest = json.load(f)
  return manifest["command"], [r["overrides"] for r in manifest["runs"]]


def run_local(cfg: SweepConfig, pending: list[hyper.Run], stop: threading.Event) -> list[str]:
  """Runs `pending` here, cfg.parallel at a time; returns the names of the failed runs."""
  failed, lock, done = [], threading.Lock(), [0]

  def one(run):
    if stop.is_set():
      return
    launch = local.LocalLaunch(
        command=tuple(run_command(cfg, run)), num_processes=cfg.num_processes,
        devices_per_process=cfg.devices_per_process, logdir=os.path.join(run_dir(cfg, run),
                                                                         "logs"),
        timeout_s=cfg.timeout_s, echo=cfg.echo and cfg.parallel == 1)
    start = time.monotonic()
    status = local.run(launch, stop)
    with lock:
      done[0] += 1
      ok = status == 0 and finished(cfg, run)
      what = "completed" if ok else (f"FAILED (status {status}; log in {launch.logdir})" if status
                                     else "stopped before completing")
      print(f"sweep: [{done[0]}/{len(pending)}] {hyper.name(run)}: {what} in "
            f"{time.monotonic() - start:.1f} s", flush=True)
      if not ok:
        failed.append(hyper.name(run))

  with concurrent.futures.ThreadPoolExecutor(cfg.parallel) as pool:
    for future in [pool.submit(one, run) for run in pending]:
      future.result()
  return failed


def run_slurm(cfg: SweepConfig, pending: list[hyper.Run], argv0: str) -> None:
  base = slurm.config_from_flags([argv0, *cfg.command])
  for run in pending:
    job = dataclasses.replace(base, command=tuple(run_command(cfg, run)),
                              job_name=f"{base.name}-{hyper.name(run)}")
    if local.DRY_RUN.value:
      sys.stdout.write(slurm.dry_run_text(job))
    else:
      slurm.submit(job)


def run_pod(cfg: SweepConfig, pending: list[hyper.Run], argv0: str) -> list[str]:
  base = tpu_pod.config_from_flags([argv0, *cfg.command])
  failed = []
  for i, run in enumerate(pending):
    job = dataclasses.replace(base, command=tuple(run_command(cfg, run)),
                              install=base.install and i == 0,
                              delete_after=base.delete_after and i == len(pending) - 1)
    if i:
      job = dataclasses.replace(job, create=tpu_pod.Create.NONE)
    if local.DRY_RUN.value:
      sys.stdout.write(tpu_pod.dry_run_text(job))
    elif tpu_pod.run(job):
      failed.append(hyper.name(run))
  return failed


def execute(cfg: SweepConfig, stop: threading.Event | None = None, argv0: str = "sweep") -> int:
  """Runs the unfinished runs of the sweep where cfg.launcher says, then gathers (local only).

  Returns:
    0, or 1 if any run failed.
  """
  stop = stop or threading.Event()
  runs = cfg.run_dicts
  pending = [r for r in runs if not finished(cfg, r)]
  print(f"sweep: {len(runs)} runs in {cfg.sweep_dir}; {len(runs) - len(pending)} finished "
        f"already (skipped); {len(pending)} to run on {cfg.launcher.value}"
        + (f", {cfg.parallel} at a time" if cfg.launcher == Launcher.LOCAL else ""), flush=True)
  if local.DRY_RUN.value and cfg.launcher == Launcher.LOCAL:
    for run in pending:
      print(shlex.join(run_command(cfg, run)))
    return 0
  if not local.DRY_RUN.value:
    write_manifest(cfg)
  failed = []
  if cfg.launcher == Launcher.LOCAL:
    failed = run_local(cfg, pending, stop)
  elif cfg.launcher == Launcher.SLURM:
    run_slurm(cfg, pending, argv0)
    print("sweep: submitted; when the jobs are done, run this again with --gather_only")
    return 0
  else:
    failed = run_pod(cfg, pending, argv0)
  if local.DRY_RUN.value:
    return 0
  report(cfg.sweep_dir, runs, cfg.plot_metric, cfg.plot_x, list(cfg.plot_group))
  if failed:
    print(f"sweep: {len(failed)} run(s) did not complete: {', '.join(failed)}; run the same "
          "command again to retry them (finished runs are skipped)", file=sys.stderr)
  return 1 if failed else 0


def report(sweep_dir: str, runs: list[hyper.Run], metric: str, x: str,
           group: list[str] | None = None) -> None:
  csv_path, png_path = gather_lib.gather(sweep_dir, runs, metric, x, group)
  print(f"sweep: wrote {csv_path}" + (f" and {png_path}" if png_path else
                                      f" (no run has {metric!r} yet: no plot)"))


def config_from_flags(argv) -> SweepConfig:
  try:
    command = list(argv[1:])
    runs = hyper.from_flags(_GRID.value, _ZIP.value) if (_GRID.value or _ZIP.value) else []
    if _FILE.value:
      file_runs, file_command = hyper.load_file(_FILE.value)
      runs = hyper.product([file_runs, runs]) if runs else file_runs
      command = command or file_command or []
    return SweepConfig(
        sweep_dir=_DIR.value, command=tuple(command),
        runs=tuple(tuple(r.items()) for r in runs), parallel=_PARALLEL.value,
        launcher=_LAUNCHER.value, num_processes=flags.FLAGS.num_processes,
        devices_per_process=flags.FLAGS.devices_per_process, timeout_s=flags.FLAGS.timeout_s,
        echo=flags.FLAGS.echo, plot_metric=_METRIC.value, plot_x=_X.value,
        plot_group=tuple(_GROUP.value))
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  if not _DIR.value:
    raise app.UsageError("--sweep_dir is required")
  if _GATHER_ONLY.value:
    _, runs = read_manifest(_DIR.value)
    report(_DIR.value, runs, _METRIC.value, _X.value, _GROUP.value)
    return
  sys.exit(execute(config_from_flags(argv), local.stop_on_signals(), argv[0]))


if __name__ == "__main__":
  # A sweep's runs are one process each with the environment's devices unless told otherwise.
  flags.FLAGS.set_default("num_processes", 1)
  flags.FLAGS.set_default("devices_per_process", 0)
  flags.FLAGS.set_default("echo", False)
  usage.run(main)
