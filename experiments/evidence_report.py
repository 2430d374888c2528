"""Behavioural versus causal evidence, side by side.

  python experiments/evidence_report.py --workdir=runs/evidence
  python experiments/evidence_report.py --workdir=runs/evidence_toy --settings=induction_toy
  python experiments/evidence_report.py --workdir=runs/evidence_bf16 --precision=bfloat16

On IOI prompts and repeated-token prompts for Gemma 3 270M, and on a 2-layer attention-only toy
trained here (its induction and previous-token heads are known), it compares token attributions
(occlusion, Shapley, LIME, gradient x input, integrated gradients) and per-head attention
weights and write norms with causal effects (patching a token or a head from a counterfactual
prompt): Kendall tau and top-k overlap, the heads that attend strongly yet write little and the
reverse. Writes results.json, figures and report.md into --workdir. --precision (default auto:
float32 on CPU, bfloat16 on GPU/TPU) is the compute dtype of every model forward and backward;
logits, metrics, effects and attributions stay float32. The library is
`interp.attribution.evidence_report`.
"""

from __future__ import annotations


from interp import config_flags
from interp import usage
from interp.attribution import evidence_report
from interp.train import cli

_CONFIG = config_flags.define(evidence_report.ReportConfig, meta={"workdir": {"required": True}})


def _fmt(x) -> str:
  return "  nan" if x is None else f"{x:5.2f}"  # results.json writes NaN as null


def main(argv):
  cli.start(argv)
  config = _CONFIG.build()
  r = evidence_report.run(config)
  settings = list(r["settings"])
  print("Kendall tau / top-k overlap with the causal effect: " + ", ".join(settings))
  for m, row in r["table"].items():
    cells = [f"{_fmt(row[s]['kendall_tau'])} / {_fmt(row[s]['topk_overlap'])}" for s in settings]
    print(f"  {m:22s} " + "   ".join(cells))
  print(f"report: {config.workdir}/report.md ({r['wall_seconds']:.0f} s, "
        f"{r['precision']} compute)")


if __name__ == "__main__":
  usage.run(main)
