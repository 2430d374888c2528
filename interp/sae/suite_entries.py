"""The SAE entry of the figure suite (`interp.figures`): a small TopK dictionary on Gemma 3
270M's middle residual stream (`blocks.9.hook_resid_post`) over the built-in corpus, trained,
evaluated by splicing it back into the model, and summarised as a report section.

Quick mode (CI smoke) trains a few dozen steps; the default run is still small (150k
activations; the papers use hundreds of millions), so its numbers show the pipeline, not a
converged dictionary.
"""

from __future__ import annotations

import os

from interp.sae import evaluate as eval_lib
from interp.sae import experiment
from interp.sae import train as sae_train
from interp.sae.config import SAEConfig
from interp.train import checkpoint
from interp.train.optim import OptimizerConfig
from interp.viz import browser
from interp.viz.report import Registry, Section

ENTRIES = Registry()

HOOK = "blocks.9.hook_resid_post"


def settings(quick: bool) -> dict:
  if quick:
    return dict(num_steps=30, batch_size=512, context_length=33, model_batch_size=8,
                buffer_batches=4, eval_sequences=8, d_sae=2560)
  # 65 tokens = BOS + 64 activations per sequence, so a refill (8 x 16 x 64) is 16 batches.
  # 153,600 activations either way; as 300 steps of 512 (AuxK's window 20 steps = 10,240
  # tokens, lr 3e-3) they reach FVU 0.095 with 1.2% of latents silent over the last 51k tokens,
  # where 150 steps of 1,024 (lr 1e-3, AuxK never ran) ended at FVU 0.144 (2-core CPU, 216 s
  # against 175 s for the whole run with its evaluation).
  return dict(num_steps=300, batch_size=512, context_length=65, model_batch_size=16,
              buffer_batches=8, eval_sequences=32, d_sae=5120)


@ENTRIES.register("sae_gemma")
def sae_gemma(workdir: str, quick: bool) -> Section:
  checkpoint.quiet_orbax_logs()
  s = settings(quick)
  src = experiment.SourceConfig(source="gemma3_270m", hook=HOOK,
                                context_length=s["context_length"],
                                model_batch_size=s["model_batch_size"],
                                buffer_batches=s["buffer_batches"],
                                eval_sequences=s["eval_sequences"])
  sae = SAEConfig(d_in=640, d_sae=s["d_sae"], activation="topk", k=32, dead_mitigation="auxk",
                  dead_steps=20)
  run = sae_train.DEFAULT_RUN.replace(
      workdir=workdir, num_steps=s["num_steps"], mesh="data:1,model:1", log_every=10,
      optimizer=OptimizerConfig(lr=3e-3, warmup_steps=10, grad_clip=0.0))
  config = sae_train.TrainSAEConfig(sae=sae, run=run, batch_size=s["batch_size"],
                                    init_sample=2048)
  results = experiment.run(config, src, eval_lib.EvalConfig(batch_size=8))
  title = "Sparse autoencoder on Gemma 3 270M (TopK, middle residual stream)"
  if results["status"] != "completed":
    return Section(title=title, summary=f"{results['status']} at step {results['step']} of "
                   f"{s['num_steps']}; run the suite again to resume from the checkpoint.")
  m = results["summary"]
  page = os.path.join(workdir, "dashboard.html")
  shot = os.path.join(workdir, "dashboard.png")
  # The page is the result; its picture needs Chromium and is skipped with a message without.
  png, shot_note = browser.screenshot_page(page, shot, width=1400, height=900)
  figures = [os.path.join(workdir, "density.png")] + ([png] if png else [])
  return Section(
      title=title,
      summary=f"TopK k=32, {s['d_sae']} latents on `{HOOK}` (d=640), "
              f"{s['num_steps']} steps x {s['batch_size']} activations of the built-in corpus; "
              f"evaluated on {s['eval_sequences']} held-out sequences of "
              f"{s['context_length']} tokens by splicing the reconstruction into the model. "
              "The feature dashboards (dashboard.html, self-contained) show each of the densest "
              "latents' activation histogram, top and lower-band contexts, and the tokens its "
              f"decoder promotes and suppresses. Figure: {shot_note}.",
      figures=figures, links=[("feature dashboards", page)],
      rows=[("L0 (latents per token)", f"{m['l0']:.1f}", "k = 32"),
            ("fraction of variance unexplained", f"{m['fvu']:.3f}", "lower is better"),
            ("cosine(x, x_hat)", f"{m['cosine']:.3f}", "-"),
            ("CE loss recovered (vs zero-ablation)", f"{m['ce_loss_recovered']:.3f}",
             "1 = perfect"),
            ("CE clean / spliced / zero-ablated",
             f"{m['ce_clean']:.2f} / {m['ce_spliced']:.2f} / {m['ce_zero']:.2f}", "-"),
            (f"dead latents (no firing on {int(m['dead_eval_tokens'])} eval tokens)",
             f"{m['dead_fraction_eval']:.3f}", "-"),
            (f"dead latents (no firing in the last {m['dead_train_window_steps']} training "
             f"steps, {m['dead_train_window_tokens']} tokens)",
             f"{m['dead_fraction_train_window']:.3f}", "-"),
            ("latents silent over the last " + " / ".join(
                f"{int(n) // 1000}k" for n in m["silent_fraction_by_tokens"]) + " training tokens",
             " / ".join(f"{v:.3f}" for v in m["silent_fraction_by_tokens"].values()),
             "lower is better")])
