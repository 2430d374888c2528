"""Induction heads (Olsson et al., 2022): phase change, head scores, composition, ablations.

  python experiments/induction_heads.py --workdir=runs/induction
  python experiments/induction_heads.py --workdir=runs/induction_toys --nogemma --num_steps=1500
  python experiments/induction_heads.py --workdir=runs/induction_2l --models=attn2 --seed=1

Trains a 1-layer and a 2-layer attention-only model and a 1-layer model with smeared keys on
random segments each followed by its copy (`--data=pairs:4-16`), snapshotting head scores and
the in-context-learning score as they train, then measures composition and ablations; then
finds Gemma 3 270M's induction and previous-token heads on repeated random tokens and ablates
the top ones against random heads. Writes the figures, results.json and each toy's run folder
(models/<name>/) into --workdir; re-running resumes the training. The library is
`interp.induction.experiment`; it takes ~2.5 CPU-minutes (the toys ~1, Gemma ~1.5), 4 minutes
of wall time on two busy cores.
"""

from __future__ import annotations

from absl import app, flags

from interp.induction import experiment
from interp.train import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.", required=True)
_MODELS = flags.DEFINE_list("models", list(experiment.MODELS),
                            f"Toys to train: {', '.join(experiment.MODELS)}.")
_VOCAB = flags.DEFINE_integer("vocab_size", 24, "Toy vocabulary.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Toy residual width.")
_N_HEADS = flags.DEFINE_integer("n_heads", 2, "Heads per layer.")
_N_CTX = flags.DEFINE_integer("n_ctx", 32, "Toy context length.")
_DATA = flags.DEFINE_string("data", "pairs:4-16", "pairs:MIN-MAX | corpus | repeat:L | files:GLOB")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch (a multiple of the data axis).")
_STEPS = flags.DEFINE_integer("num_steps", 800, "Training steps per toy.")
_LR = flags.DEFINE_float("lr", 1e-2, "Peak AdamW learning rate.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 20, "Linear warmup steps.")
_SEED = flags.DEFINE_integer("seed", 0, "Init, data order and held-out tokens.")
_MESH = flags.DEFINE_string("mesh", "data:-1,model:1", "Mesh axis sizes, -1 = the rest.")
_SNAPSHOT = flags.DEFINE_integer("snapshot_every", 25, "Head scores every this many steps.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 10, "Training loss every this many steps.")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch", 64, "Held-out repeated-token sequences.")
_ABLATIONS = flags.DEFINE_list("ablations", list(experiment.ABLATIONS),
                               f"Ablation kinds to tabulate: {', '.join(experiment.ABLATIONS)}.")
_GEMMA = flags.DEFINE_bool("gemma", True, "Also measure Gemma 3 270M (no training).")
_GEMMA_BATCH = flags.DEFINE_integer("gemma_batch", 8, "Gemma: sequences of <bos> + 2 x seg.")
_GEMMA_SEG = flags.DEFINE_integer("gemma_seg", 50, "Gemma: tokens per repeated segment.")
_GEMMA_TOP_K = flags.DEFINE_integer("gemma_top_k", 3, "Gemma: top induction heads to ablate.")
_GEMMA_RANDOM = flags.DEFINE_integer("gemma_random_sets", 5, "Gemma: random head sets to compare.")


def config_from_flags() -> experiment.InductionConfig:
  """The flags as a frozen InductionConfig (library code never reads FLAGS)."""
  try:
    return experiment.InductionConfig(
        workdir=_WORKDIR.value, models=tuple(_MODELS.value), vocab_size=_VOCAB.value,
        d_model=_D_MODEL.value, n_heads=_N_HEADS.value, n_ctx=_N_CTX.value, data=_DATA.value,
        batch_size=_BATCH.value, num_steps=_STEPS.value, lr=_LR.value,
        warmup_steps=_WARMUP.value, seed=_SEED.value, mesh=_MESH.value,
        snapshot_every=_SNAPSHOT.value, log_every=_LOG_EVERY.value, eval_batch=_EVAL_BATCH.value,
        ablations=tuple(_ABLATIONS.value), gemma=_GEMMA.value,
        gemma_batch=_GEMMA_BATCH.value, gemma_seg=_GEMMA_SEG.value,
        gemma_top_k=_GEMMA_TOP_K.value, gemma_random_sets=_GEMMA_RANDOM.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  cli.start(argv)
  results = experiment.run(config_from_flags())
  for name, m in results["models"].items():
    pc = m["phase_change"]
    print(f"{name}: ICL {m['icl']:.2f} (phase change at step {pc['icl_half_step']}), best "
          f"prefix-matching {max(max(r) for r in m['scores']['prefix_matching']):.2f}")
  if "gemma" in results:
    top = ", ".join(f"{t['head']} {t['score']:.2f}"
                    for t in results["gemma"]["top_induction_heads"])
    print(f"gemma: top induction heads {top}")
  print(f"figures: {results['figures']}")


if __name__ == "__main__":
  app.run(main)
