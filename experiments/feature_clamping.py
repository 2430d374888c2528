"""Feature clamping: steer a model with one SAE latent and measure the side effects.

  python experiments/train_sae.py --source=gemma3_270m --workdir=runs/sae_gemma ...
  python experiments/feature_clamping.py --sae_dir=runs/sae_gemma --workdir=runs/clamp

Finds the latent for a concept (largest mean activation on --concept sentences minus on
--neutral ones; or --latent), shows its top-activating corpus contexts, clamps it to
--multiples x its maximum activation at every position, and measures the dose-response of its
output tokens, the KL divergence on unrelated prompts and the held-out loss; then generates
from --prompts with and without the clamp. The SAE is spliced in with its reconstruction error
kept, so with no clamp the model's output is unchanged. Library: `interp.steering.experiment`.
`--precision` is the forwards' compute dtype (`interp.precision`): the default `auto` is float32
on CPU and bfloat16 on GPU/TPU; the SAE, logits, KL and losses are float32 either way.
"""

from __future__ import annotations


from interp import config_flags
from interp import usage
from interp.steering import experiment
from interp.train import cli

# Sentences hold commas, so the sentence lists are repeated flags rather than comma lists.
_CONFIG = config_flags.define(experiment.ClampConfig, meta={
    "workdir": {"required": True}, "sae_dir": {"required": True},
    "concept": {"multi": True}, "neutral": {"multi": True}, "prompts": {"multi": True}})


def main(argv):
  cli.start(argv)
  r = experiment.run(_CONFIG.build())
  print(f"latent {r['latent']} (max activation {r['max_activation']:.2f}); output tokens: "
        f"{r['output_tokens']}")
  for c in r["top_contexts"][:3]:
    print(f"  {c['activation']:.2f}: {c['before']}[[{c['token']}]]{c['after']}")
  dr = r["dose_response"]
  for m, p, kl, loss in zip(dr["multiples"], dr["target_prob"], dr["kl"], dr["loss"]):
    print(f"  x{m:g}: output-token mass {p:.4f}, KL {kl:.3f}, held-out loss {loss:.3f}")
  for m, g in r["generations"].items():
    print(f"x{m}: concept-word rate {g['concept_word_rate']:.3f}: {g['texts'][0]!r}")


if __name__ == "__main__":
  usage.run(main)
