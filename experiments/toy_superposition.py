"""Toy models of superposition (Elhage et al., 2022): one figure family per run.

  python experiments/toy_superposition.py --family=intro --workdir=runs/toy_intro
  python experiments/toy_superposition.py --family=basic --workdir=runs/toy_basic
  python experiments/toy_superposition.py --family=phase --workdir=runs/toy_phase --seeds=8
  python experiments/toy_superposition.py --family=geometry --workdir=runs/toy_geometry \
      --n_features=400 --n_hidden=30 --num_steps=20000
  python experiments/toy_superposition.py --family=phase --grid=64 --mesh=data:-1 ...  # a pod

Every instance of the family's sweep trains in one compiled program, sharded over the mesh's
`data` axis. On CPU the binary exposes one host device per core (--cpu_devices), so the
instances split over the cores. The run folder gets the figures (*.png), results.json and the
train loop's records (`interp.toy.train`); re-running with the same --workdir resumes.
Flags left at 0 keep the family's defaults (`interp.toy.<family>.DEFAULTS`).

No --precision: the toys train and are measured in float32 on every backend. Their products
are [batch, n] x [n, n] or [n, m] with m = 1 to 30 hidden units, too narrow for bfloat16 matrix
units to pay (a step is bound by launch and memory traffic, not arithmetic). And the figures
measure fine geometry (which features are represented, their interference, dimensionalities
such as 1/2 or 2/5, phase boundaries), decided by the loss terms of features with importance
down to 0.7^19 = 0.001 beside order-1 ones: bfloat16 rounds each product to 8 significant bits
(2^-9 = 0.002 relative), the size of the terms that decide, so it would move the measurements
it is meant to speed up.
"""

from __future__ import annotations

import os

from absl import app, flags

from interp import config_flags
from interp import usage
from interp.toy import experiment

_CONFIG = config_flags.define(experiment.ToyExperimentConfig, meta={
    "family": {"required": True}, "workdir": {"required": True}})
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", len(os.sched_getaffinity(0)),
                                    "Host devices to expose on CPU (XLA's "
                                    "--xla_force_host_platform_device_count; 0 = leave as is).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  flags_now = os.environ.get("XLA_FLAGS", "")
  if _CPU_DEVICES.value and "xla_force_host_platform_device_count" not in flags_now:
    # Read when the CPU backend starts, which has not happened yet.
    os.environ["XLA_FLAGS"] = (f"{flags_now} --xla_force_host_platform_device_count="
                               f"{_CPU_DEVICES.value}").strip()
  from interp.train import cli
  cli.start(argv)
  results = experiment.run_family(_CONFIG.build())
  print(f"{results['status']} at step {results['step']}: {results.get('figures', [])}")


if __name__ == "__main__":
  usage.run(main)
