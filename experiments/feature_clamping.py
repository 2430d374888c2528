"""Feature clamping: steer a model with one SAE latent and measure the side effects.

  python experiments/train_sae.py --source=gemma3_270m --workdir=runs/sae_gemma ...
  python experiments/feature_clamping.py --sae_dir=runs/sae_gemma --workdir=runs/clamp

Finds the latent for a concept (largest mean activation on --concept sentences minus on
--neutral ones; or --latent), shows its top-activating corpus contexts, clamps it to
--multiples x its maximum activation at every position, and measures the dose-response of its
output tokens, the KL divergence on unrelated prompts and the held-out loss; then generates
from --prompts with and without the clamp. The SAE is spliced in with its reconstruction error
kept, so with no clamp the model's output is unchanged. Library: `interp.steering.experiment`.
"""

from __future__ import annotations

from absl import app, flags

from interp.steering import experiment
from interp.train import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.", required=True)
_SAE_DIR = flags.DEFINE_string("sae_dir", None, "Run folder of experiments/train_sae.py.",
                               required=True)
_LATENT = flags.DEFINE_integer("latent", -1, "Latent to clamp; -1 finds it from --concept.")
_CONCEPT = flags.DEFINE_multi_string("concept", list(experiment.CONCEPT),
                                     "Sentences about the concept.")
_NEUTRAL = flags.DEFINE_multi_string("neutral", list(experiment.NEUTRAL), "Unrelated sentences.")
_PROMPTS = flags.DEFINE_multi_string("prompts", list(experiment.PROMPTS),
                                     "Unrelated prompts (dose-response, KL, generations).")
_WORDS = flags.DEFINE_list("concept_words", list(experiment.CONCEPT_WORDS),
                           "Words counted in the generations.")
_MULTIPLES = flags.DEFINE_list("multiples", ["0", "0.5", "1", "2", "4", "8"],
                               "Clamp doses, x the latent's max activation.")
_GEN = flags.DEFINE_list("generate_multiples", ["1.5", "2.5", "4"], "Doses to generate at.")
_REF = flags.DEFINE_float("reference_multiple", 2.0, "Dose whose most-promoted tokens are the "
                          "latent's output tokens.")
_N_NEW = flags.DEFINE_integer("n_new", 24, "Generated tokens per prompt.")


def config_from_flags() -> experiment.ClampConfig:
  try:
    return experiment.ClampConfig(
        workdir=_WORKDIR.value, sae_dir=_SAE_DIR.value, latent=_LATENT.value,
        concept=tuple(_CONCEPT.value), neutral=tuple(_NEUTRAL.value),
        prompts=tuple(_PROMPTS.value), concept_words=tuple(_WORDS.value),
        multiples=tuple(float(m) for m in _MULTIPLES.value),
        generate_multiples=tuple(float(m) for m in _GEN.value),
        reference_multiple=_REF.value, n_new=_N_NEW.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  cli.start(argv)
  r = experiment.run(config_from_flags())
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
  app.run(main)
