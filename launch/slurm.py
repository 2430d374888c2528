r"""Run any experiments/ binary on a SLURM cluster: write an sbatch script and submit it.

  python launch/slurm.py --nodes=2 --gpus_per_node=8 --partition=gpu --time=04:00:00 \
      --setup='source .venv/bin/activate' --dry_run -- \
      python experiments/train_lm.py --workdir=runs/lm --mesh=data:-1,model:8

One srun task per GPU (--tasks=per_gpu, the default) or per node (--tasks=per_node). The script
exports INTERP_DISTRIBUTED=auto, so `interp.parallel.mesh.maybe_initialize_distributed` calls
`jax.distributed.initialize()`, which reads SLURM's environment (SLURM_JOB_ID, SLURM_NTASKS,
SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NODELIST): the coordinator is the first node, and in
per-GPU mode each task takes GPU $SLURM_LOCALID. In per-node mode JAX would also pick only GPU
$SLURM_LOCALID (= 0), so the script sets JAX_LOCAL_DEVICE_IDS to every GPU of the node.

Logs go to <workdir>/logs/ (process_<task>.log per task, slurm-<job>.out for the script itself),
so they sit in the run folder. SLURM sends SIGTERM --signal_secs before the time limit; train_lm
then saves a checkpoint and exits cleanly, and with --requeue the job comes back and resumes.
The script is written to <workdir>/slurm/<job_name>.sbatch; --dry_run prints it and the sbatch
command instead, and submits nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import shlex
import subprocess
import sys

from absl import app, flags

if __package__ in (None, ""):  # run as a script: make `launch` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from interp import usage  # noqa: E402  pylint: disable=g-import-not-at-top
from launch import local  # noqa: E402  pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tasks(str, enum.Enum):
  PER_GPU = "per_gpu"
  PER_NODE = "per_node"


_JOB = flags.DEFINE_string("job_name", "", "Job name (default: the binary's name).")
_NODES = flags.DEFINE_integer("nodes", 1, "Nodes.")
_GPUS = flags.DEFINE_integer("gpus_per_node", 8, "GPUs per node (0: a CPU-only job).")
_TASKS = flags.DEFINE_enum("tasks", "per_gpu", [t.value for t in Tasks],
                           "One process per GPU or per node.")
_CPUS = flags.DEFINE_integer("cpus_per_task", 0, "CPUs per task (0: SLURM's default).")
_PARTITION = flags.DEFINE_string("partition", "", "Partition (-p).")
_ACCOUNT = flags.DEFINE_string("account", "", "Account (-A).")
_TIME = flags.DEFINE_string("time", "", "Time limit, e.g. 04:00:00 (default: the partition's).")
_SIGNAL = flags.DEFINE_integer("signal_secs", 120, "SIGTERM the tasks this long before the time "
                               "limit, so they save a checkpoint (0: off).")
_REQUEUE = flags.DEFINE_bool("requeue", False, "Let SLURM requeue the job after a preemption.")
_SETUP = flags.DEFINE_multi_string("setup", [], "Shell lines run before srun, e.g. "
                                   "'module load cuda' or 'source .venv/bin/activate'.")
_SBATCH = flags.DEFINE_multi_string("sbatch", [], "More #SBATCH options, e.g. --sbatch=--mem=0.")
_REPO = flags.DEFINE_string("repo_dir", ROOT, "The project folder on the cluster's shared "
                            "filesystem (the job cds there).")


@dataclasses.dataclass(frozen=True)
class SlurmLaunch:
  """Attributes: see the flags of the same names; `command` is the binary and its flags."""

  command: tuple[str, ...]
  job_name: str = ""
  nodes: int = 1
  gpus_per_node: int = 8
  tasks: Tasks = Tasks.PER_GPU
  cpus_per_task: int = 0
  partition: str = ""
  account: str = ""
  time: str = ""
  signal_secs: int = 120
  requeue: bool = False
  setup: tuple[str, ...] = ()
  sbatch: tuple[str, ...] = ()
  repo_dir: str = ROOT

  def __post_init__(self):
    object.__setattr__(self, "tasks", Tasks(self.tasks))
    if not self.command:
      raise ValueError("launch/slurm.py: give the command to run after `--`, e.g. `-- python "
                       "experiments/train_lm.py --workdir=runs/lm`")
    if self.nodes < 1 or self.gpus_per_node < 0:
      raise ValueError(f"--nodes={self.nodes} must be >= 1 and --gpus_per_node="
                       f"{self.gpus_per_node} >= 0")
    for option in self.sbatch:
      if not option.startswith("--"):
        raise ValueError(f"--sbatch={option!r}: give a long sbatch option, e.g. --sbatch=--mem=0")

  @property
  def name(self) -> str:
    if self.job_name:
      return self.job_name
    script = next((a for a in self.command if a.endswith(".py")), self.command[0])
    return os.path.splitext(os.path.basename(script))[0]

  @property
  def workdir(self) -> str:
    """The run folder as seen from the job (relative paths are under repo_dir)."""
    workdir = local.workdir_of(self.command) or os.path.join("runs", "slurm", self.name)
    return os.path.join(self.repo_dir, workdir)

  @property
  def tasks_per_node(self) -> int:
    return self.gpus_per_node if self.tasks == Tasks.PER_GPU and self.gpus_per_node else 1


def script(cfg: SlurmLaunch) -> str:
  """The sbatch script."""
  logs = os.path.join(cfg.workdir, "logs")
  options = [f"--job-name={cfg.name}", f"--nodes={cfg.nodes}",
             f"--ntasks-per-node={cfg.tasks_per_node}"]
  if cfg.gpus_per_node:
    options.append(f"--gpus-per-node={cfg.gpus_per_node}")
  if cfg.cpus_per_task:
    options.append(f"--cpus-per-task={cfg.cpus_per_task}")
  for flag, value in (("partition", cfg.partition), ("account", cfg.account),
                      ("time", cfg.time)):
    if value:
      options.append(f"--{flag}={value}")
  options += [f"--chdir={cfg.repo_dir}", f"--output={logs}/slurm-%j.out", "--open-mode=append"]
  if cfg.signal_secs:
    options.append(f"--signal=TERM@{cfg.signal_secs}")
  if cfg.requeue:
    options.append("--requeue")
  options += list(cfg.sbatch)
  lines = ["#!/bin/bash",
           "# Written by launch/slurm.py. Re-submitting it resumes the run from its checkpoint."]
  lines += [f"#SBATCH {o}" for o in options]
  lines += ["", "set -euo pipefail", *cfg.setup,
            "# jax.distributed.initialize() finds the coordinator and this task's rank in SLURM_*",
            "export INTERP_DISTRIBUTED=auto"]
  if cfg.tasks == Tasks.PER_NODE and cfg.gpus_per_node > 1:
    ids = ",".join(str(i) for i in range(cfg.gpus_per_node))
    lines.append(f"export JAX_LOCAL_DEVICE_IDS={ids}  # every GPU of the node, not just GPU 0")
  srun = ["srun", "--kill-on-bad-exit=1", f"--output={logs}/process_%t.log", *cfg.command]
  lines += [shlex.join(srun), ""]
  return "\n".join(lines)


def script_path(cfg: SlurmLaunch) -> str:
  return os.path.join(cfg.workdir, "slurm", f"{cfg.name}.sbatch")


def submit_commands(cfg: SlurmLaunch) -> list[list[str]]:
  """What submission runs, once the script is written: the log folder must exist before the
  job starts, or SLURM cannot open its output file."""
  return [["mkdir", "-p", os.path.join(cfg.workdir, "logs")],
          ["sbatch", "--parsable", script_path(cfg)]]


def dry_run_text(cfg: SlurmLaunch) -> str:
  commands = "\n".join(shlex.join(c) for c in submit_commands(cfg))
  return f"# {script_path(cfg)}\n{script(cfg)}# submit with:\n{commands}\n"


def submit(cfg: SlurmLaunch) -> str:
  """Writes the script and submits it; returns the job id."""
  path = script_path(cfg)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(script(cfg))
  mkdir, sbatch = submit_commands(cfg)
  os.makedirs(mkdir[-1], exist_ok=True)
  out = subprocess.run(sbatch, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"sbatch {path} failed with status {out.returncode}: {out.stderr.strip()}")
  job = re.split(r"[;\s]", out.stdout.strip())[0]
  print(f"launch/slurm.py: submitted job {job} ({path}); logs in "
        f"{os.path.join(cfg.workdir, 'logs')}", file=sys.stderr)
  return job


def config_from_flags(argv) -> SlurmLaunch:
  try:
    return SlurmLaunch(command=tuple(argv[1:]), job_name=_JOB.value, nodes=_NODES.value,
                       gpus_per_node=_GPUS.value, tasks=_TASKS.value,
                       cpus_per_task=_CPUS.value, partition=_PARTITION.value,
                       account=_ACCOUNT.value, time=_TIME.value, signal_secs=_SIGNAL.value,
                       requeue=_REQUEUE.value, setup=tuple(_SETUP.value),
                       sbatch=tuple(_SBATCH.value), repo_dir=_REPO.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  cfg = config_from_flags(argv)
  if local.DRY_RUN.value:
    sys.stdout.write(dry_run_text(cfg))
    return
  submit(cfg)


if __name__ == "__main__":
  usage.run(main)
