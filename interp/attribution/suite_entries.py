"""The evidence report in the figure suite (`interp.figures`).

`evidence_report` runs `interp.attribution.evidence_report` into `<suite workdir>/evidence_report/`
and reports its agreement table: token attributions and attention-level evidence against causal
effects on Gemma 3 270M (IOI, repeated tokens) and on the induction toy whose heads are known.
Quick mode: the toy only (60 steps, 2 prompts, few samples), so the smoke test needs no Gemma.
"""

from __future__ import annotations

from interp.attribution import evidence, evidence_report
from interp.viz.report import Registry, Section

ENTRIES = Registry()


def _cell(x) -> str:
  return "nan" if x is None else f"{x:.2f}"


@ENTRIES.register("evidence_report")
def evidence_report_entry(workdir: str, quick: bool) -> Section:
  if quick:
    config = evidence_report.ReportConfig(
        workdir=workdir, settings=("induction_toy",), n_prompts=2, seg_len=4, toy_steps=60,
        evidence=evidence.EvidenceConfig(lime_samples=32, ig_steps=4, chunk=16))
  else:
    config = evidence_report.ReportConfig(workdir=workdir)
  r = evidence_report.run(config)
  settings = list(r["settings"])
  rows = []
  for m, row in r["table"].items():
    rows.append((f"{m}: Kendall tau / top-k overlap with the causal effect ({', '.join(settings)})",
                 "; ".join(f"{_cell(row[s]['kendall_tau'])} / {_cell(row[s]['topk_overlap'])}"
                           for s in settings),
                 "tau near 1 only where the evidence tracks the intervention"))
  toy = r["settings"].get("induction_toy")
  if toy:
    for role, ranks in toy["known_ranks"].items():
      rows.append((f"toy: rank of the known {role.replace('_', ' ')} head "
                   f"{toy['known_heads'][role]} (attention, write norm, total, direct)",
                   ", ".join(str(ranks[k]) for k in ("attention", "write_norm", "total",
                                                     "direct")),
                   "induction: top everywhere; previous-token: top only by total effect"))
  return Section(
      title="Behavioural versus causal evidence (token attributions, attention, patching)",
      summary="Token attributions against a neutral token versus patching each token from a "
              "counterfactual prompt; per-head attention and write norms versus patching each "
              "head. The run folder's report.md states what each kind of evidence licenses.",
      figures=r["figures"], rows=rows)
