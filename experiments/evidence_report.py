"""Behavioural versus causal evidence, side by side.

  python experiments/evidence_report.py --workdir=runs/evidence
  python experiments/evidence_report.py --workdir=runs/evidence_toy --settings=induction_toy

On IOI prompts and repeated-token prompts for Gemma 3 270M, and on a 2-layer attention-only toy
trained here (its induction and previous-token heads are known), it compares token attributions
(occlusion, Shapley, LIME, gradient x input, integrated gradients) and per-head attention
weights and write norms with causal effects (patching a token or a head from a counterfactual
prompt): Kendall tau and top-k overlap, the heads that attend strongly yet write little and the
reverse. Writes results.json, figures and report.md into --workdir. The library is
`interp.attribution.evidence_report`.
"""

from __future__ import annotations

from absl import app, flags

from interp.attribution import evidence, evidence_report
from interp.train import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.", required=True)
_SETTINGS = flags.DEFINE_list("settings", list(evidence_report.SETTINGS),
                              f"Any of {', '.join(evidence_report.SETTINGS)}.")
_N = flags.DEFINE_integer("n_prompts", 8, "Prompts per setting.")
_SEG = flags.DEFINE_integer("seg_len", 8, "Segment length L of the repeated-token prompts.")
_SHAP = flags.DEFINE_integer("shapley_samples", 256,
                             "KernelSHAP coalitions on Gemma (0 = exact Shapley values).")
_LIME = flags.DEFINE_integer("lime_samples", 256, "LIME coalitions.")
_IG = flags.DEFINE_integer("ig_steps", 32, "Integrated-gradients steps.")
_BASELINE = flags.DEFINE_integer("baseline_token", 0,
                                 "Neutral token the behavioural methods mask with (Gemma <pad>).")
_TOY_STEPS = flags.DEFINE_integer("toy_steps", 600, "Training steps of the toy.")
_CHUNK = flags.DEFINE_integer("chunk", 32, "Forwards per vmapped step.")


def config_from_flags() -> evidence_report.ReportConfig:
  try:
    return evidence_report.ReportConfig(
        workdir=_WORKDIR.value, settings=tuple(_SETTINGS.value), n_prompts=_N.value,
        seg_len=_SEG.value, toy_steps=_TOY_STEPS.value,
        evidence=evidence.EvidenceConfig(
            baseline_token=_BASELINE.value, shapley_samples=_SHAP.value,
            lime_samples=_LIME.value, ig_steps=_IG.value, chunk=_CHUNK.value))
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def _fmt(x) -> str:
  return "  nan" if x is None else f"{x:5.2f}"  # results.json writes NaN as null


def main(argv):
  cli.start(argv)
  config = config_from_flags()
  r = evidence_report.run(config)
  settings = list(r["settings"])
  print("Kendall tau / top-k overlap with the causal effect: " + ", ".join(settings))
  for m, row in r["table"].items():
    cells = [f"{_fmt(row[s]['kendall_tau'])} / {_fmt(row[s]['topk_overlap'])}" for s in settings]
    print(f"  {m:22s} " + "   ".join(cells))
  print(f"report: {config.workdir}/report.md ({r['wall_seconds']:.0f} s)")


if __name__ == "__main__":
  app.run(main)
