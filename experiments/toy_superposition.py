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
"""

from __future__ import annotations

import os

from absl import app, flags

_FAMILY = flags.DEFINE_enum("family", None, ["intro", "basic", "phase", "geometry"],
                            "Which figure family.", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder; rerun with the same one to resume.",
                               required=True)
_STEPS = flags.DEFINE_integer("num_steps", 0, "Training steps (0 = family default).")
_LR = flags.DEFINE_float("lr", 0.0, "AdamW learning rate (0 = family default).")
_SEEDS = flags.DEFINE_integer("seeds", 0, "Models per sweep cell; the lowest-loss one is kept.")
_GRID = flags.DEFINE_integer("grid", 0, "Sweep points: densities (intro, geometry), sparsities "
                             "(basic) or points per phase-diagram axis (0 = default).")
_N_FEATURES = flags.DEFINE_integer("n_features", 0, "Geometry only: n (0 = 200).")
_N_HIDDEN = flags.DEFINE_integer("n_hidden", 0, "Geometry only: m (0 = 20).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Samples per instance per step (0 = default).")
_SEED = flags.DEFINE_integer("seed", 0, "Root of all randomness.")
_MESH = flags.DEFINE_string("mesh", "data:-1,model:1", "Mesh axis sizes; instances shard over data.")
_PRNG = flags.DEFINE_enum("prng", "threefry2x32", ["threefry2x32", "philox2x32", "philox4x32",
                                                 "threefry4x32", "rbg", "unsafe_rbg"],
                          "jax.random implementation for init and data.")
_BITS = flags.DEFINE_enum("bits", "32", ["32", "64"], "Random bits per feature sample: 32 = one "
                          "word gives mask and value, 64 = separate words.")
_SETS = flags.DEFINE_string("feature_sets", "independent",
                            "independent | correlated:SIZE[:N] | anticorrelated:SIZE[:N]")
_LOG_EVERY = flags.DEFINE_integer("log_every", 0, "Metrics cadence (0 = 20 rows per run).")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 2000, "Save every this many steps.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", len(os.sched_getaffinity(0)),
                                    "Host devices to expose on CPU (XLA's "
                                    "--xla_force_host_platform_device_count; 0 = leave as is).")
_QUICK = flags.DEFINE_bool("quick", False, "The family's tiny settings (smoke tests).")


def config_from_flags():
  """The flags as a frozen ToyExperimentConfig (library code never reads FLAGS)."""
  from interp.toy import data, experiment
  try:
    return experiment.ToyExperimentConfig(
        family=_FAMILY.value, workdir=_WORKDIR.value, num_steps=_STEPS.value, lr=_LR.value,
        seeds=_SEEDS.value, grid=_GRID.value, n_features=_N_FEATURES.value,
        n_hidden=_N_HIDDEN.value, batch_size=_BATCH.value, seed=_SEED.value, mesh=_MESH.value,
        data=data.DataConfig(prng=_PRNG.value, bits=_BITS.value, sets=_SETS.value),
        log_every=_LOG_EVERY.value, checkpoint_every=_CKPT_EVERY.value, quick=_QUICK.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


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
  from interp.toy import experiment
  results = experiment.run_family(config_from_flags())
  print(f"{results['status']} at step {results['step']}: {results.get('figures', [])}")


if __name__ == "__main__":
  app.run(main)
