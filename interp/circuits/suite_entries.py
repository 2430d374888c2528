"""The induction-heads experiment in the figure suite (`interp.viz.suite`).

`induction_toys` trains the three toys of `interp.circuits.experiment` in-process into
`<suite workdir>/induction_toys/` (resumable) and reports the phase change, the circuit's head
scores and composition, and the ablations. `induction_gemma` measures Gemma 3 270M's induction
and previous-token heads on repeated random tokens and ablates the top ones against random ones
(`interp.circuits.gemma`). Quick mode: 500 steps and two ablation kinds; Gemma on 2 x 41 tokens.
"""

from __future__ import annotations

import os

import numpy as np

from interp.viz.report import Section
from interp.viz.suite import register


def _head(m: dict, key: str, layer_head) -> str:
  layer, head = layer_head
  return f"L{layer}H{head}: {np.array(m['scores'][key])[layer, head]:.2f}"


def _removed(m: dict, kind: str, layer_head) -> float:
  return float(np.array(m["ablation"][kind]["removed"])[tuple(layer_head)])


@register("induction_toys")
def induction_toys(workdir: str, quick: bool) -> Section:
  from interp.circuits import experiment
  from interp.train import checkpoint
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
      ("2-layer: phase change (ICL at half its final value; best prefix-matching > 0.5), step",
       f"{pc['icl_half_step']}; {pc['prefix_matching_above_half_step']}",
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


@register("induction_gemma")
def induction_gemma(workdir: str, quick: bool) -> Section:
  from interp.circuits import gemma, plots
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


@register("ioi_gemma")
def ioi_gemma(workdir: str, quick: bool) -> Section:
  from interp.circuits import ioi, ioi_experiment
  config = ioi_experiment.IOIConfig(workdir=workdir, n_prompts=4 if quick else 8,
                                    patching=not quick, circuit=ioi.CircuitConfig())
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


@register("clamping_gemma")
def clamping_gemma(workdir: str, quick: bool) -> Section:
  from interp.circuits import clamping
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


@register("graph_gemma")
def graph_gemma(workdir: str, quick: bool) -> Section:
  from interp.circuits import graph_experiment, graphs
  from interp.sae import transcoder as tc
  prompt = "The capital of France is"
  config = graph_experiment.GraphRunConfig(
      model="gemma3_270m", prompt=prompt, workdir=workdir, mesh="data:1,model:1",
      transcoder=tc.TranscoderConfig(kind="plt", n_layers=18, d_model=640,
                                     d_latent=256 if quick else 1024, k=16),
      num_steps=20 if quick else 200, batch_size=256 if quick else 512,
      graph=graphs.GraphConfig(max_feature_nodes=256 if quick else 1024),
      context_sequences=8 if quick else 32)
  r = graph_experiment.run(config)
  s, st = r["scores"], r["steering"]
  top = ", ".join(f"{l['token']!r} {l['prob']:.2f}" for l in r["logits"][:3])
  rows = [("prompt; top next tokens", f"{prompt!r}; {top}", "' Paris'"),
          ("transcoders: per-layer TopK (k 16), training FVU per layer (mean of 18)",
           f"{(r['transcoder_training'] or {}).get('fvu', float('nan')) / 18:.3f}", "-"),
          ("replacement score; completeness score", f"{s['replacement']:.3f}; "
           f"{s['completeness']:.3f}", "1 for a perfect transcoder"),
          ("nodes / edges: unpruned; pruned at 0.8 / 0.98",
           f"{r['unpruned']['nodes']} / {r['unpruned']['edges']}; "
           f"{r['pruned_default']['nodes']} / {r['pruned_default']['edges']}", "-"),
          ("steering the top features off: predicted vs observed effect on the top logit",
           ", ".join(f"{k} {v:.2f}" for k, v in st.items() if isinstance(v, float)), "r near 1"),
          ("graph construction (s)", f"{r['timings']['build_s']:.1f}", "-")]
  return Section(title="An attribution graph on Gemma 3 270M (factual recall)",
                 summary="Per-layer transcoders trained briefly on the built-in corpus replace "
                         "the MLPs; attention patterns and norm scales are frozen from the real "
                         "pass; error nodes make the logits exact. The viewer is graph.html "
                         "(self-contained; open it in a browser).",
                 figures=[], rows=rows)
