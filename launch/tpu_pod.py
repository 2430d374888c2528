r"""Run any experiments/ binary on every worker of a Cloud TPU VM pod slice, via gcloud.

  python launch/tpu_pod.py --tpu=my-v5p --zone=us-east5-a --dry_run -- \
      python experiments/train_lm.py --workdir=/mnt/gcs/runs/lm --mesh=data:-1,model:4

  # a queued resource (created, waited for, used, deleted):
  python launch/tpu_pod.py --tpu=my-v5p --zone=us-east5-a --create=queued_resource \
      --accelerator_type=v5p-64 --spot --delete_after -- python experiments/train_lm.py ...

The steps, each one shell command, printed exactly by --dry_run and otherwise run in order
(stopping at the first that fails):
  create   (optional) a TPU VM, or a queued resource and a wait until it is ACTIVE
  pack     the project's files (what git tracks or does not ignore) into a tarball here
  copy     `gcloud compute tpus tpu-vm scp` of the tarball to every worker
  install  unpack into ~/interp, make a venv, install requirements.txt with jax[tpu]
  run      `gcloud compute tpus tpu-vm ssh --worker=all` starts the binary on every worker at
           once, with the same flags; INTERP_DISTRIBUTED=auto makes
           `interp.parallel.mesh.maybe_initialize_distributed` call `jax.distributed.initialize()`,
           which finds the other workers from the TPU metadata
  delete   (optional, --delete_after) the TPU VM or queued resource

Every worker writes its own checkpoint shards into the same --workdir, so on a pod it must be a
path every worker sees: a bucket mounted with gcsfuse at the same place on each worker, or a
Filestore/NFS share (`interp.train.lm` uses local paths; gs:// URLs are not supported yet). Only
worker 0 writes metrics and run metadata. `python` at the start of the command means the
workers' venv.
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


class Create(str, enum.Enum):
  NONE = "none"
  TPU_VM = "tpu_vm"
  QUEUED_RESOURCE = "queued_resource"


_TPU = flags.DEFINE_string("tpu", None, "TPU VM (node) name.")
_ZONE = flags.DEFINE_string("zone", None, "Zone, e.g. us-east5-a.")
_PROJECT = flags.DEFINE_string("project", "", "GCP project (default: gcloud's configured one).")
_CREATE = flags.DEFINE_enum("create", "none", [c.value for c in Create],
                            "Create the TPU first: none (it exists) | tpu_vm | queued_resource.")
_ACCEL = flags.DEFINE_string("accelerator_type", "v5p-8", "With --create: e.g. v5p-64, v4-32.")
_RUNTIME = flags.DEFINE_string("runtime_version", "v2-alpha-tpuv5", "With --create: TPU VM image.")
_SPOT = flags.DEFINE_bool("spot", False, "With --create: spot (preemptible) capacity.")
_DELETE = flags.DEFINE_bool("delete_after", False, "Delete the TPU (or queued resource) after "
                            "the run, whether or not it succeeded.")
_INSTALL = flags.DEFINE_bool("install", True, "Pack, copy and install the project first "
                             "(--noinstall: the workers already have it).")
_SOURCE = flags.DEFINE_string("source_dir", ROOT, "The project folder to ship.")
_ARCHIVE = flags.DEFINE_string("archive", "/tmp/interp_src.tgz", "Local path of the tarball.")
_REMOTE = flags.DEFINE_string("remote_dir", "interp", "Project folder on each worker, relative "
                              "to the home directory.")
_JAX = flags.DEFINE_string("jax_spec", "", "What to pip-install for JAX on the workers (default: "
                           "jax[tpu] at requirements.txt's jax version).")


@dataclasses.dataclass(frozen=True)
class PodLaunch:
  """Attributes: see the flags of the same names; `command` is the binary and its flags."""

  command: tuple[str, ...]
  tpu: str
  zone: str
  project: str = ""
  create: Create = Create.NONE
  accelerator_type: str = "v5p-8"
  runtime_version: str = "v2-alpha-tpuv5"
  spot: bool = False
  delete_after: bool = False
  install: bool = True
  source_dir: str = ROOT
  archive: str = "/tmp/interp_src.tgz"
  remote_dir: str = "interp"
  jax_spec: str = ""

  def __post_init__(self):
    object.__setattr__(self, "create", Create(self.create))
    if not self.command:
      raise ValueError("launch/tpu_pod.py: give the command to run after `--`, e.g. `-- python "
                       "experiments/train_lm.py --workdir=/mnt/gcs/runs/lm`")
    if not self.tpu or not self.zone:
      raise ValueError(f"launch/tpu_pod.py: --tpu ({self.tpu!r}) and --zone ({self.zone!r}) "
                       "are required")
    if self.remote_dir.startswith(("/", "~")) or ".." in self.remote_dir.split("/"):
      raise ValueError(f"--remote_dir={self.remote_dir!r} must be a folder under the workers' "
                       "home directory, e.g. 'interp'")


def jax_spec(cfg: PodLaunch) -> str:
  """`jax[tpu]==<version pinned in requirements.txt>` unless --jax_spec says otherwise."""
  if cfg.jax_spec:
    return cfg.jax_spec
  try:
    with open(os.path.join(cfg.source_dir, "requirements.txt")) as f:
      pins = re.findall(r"^jax==(\S+)", f.read(), re.M)
  except OSError:
    pins = []
  return f"jax[tpu]=={pins[0]}" if pins else "jax[tpu]"


def _where(cfg: PodLaunch) -> list[str]:
  return [f"--zone={cfg.zone}"] + ([f"--project={cfg.project}"] if cfg.project else [])


def _remote_command(cfg: PodLaunch) -> str:
  """The command each worker runs: in the project folder, in its venv, distributed=auto."""
  command = list(cfg.command)
  if command[0] in ("python", "python3"):
    command[0] = ".venv/bin/python"
  return f"cd ~/{cfg.remote_dir} && INTERP_DISTRIBUTED=auto {shlex.join(command)}"


def commands(cfg: PodLaunch) -> list[tuple[str, str]]:
  """The (step name, shell command) pairs, in order."""
  ssh = shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "ssh", cfg.tpu, "--worker=all",
                    *_where(cfg)])
  spot = ["--spot"] if cfg.spot else []
  steps = []
  if cfg.create == Create.QUEUED_RESOURCE:
    steps.append(("create", shlex.join([
        "gcloud", "compute", "tpus", "queued-resources", "create", cfg.tpu,
        f"--node-id={cfg.tpu}", f"--accelerator-type={cfg.accelerator_type}",
        f"--runtime-version={cfg.runtime_version}", *_where(cfg), *spot])))
    state = shlex.join(["gcloud", "compute", "tpus", "queued-resources", "describe", cfg.tpu,
                        *_where(cfg), "--format=value(state.state)"])
    steps.append(("wait", f'while s=$({state}); do echo "{cfg.tpu}: $s"; case "$s" in '
                          f'ACTIVE) break;; FAILED|SUSPENDED) exit 1;; esac; sleep 30; done'))
  elif cfg.create == Create.TPU_VM:
    steps.append(("create", shlex.join([
        "gcloud", "compute", "tpus", "tpu-vm", "create", cfg.tpu,
        f"--accelerator-type={cfg.accelerator_type}", f"--version={cfg.runtime_version}",
        *_where(cfg), *spot])))
  if cfg.install:
    src, archive = shlex.quote(cfg.source_dir), shlex.quote(cfg.archive)
    steps.append(("pack", f"git -C {src} ls-files -z --cached --others --exclude-standard | "
                          f"tar -czf {archive} -C {src} --null -T -"))
    steps.append(("copy", shlex.join([
        "gcloud", "compute", "tpus", "tpu-vm", "scp", cfg.archive,
        f"{cfg.tpu}:{cfg.remote_dir}.tgz", "--worker=all", *_where(cfg)])))
    install = (f"set -e; mkdir -p ~/{cfg.remote_dir} && tar -xzf ~/{cfg.remote_dir}.tgz -C "
               f"~/{cfg.remote_dir} && cd ~/{cfg.remote_dir} && python3 -m venv .venv && "
               f'.venv/bin/pip install -q -r requirements.txt "{jax_spec(cfg)}" && '
               f".venv/bin/pip install -q --no-deps -e .")
    steps.append(("install", f"{ssh} --command={shlex.quote(install)}"))
  steps.append(("run", f"{ssh} --command={shlex.quote(_remote_command(cfg))}"))
  if cfg.delete_after and cfg.create == Create.QUEUED_RESOURCE:
    steps.append(("delete", shlex.join([
        "gcloud", "compute", "tpus", "queued-resources", "delete", cfg.tpu, *_where(cfg),
        "--force", "--quiet"])))
  elif cfg.delete_after:
    steps.append(("delete", shlex.join([
        "gcloud", "compute", "tpus", "tpu-vm", "delete", cfg.tpu, *_where(cfg), "--quiet"])))
  return steps


def dry_run_text(cfg: PodLaunch) -> str:
  lines = [f"# launch/tpu_pod.py --dry_run: run in this order for TPU {cfg.tpu} in {cfg.zone}"]
  for name, command in commands(cfg):
    lines += [f"# {name}", command]
  return "\n".join(lines) + "\n"


def run(cfg: PodLaunch, skip: tuple[str, ...] = ()) -> int:
  """Runs the steps in order (except those named in `skip`); returns the first non-zero status.

  A --delete_after step runs even when an earlier step failed.
  """
  status = 0
  for name, command in commands(cfg):
    if name in skip or (status and name != "delete"):
      continue
    print(f"launch/tpu_pod.py: {name}: {command}", file=sys.stderr, flush=True)
    code = subprocess.run(command, shell=True, executable="/bin/bash").returncode
    if code and not status:
      print(f"launch/tpu_pod.py: step {name!r} failed with status {code}", file=sys.stderr)
      status = code
  return status


def config_from_flags(argv) -> PodLaunch:
  try:
    return PodLaunch(command=tuple(argv[1:]), tpu=_TPU.value, zone=_ZONE.value,
                     project=_PROJECT.value, create=_CREATE.value, accelerator_type=_ACCEL.value,
                     runtime_version=_RUNTIME.value, spot=_SPOT.value,
                     delete_after=_DELETE.value, install=_INSTALL.value,
                     source_dir=_SOURCE.value, archive=_ARCHIVE.value, remote_dir=_REMOTE.value,
                     jax_spec=_JAX.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  cfg = config_from_flags(argv)
  if local.DRY_RUN.value:
    sys.stdout.write(dry_run_text(cfg))
    return
  sys.exit(run(cfg))


if __name__ == "__main__":
  usage.run(main)
