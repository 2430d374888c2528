"""Induction heads (Olsson et al., 2022): phase change, head scores, composition, ablations.

  python experiments/induction_heads.py --workdir=runs/induction
  python experiments/induction_heads.py --workdir=runs/induction_toys --nogemma --num_steps=1500
  python experiments/induction_heads.py --workdir=runs/induction_2l --models=attn2 --seed=1
  python experiments/induction_heads.py --workdir=runs/induction_gemma --models= \
      --gemma_low=1000 --gemma_high=20000

Trains a 1-layer and a 2-layer attention-only model and a 1-layer model with smeared keys on
random segments each followed by its copy (`--data=pairs:4-16`), snapshotting head scores and
the in-context-learning score as they train, then measures composition and ablations; then
finds Gemma 3 270M's induction and previous-token heads on repeated random tokens and ablates
the top ones against random heads (`--models=` measures Gemma alone; `--gemma_low` and
`--gemma_high` bound the token ids its random segments use). Held-out repeats are at a lag the
training data used (`--eval_lag=0`: from `--data`). Writes the figures, results.json and each
toy's run folder (models/<name>/) into --workdir; re-running resumes the training. The library is
`interp.induction.experiment`; it takes ~2.5 CPU-minutes (the toys ~1, Gemma ~1.5), 4 minutes
of wall time on two busy cores.
"""

from __future__ import annotations


from interp import config_flags
from interp import usage
from interp.induction import experiment
from interp.train import cli

_CONFIG = config_flags.define(experiment.InductionConfig, meta={"workdir": {"required": True}})


def main(argv):
  cli.start(argv)
  results = experiment.run(_CONFIG.build())
  if results["models"]:
    print(f"held-out lags: {results['eval']['lags']}")
  for name, m in results["models"].items():
    pc = m["phase_change"]
    when = f"at step {pc['step']}" if pc["detected"] else f"none: {pc['reason']}"
    print(f"{name}: ICL {m['icl']:.2f} (phase change {when}), best "
          f"prefix-matching {max(max(r) for r in m['scores']['prefix_matching']):.2f}")
  if "gemma" in results:
    top = ", ".join(f"{t['head']} {t['score']:.2f}"
                    for t in results["gemma"]["top_induction_heads"])
    print(f"gemma: top induction heads {top}")
  print(f"figures: {results['figures']}")


if __name__ == "__main__":
  usage.run(main)
