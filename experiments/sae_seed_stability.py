"""How many latents dictionaries trained from different seeds share, by width and architecture.

  python experiments/sae_seed_stability.py --workdir=runs/sae_seeds
  python experiments/sae_seed_stability.py --workdir=runs/sae_seeds_quick --widths=128 \
      --architectures=topk --seeds=2 --num_steps=200

Trains --seeds dictionaries per (architecture, width) on planted features (`interp.sae.matching`),
each in <workdir>/<arch>_w<width>/seed<k>/ (a rerun resumes), matches every pair of seeds with
the Hungarian assignment on decoder and on encoder cosine, and writes results.json and
seed_stability.png (fraction shared vs width, a line per architecture and threshold).
"""

from __future__ import annotations

from absl import app, flags

from interp.train import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder; rerun with the same one to resume.",
                               required=True)
_WIDTHS = flags.DEFINE_list("widths", ["128", "256", "512"], "Dictionary widths (d_sae).")
_ARCHS = flags.DEFINE_list("architectures", ["relu", "topk"], "Activation rules: relu, topk.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Dictionaries per (architecture, width).")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0.7", "0.9"], "Cosine thresholds.")
_SOURCE = flags.DEFINE_enum("source", "planted", ["planted", "model"],
                            "Activations: planted features (model activations: not yet).")
_D = flags.DEFINE_integer("d", 64, "Planted features: input width.")
_N_FEATURES = flags.DEFINE_integer("n_features", 256, "Planted features: how many.")
_DENSITY = flags.DEFINE_float("density", 1 / 64, "Planted features: probability each is on.")
_FEATURES_SEED = flags.DEFINE_integer("features_seed", 1234, "Planted directions' seed (must "
                                      "differ from the init seeds 0..seeds-1).")
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Activation stream (shared by all seeds).")
_BATCH = flags.DEFINE_integer("batch_size", 1024, "Activations per step.")
_STEPS = flags.DEFINE_integer("num_steps", 2000, "Training steps per dictionary.")
_LR = flags.DEFINE_float("lr", 3e-3, "Adam learning rate (50 warmup steps).")
_K = flags.DEFINE_integer("k", 4, "TopK: latents per token.")
_L1 = flags.DEFINE_float("l1_coeff", 2.0, "ReLU: L1 weight.")
_MESH = flags.DEFINE_string("mesh", "data:-1,model:1", "Mesh for training.")


def config_from_flags():
  """The flags as a frozen SeedStabilityConfig (library code never reads FLAGS)."""
  from interp.sae import matching
  try:
    return matching.SeedStabilityConfig(
        workdir=_WORKDIR.value, widths=tuple(int(w) for w in _WIDTHS.value),
        architectures=tuple(_ARCHS.value), seeds=_SEEDS.value,
        thresholds=tuple(float(t) for t in _THRESHOLDS.value), source=_SOURCE.value, d=_D.value,
        n_features=_N_FEATURES.value, density=_DENSITY.value,
        features_seed=_FEATURES_SEED.value, data_seed=_DATA_SEED.value,
        batch_size=_BATCH.value, num_steps=_STEPS.value, lr=_LR.value, k=_K.value,
        l1_coeff=_L1.value, mesh=_MESH.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  cli.start(argv)
  from interp.sae import matching
  config = config_from_flags()
  results = matching.run_seed_stability(config)
  print(matching.summary_table(results))


if __name__ == "__main__":
  app.run(main)
