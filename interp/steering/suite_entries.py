"""Feature clamping in the figure suite (`interp.figures`): a latent of the `sae_gemma` entry's
dictionary clamped on Gemma 3 270M (`interp.steering.experiment`); runs after that entry."""

from __future__ import annotations

import os

from interp.steering import experiment as clamping
from interp.viz.report import Registry, Section

ENTRIES = Registry()


@ENTRIES.register("clamping_gemma")
def clamping_gemma(workdir: str, quick: bool) -> Section:
  title = "Feature clamping on Gemma 3 270M (a small-scale 'Golden Gate')"
  sae_dir = os.path.join(os.path.dirname(workdir), "sae_gemma")
  if not os.path.exists(os.path.join(sae_dir, "sae_config.json")):
    return Section(title=title, summary=f"needs the sae_gemma entry's dictionary in {sae_dir}; "
                   "run the suite with it first.")
  config = clamping.ClampConfig(
      workdir=workdir, sae_dir=sae_dir, n_new=8 if quick else 24,
      multiples=(0.0, 2.0, 8.0) if quick else clamping.ClampConfig.multiples,
      generate_multiples=(4.0,) if quick else clamping.ClampConfig.generate_multiples)
  r = clamping.run(config)
  dr = r["dose_response"]
  top = r["top_contexts"][0]
  rows = [("latent found for the concept (mean activation on concept - neutral sentences)",
           f"{r['latent']} ({r.get('concept_score', float('nan')):.2f})", "-"),
          ("its strongest corpus context", f"{top['before']}[[{top['token']}]]{top['after']}"
           .replace("\n", " ").replace("|", "/"), "about the concept"),
          ("its output tokens (most promoted by a x2 clamp on unrelated prompts)",
           ", ".join(r["output_tokens"][:6]), "about the concept")]
  for m, p, kl, loss in zip(dr["multiples"], dr["target_prob"], dr["kl"], dr["loss"]):
    rows.append((f"clamp x{m:g} max activation: output-token mass, KL, held-out loss",
                 f"{p:.4f}, {kl:.3f}, {loss:.3f} (unclamped {dr['loss_unclamped']:.3f})",
                 "mass and KL rise with the dose"))
  for m, g in r["generations"].items():
    rows.append((f"generation at x{m}: concept-word rate; first sample",
                 f"{g['concept_word_rate']:.3f}; " + g["texts"][0].replace("\n", " ")
                 .replace("|", "/")[:160], "rises with the clamp"))
  return Section(title=title, summary=f"Latent of the `sae_gemma` dictionary at `{r['hook']}`, "
                 "clamped at every position with the reconstruction error kept (no clamp = "
                 "unchanged model).", figures=r["figures"], rows=rows)
