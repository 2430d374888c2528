"""The IOI circuit on Gemma 3 270M in the figure suite (`interp.figures`): `interp.ioi.experiment`
on 8 prompts (quick: 4, no patching maps)."""

from __future__ import annotations

from interp.ioi import circuit as ioi_circuit
from interp.ioi import experiment as ioi_experiment
from interp.viz.report import Registry, Section

ENTRIES = Registry()


@ENTRIES.register("ioi_gemma")
def ioi_gemma(workdir: str, quick: bool) -> Section:
  config = ioi_experiment.IOIConfig(workdir=workdir, n_prompts=4 if quick else 8,
                                    patching=not quick, circuit=ioi_circuit.CircuitConfig())
  r = ioi_experiment.run(config)
  b, f = r["baseline"], r["faithfulness"]
  fmt = lambda pairs: ", ".join(f"{h} {v:+.2f}" for h, v in pairs[:3])
  rows = [("logit difference IO - S (p_ABC corrupted)",
           f"{b['logit_diff']:.2f} ({b['logit_diff_corrupt']:.2f})", "> 0 (GPT-2 small: 3.56)"),
          ("accuracy (LD > 0); IO is the top-1 token", f"{b['accuracy']:.2f}; {b['io_top1']:.2f}",
           "-"),
          ("largest negative / positive direct effects (x clean LD)",
           f"{fmt(r['largest_negative_direct'])} / {fmt(r['largest_positive_direct'])}",
           "name movers / negative name movers")]
  rows += [(f"class: {name.replace('_', ' ')}", ", ".join(heads) or "-", "-")
           for name, heads in r["classes"].items()]
  rows.append(("faithfulness: circuit LD / model LD (all other heads mean-ablated per template)",
               f"{f['faithfulness']:.2f} ({f['n_heads']} heads; no heads: "
               f"{f['logit_diff_all_heads_ablated']:.2f})", "GPT-2 small: 0.87"))
  if "patching" in r:
    for kind, m in r["patching"].items():
      a = m["agreement"]
      rows.append((f"attribution vs activation patching ({kind}): Pearson r, Kendall tau",
                   f"{a['pearson_r']:.2f}, {a['kendall_tau']:.2f}", "high"))
  return Section(title="Indirect object identification in Gemma 3 270M (Wang et al., 2022)",
                 summary=f"{b['n_prompts']} IOI prompts (6 templates, ABBA/BABA) and their p_ABC "
                         "corruptions; head classes by path patching (effects relative to the "
                         "clean logit difference) and attention by role.",
                 figures=r["figures"], rows=rows)
