"""How many latents dictionaries trained from different seeds share, by width and architecture.

  python experiments/sae_seed_stability.py --workdir=runs/sae_seeds
  python experiments/sae_seed_stability.py --workdir=runs/sae_seeds_quick --widths=128 \
      --architectures=topk --seeds=2 --num_steps=200

Trains --seeds dictionaries per (architecture, width) on planted features (`interp.sae.matching`),
each in <workdir>/<arch>_w<width>/seed<k>/ (a rerun resumes), matches every pair of seeds with
the Hungarian assignment on decoder and on encoder cosine, and writes results.json and
seed_stability.png (fraction shared vs width, a line per architecture and threshold).
--precision (default auto: float32 on CPU, bfloat16 on GPU/TPU) is every training's
`train_sae --precision`: the encoder and decoder products in the compute dtype, the dictionary
state and metrics float32.
"""

from __future__ import annotations


from interp import config_flags
from interp import usage
from interp.sae import matching
from interp.train import cli

_CONFIG = config_flags.define(matching.SeedStabilityConfig, meta={"workdir": {"required": True}})


def main(argv):
  cli.start(argv)
  results = matching.run_seed_stability(_CONFIG.build())
  print(matching.summary_table(results))


if __name__ == "__main__":
  usage.run(main)
