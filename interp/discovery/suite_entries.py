"""Circuit discovery in the figure suite (`interp.figures`): EAP-IG edge scores for IOI on
Gemma 3 270M, the top-scoring circuit at 5% of the edges and its faithfulness curve
(`interp.discovery.experiment`; quick: 4 prompts, 2 integration points, 6 curve points)."""

from __future__ import annotations

from interp.discovery import experiment
from interp.viz.report import Registry, Section

ENTRIES = Registry()


@ENTRIES.register("circuit_discovery_gemma")
def circuit_discovery_gemma(workdir: str, quick: bool) -> Section:
  config = experiment.DiscoveryConfig(workdir=workdir, n_prompts=4 if quick else 16,
                                      steps=2 if quick else 8, curve_points=6 if quick else 12)
  r = experiment.run(config)
  c, curve = r["circuit"], r["curve"]
  rows = [("edges in the graph (embed, q/k/v per head, MLPs, logits)",
           str(r["graph"]["n_edges"]), "-"),
          ("logit difference clean / every edge patched", f"{curve['clean']:.2f} / "
           f"{curve['corrupt']:.2f}", "-"),
          (f"circuit: top {c['n_edges']} edges by EAP-IG score ({100 * c['fraction']:.1f}%), "
           "normalised LD with every other edge patched", f"{c['normalised']:.2f}",
           ">= 0.8 (hand-found heads: 0.41)"),
          *([(f"hand-found circuit ({len(r['hand_found']['heads'])} heads from interp.ioi) as "
               f"{r['hand_found']['n_edges']} edges, normalised LD measured the same way",
               f"{r['hand_found']['normalised']:.2f}", "-")] if "hand_found" in r else []),
          ("curve (edges: normalised LD)", ", ".join(
              f"{n}: {v:.2f}" for n, v in zip(curve["counts"], curve["normalised"])), "-"),
          ("seconds: scores / curve", f"{r['seconds']['scores']:.0f} / "
           f"{r['seconds']['curve']:.0f}", "-")]
  return Section(title="Automatic circuit discovery on edges: IOI in Gemma 3 270M (EAP-IG)",
                 summary=f"{r['n_prompts']} IOI prompts and p_ABC corruptions; every edge "
                         "outside the circuit reads the corrupted run.",
                 figures=r["figures"], rows=rows)
