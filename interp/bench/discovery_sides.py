"""The two sides of `interp.bench.discovery`: interp's EAP-IG over every edge and the same
method written with TransformerLens hooks and torch autograd, on the same weights and prompts.

Method (EAP-IG, Hanna et al. 2024, integrated along the input embeddings): for each of `steps`
Gauss-Legendre points alpha_k on [0, 1], run the clean prompts with the token embedding replaced
by e_corr + alpha_k (e_clean - e_corr), backward the metric, and accumulate w_k times the
gradient at each receiver's input; score[u, r] = (clean - corrupted output of u) . that sum.

Granularity: the TL side reads each receiver's input by cloning the tensor that enters the
block's attention (ln1's input, or the attention's input without norms), its MLP (ln2's input)
and the unembedding (ln_final's input): a clone's gradient is the gradient through that branch
only, not through the residual skip. So a TL receiver is a whole layer's attention (q, k and v
merged over heads, "merged receiver"); interp's unsplit graph has one receiver per head, whose
inputs' gradients sum to the merged one's, so interp's scores are summed over a layer's heads
before the comparison (`merge`).
JAX and torch are imported inside the functions, so a worker never imports the other's library.
"""

from __future__ import annotations

import os
import time

import numpy as np

from interp.bench import discovery_gemma, eap_ig_torch, measure
from interp.bench.measure import time_calls
from interp.bench.patching_sides import interp_model_config, params_from_tl


def merged_index(spec) -> tuple[list[str], np.ndarray]:
  """Merged receiver names and, for each of interp's unsplit receivers, its merged index."""
  names, index = [], []
  for layer in range(spec.n_layers):
    names.append(f"a{layer}")
    index += [len(names) - 1] * spec.n_heads
    if not spec.attn_only:
      names.append(f"m{layer}")
      index.append(len(names) - 1)
  names.append("logits")
  index.append(len(names) - 1)
  return names, np.asarray(index)


def merge(spec, scores: np.ndarray) -> np.ndarray:
  """interp's [n_up n_recv] scores (unsplit graph) summed into merged receivers [n_up n_merged]."""
  names, index = merged_index(spec)
  out = np.zeros((scores.shape[0], len(names)), np.float64)
  np.add.at(out.T, index, np.asarray(scores, np.float64).T)
  return out


def _peak_delta(before: int) -> int:
  return max(measure.peak() - before, 0)


def run_interp(spec, cfg, weights, data) -> dict:
  """interp's EAP-IG scores (compiled apart, then `cfg.reps` timed calls) and the faithfulness
  curve over those scores (all points in one compiled call)."""
  import jax
  import jax.numpy as jnp
  from interp.discovery import forward, graph as graph_lib, scores as scores_lib, search

  if discovery_gemma.is_gemma(spec):
    mcfg, params = discovery_gemma.interp_config(spec), discovery_gemma.params_from_hf(spec, weights)
  else:
    mcfg, params = interp_model_config(spec), params_from_tl(spec, weights)
  params = jax.tree.map(jnp.asarray, params)
  clean, corrupt = jnp.asarray(data["source"]), jnp.asarray(data["base"])
  metric = scores_lib.make_metric(scores_lib.MetricKind.LOGIT_DIFF, data["answers"])
  last = jnp.full((spec.batch, 1), spec.ctx - 1, jnp.int32)
  graph = graph_lib.build(mcfg, split_qkv=False)
  before = measure.peak()
  source = forward.outputs(graph, params, corrupt)
  # The scorer `edge_scores` caches and calls, compiled ahead so compile time is reported apart.
  precision = getattr(cfg, "precision", "float32")
  # Laid out once, as a caller that scores more than once does (`forward.prepare`), the way the
  # TL side's model holds its weights in its own layout before timing starts.
  params = jax.block_until_ready(forward.prepare(mcfg, params, precision))
  fn = scores_lib.compiled_scorer(graph, metric, scores_lib.Method.EAP_IG_INPUTS, cfg.steps,
                                  cfg.chunk or None, precision)
  args = (params, clean, source, last, corrupt)
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  call = lambda: compiled(*args)
  values = np.asarray(call())
  times = time_calls(call, jax.block_until_ready, cfg.reps)
  peak = _peak_delta(before)
  evaluate = search.make_evaluator(graph, params, clean, source, metric, last, cfg.chunk or None,
                                   precision)
  counts = search.curve_counts(graph.n_edges, cfg.curve_points)
  curve = lambda: search.faithfulness_curve(graph, evaluate, values, counts)
  t0 = time.perf_counter()
  result = curve()
  curve_first = time.perf_counter() - t0
  curve_times = time_calls(curve, lambda o: o, cfg.reps)
  return {"scores": merge(spec, values).tolist(), "n_edges": graph.n_edges,
          "seconds": times, "compile_seconds": compile_s, "peak_rss_delta": peak,
          "curve_seconds": curve_times, "curve_first_call_seconds": curve_first,
          "curve_points": len(counts), "curve_normalised": result["normalised"],
          "loadavg": os.getloadavg(), "versions": {"jax": jax.__version__},
          "precision": str(precision)}


def run_tl(spec, cfg, weights, data) -> dict:
  """The EAP-IG reference with TL hooks: `steps` hooked forwards and backwards per call (Gemma 3:
  torch hooks on `transformers`' model, `interp.bench.discovery_gemma`)."""
  from importlib import metadata

  import torch
  if discovery_gemma.is_gemma(spec):
    return _run_gemma_reference(spec, cfg, weights, data)

  from interp.bench import forward_sides
  from interp.discovery.scores import gauss_legendre
  torch.set_num_threads(cfg.threads)
  model = forward_sides.tl_model(spec)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  clean = torch.from_numpy(data["source"]).long()
  corrupt = torch.from_numpy(data["base"]).long()
  answers = torch.from_numpy(data["answers"]).long()
  rows = torch.arange(spec.batch)
  h, e, L = spec.n_heads, spec.d_model // spec.n_heads, spec.n_layers
  w_o = [torch.from_numpy(weights[f"blocks.{i}.attn.o.weight"]).T.reshape(h, e, -1)
         for i in range(L)]
  ln = not spec.attn_only
  recv_hooks = []
  for i in range(L):
    recv_hooks.append(f"blocks.{i}.ln1.hook_in" if ln else f"blocks.{i}.attn.hook_in")
    if ln:
      recv_hooks.append(f"blocks.{i}.ln2.hook_in")
  recv_hooks.append("ln_final.hook_in" if ln else "unembed.hook_in")
  up_layer = [-1] + [s for i in range(L) for s in [2 * i] * h + ([2 * i + 1] if ln else [])]
  recv_layer = [s for i in range(L) for s in ([2 * i, 2 * i + 1] if ln else [2 * i])] + [2 * L]
  valid = torch.tensor(np.asarray(up_layer)[:, None] < np.asarray(recv_layer)[None, :])

  def metric(logits):
    last = logits[:, -1]
    return (last[rows, answers[:, 0]] - last[rows, answers[:, 1]]).mean()

  def outputs(tokens):
    """Upstream outputs [n_up b p d]: token embedding, each head's z @ W_O, each MLP's output
    (constants shared by both runs, positions and biases, cancel in the difference)."""
    names = ["hook_embed"] + [f"blocks.{i}.{n}" for i in range(L)
                              for n in (["attn.hook_z"] + (["hook_mlp_out"] if ln else []))]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    outs = [cache["hook_embed"]]
    for i in range(L):
      outs += list(torch.einsum("bphe,hed->hbpd", cache[f"blocks.{i}.attn.hook_z"], w_o[i]))
      if ln:
        outs.append(cache[f"blocks.{i}.hook_mlp_out"])
    return torch.stack(outs)

  alphas, weights_k = gauss_legendre(cfg.steps)

  def scores():
    with torch.no_grad():
      diff = outputs(clean) - outputs(corrupt)
      e_clean, e_corr = model.embed(clean), model.embed(corrupt)
    return eap_ig_torch.scores(model, clean, recv_hooks, metric, diff, e_clean, e_corr, valid,
                               alphas, weights_k)

  before = measure.peak()
  values = scores()
  times = time_calls(scores, lambda o: o, cfg.tl_reps)
  return {"scores": values.tolist(), "seconds": times, "peak_rss_delta": _peak_delta(before),
          "receiver_hooks": recv_hooks, "loadavg": os.getloadavg(),
          "versions": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                       "transformer_lens": metadata.version("transformer-lens")}}


def _run_gemma_reference(spec, cfg, weights, data) -> dict:
  from importlib import metadata

  import torch
  torch.set_num_threads(cfg.threads)
  precision = getattr(cfg, "precision", "float32")
  model = discovery_gemma.tl_model(spec, weights, precision)
  scores = discovery_gemma.reference_scorer(spec, model, weights, data, cfg.steps)
  before = measure.peak()
  values = scores()
  times = time_calls(scores, lambda o: o, cfg.tl_reps)
  return {"scores": values.tolist(), "seconds": times, "peak_rss_delta": _peak_delta(before),
          "reference": "TransformerBridge over transformers' Gemma3ForCausalLM (eager attention, "
                       f"{precision}, default mode, full logits)", "loadavg": os.getloadavg(),
          "precision": precision,
          "versions": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                       "transformers": metadata.version("transformers"),
                       "transformer_lens": metadata.version("transformer-lens")}}
