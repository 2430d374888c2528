"""Feature-dashboard data: what one latent's page shows (after SAE-Vis and Neuronpedia).

Vocabulary (evaluated tokens as in `interp.sae.evaluate`):
  chosen       the latents that get a dashboard (`dashboard_latents`, the densest first).
  fired        evaluated tokens on which a latent's activation is > 0; density = fired / tokens.
  mean active  its mean activation over the tokens where it fired.
  histogram    counts of its nonzero activations in `hist_bins` bins spaced evenly in log10 from
               max * 10**-hist_decades to max; smaller activations fall in the first bin, so the
               counts sum to `fired`.
  band         band j of `quantile_bands` B holds activations in (j, j + 1] x max / (B + 1): the
               lower part of the range, the top 1 / (B + 1) being what the top contexts show.
               Each band keeps `band_samples` tokens drawn uniformly without replacement (the
               ones with the largest random priority, `eval_metrics.top_update` on priorities).
  context      a window of tokens around one activating token with every token's activation.
  promoted     the tokens whose logits a latent's decoder direction raises (suppressed: lowers)
               along the direct path: the direction added to the residual stream, through the
               final norm linearised and the unembedding, per unit activation. Linearised: the
               norm's per-token divisor (rms, or std for LayerNorm) is frozen at its typical
               value, the mean of 1 / divisor over the evaluated tokens (measured in the pass
               that already runs the model), LayerNorm's mean removal is kept and the norm's
               weight is folded into W_U; so values are logit changes at a typical token and their
               order does not depend on the frozen value. Later layers are ignored (a logit lens
               of the decoder row, as `interp.steering.clamp.output_tokens`).

One jitted reduction per batch over the chosen latents' activations [b p K] accumulates the
counts, sums, histogram, running top-M and band samples on device; context windows are then
recomputed from the few sequences they live in.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from interp.models.config import NormType, TransformerConfig
from interp.sae import eval_metrics

# Sites whose activation is (or adds to) the residual stream, so a decoder row is a direction
# there and the direct path to the logits applies.
RESIDUAL_SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                  "hook_mlp_out")


def writes_residual(model_cfg: TransformerConfig, site: str, width: int) -> bool:
  """Whether a dictionary at `site` decodes to a residual-stream direction."""
  return width == model_cfg.d_model and site.rsplit(".", 1)[-1] in RESIDUAL_SITES


def _unembedding(model_cfg: TransformerConfig, model_params) -> jax.Array:
  """W_U [d v] with the final norm's weight folded in (`interp.circuits.weights.unembedding`,
  which sits a layer above this package; tests/test_dashboard.py checks they agree)."""
  w_u = (model_params["embed"]["W_E"].T if model_cfg.tied_embeddings
         else model_params["unembed"]["W_U"])
  if model_cfg.norm != NormType.NONE:
    w_u = (model_cfg.norm_offset + model_params["ln_final"]["w"])[:, None] * w_u
  return w_u


@functools.partial(jax.jit, static_argnames=("model_cfg", "k"))
def direct_logits(model_cfg: TransformerConfig, model_params, directions: jax.Array, k: int,
                  inverse: float = 1.0) -> tuple[jax.Array, ...]:
  """The k most promoted and most suppressed tokens of residual directions [K d].

  Args:
    model_cfg, model_params: the model.
    directions: [K d] what each latent adds to the residual stream per unit activation.
    k: tokens per list.
    inverse: the final norm's frozen 1 / divisor: its mean over the evaluated tokens.
  Returns:
    (top values, top ids, bottom values, bottom ids), each [K k]; bottom values ascending.
  """
  d = directions.astype(jnp.float32) * inverse
  if model_cfg.norm == NormType.LAYERNORM:  # the final norm removes the mean first
    d = d - d.mean(-1, keepdims=True)
  logits = d @ _unembedding(model_cfg, model_params).astype(jnp.float32)
  top_v, top_i = jax.lax.top_k(logits, k)
  low_v, low_i = jax.lax.top_k(-logits, k)
  return top_v, top_i, -low_v, low_i


def _init(K, config):
  m, b, s = config.top_m, config.quantile_bands, config.band_samples
  return {"fired": jnp.zeros((K,), jnp.int32), "total": jnp.zeros((K,), jnp.float32),
          "n": jnp.zeros((), jnp.float32), "hist": jnp.zeros((K, config.hist_bins), jnp.int32),
          "top_v": jnp.full((K, m), -jnp.inf), "top_i": jnp.full((K, m), -1, jnp.int32),
          "band_v": jnp.full((b, K, s), -jnp.inf), "band_i": jnp.full((b, K, s), -1, jnp.int32)}


@jax.jit
def _accumulate(carry, acts, mask, offset, edges, max_act, key):
  """Adds one batch: acts [b p K] of the chosen latents, mask [b p] the evaluated tokens."""
  n_tok, K = acts.shape[0] * acts.shape[1], acts.shape[2]
  a, m = acts.reshape(n_tok, K).astype(jnp.float32), mask.reshape(n_tok)
  fired = (a > 0) & m[:, None]
  out = dict(carry, fired=carry["fired"] + fired.sum(0, dtype=jnp.int32),
             total=carry["total"] + jnp.where(fired, a, 0.0).sum(0),
             n=carry["n"] + m.sum(dtype=jnp.float32))
  bins = edges.shape[1] - 1
  # Bin = how many interior edges lie at or below the activation (numpy's searchsorted 'right').
  idx = jnp.sum(a[:, :, None] >= edges[None, :, 1:-1], -1)
  out["hist"] = carry["hist"] + jnp.sum(
      jax.nn.one_hot(idx, bins, dtype=jnp.int32) * fired[..., None], 0, dtype=jnp.int32)
  if carry["top_v"].shape[1]:
    out["top_v"], out["top_i"] = eval_metrics.top_update(carry["top_v"], carry["top_i"], a, m,
                                                         offset)
  n_bands = carry["band_v"].shape[0]
  prio = jax.random.uniform(jax.random.fold_in(key, offset), a.shape)
  band_v, band_i = [], []
  for j in range(n_bands):
    lo, hi = max_act * j / (n_bands + 1), max_act * (j + 1) / (n_bands + 1)
    inside = fired & (a > lo) & (a <= hi)
    v, i = eval_metrics.top_update(carry["band_v"][j], carry["band_i"][j],
                                   jnp.where(inside, prio, -jnp.inf), m, offset)
    band_v.append(v)
    band_i.append(i)
  if n_bands:
    out["band_v"], out["band_i"] = jnp.stack(band_v), jnp.stack(band_i)
  return out


def chunks(arr: np.ndarray, batch_size: int):
  """(start row, tokens [batch_size ctx] padded with zeros, valid rows mask) over `arr`."""
  for s in range(0, arr.shape[0], batch_size):
    chunk = arr[s:s + batch_size]
    valid = np.arange(batch_size) < chunk.shape[0]
    pad = np.zeros((batch_size - chunk.shape[0], arr.shape[1]), np.int32)
    yield s, np.concatenate([chunk, pad], 0), valid


def hist_edges(max_act: np.ndarray, bins: int, decades: float) -> np.ndarray:
  """[K bins + 1] float32 log-spaced edges from max * 10**-decades to max per latent."""
  scale = (10.0 ** np.linspace(-decades, 0.0, bins + 1)).astype(np.float32)
  return np.asarray(max_act, np.float32)[:, None] * scale[None, :]


def latent_dashboards(acts_fn: Callable[[jax.Array], jax.Array], arr: np.ndarray,
                      latents: Sequence[int], max_act: np.ndarray, config,
                      decode: Callable[[Sequence[int]], str] | None = None, *,
                      layers: Sequence[int] | None = None, promoted=None) -> list[dict]:
  """Dashboard data of the chosen latents of one dictionary.

  Args:
    acts_fn: tokens [batch_size ctx] -> the chosen latents' activations [batch_size ctx K]
      (jitted by the caller).
    arr: int [n ctx] the evaluated sequences.
    latents: [K] the chosen latents' ids (within their layer, for transcoders).
    max_act: [K] each one's largest activation on `arr` (scales the bins and bands).
    config: an `interp.sae.evaluate.EvalConfig` (batching, BOS handling, dashboard fields).
    decode: token ids -> text (adds text and token strings).
    layers: [K] each latent's layer (transcoders and CLTs), or None.
    promoted: (top values, top ids, bottom values, bottom ids) from `direct_logits`, or None.
  Returns:
    One dict per latent: latent, (layer), density, fired, mean_activation, max_activation,
    histogram {edges, counts}, contexts (the top M), bands [{low, high, contexts}], and
    promoted / suppressed [{token, value, (str)}] when `promoted` is given.
  """
  K, p, start = len(latents), arr.shape[1], int(config.exclude_bos)
  if K == 0:
    return []
  max_act = np.maximum(np.asarray(max_act, np.float32), np.float32(1e-30))
  edges = hist_edges(max_act, config.hist_bins, config.hist_decades)
  carry = _init(K, config)
  key = jax.random.key(config.dashboard_seed)
  pos_ok = np.arange(p) >= start
  for s, tok, valid in chunks(arr, config.batch_size):
    acts = acts_fn(jnp.asarray(tok))
    carry = _accumulate(carry, acts, jnp.asarray(valid[:, None] & pos_ok[None, :]),
                        jnp.int32(s * p), jnp.asarray(edges), jnp.asarray(max_act), key)
  c = jax.device_get(carry)
  # Top contexts have values > 0 and band samples priorities > -inf; -1 marks an empty slot.
  indices = [c["top_i"][c["top_v"] > 0], c["band_i"][c["band_v"] > -np.inf]]
  seqs = sorted({int(i) // p for part in indices for i in part})
  row_of = {s: r for r, s in enumerate(seqs)}
  window_acts = np.zeros((0, p, K), np.float32)
  if seqs:
    window_acts = np.concatenate([np.asarray(acts_fn(jnp.asarray(tok)))[valid] for _, tok, valid
                                  in chunks(arr[seqs], config.batch_size)], 0)

  def context(j, index):
    s, pos = divmod(int(index), p)
    lo, hi = max(start, pos - config.context_before), min(p, pos + config.context_after + 1)
    window = arr[s, lo:hi].tolist()
    vals = window_acts[row_of[s], lo:hi, j].astype(float)
    ctx = {"sequence": s, "position": pos, "activation": float(window_acts[row_of[s], pos, j]),
           "window_start": lo, "tokens": window, "acts": vals.tolist()}
    if decode is not None:
      ctx["text"] = decode(window)
      ctx["token_strs"] = [decode([t]) for t in window]
    return ctx

  def token_list(values, ids):
    out = [{"token": int(t), "value": float(v)} for v, t in zip(values, ids)]
    if decode is not None:
      for item in out:
        item["str"] = decode([item["token"]])
    return out

  n_tok = max(float(c["n"]), 1.0)
  n_bands = config.quantile_bands
  out = []
  for j, lat in enumerate(latents):
    fired = int(c["fired"][j])
    entry = {"latent": int(lat)}
    if layers is not None:
      entry["layer"] = int(layers[j])
    entry.update(
        density=fired / n_tok, fired=fired,
        mean_activation=float(c["total"][j]) / fired if fired else 0.0,
        max_activation=float(c["top_v"][j, 0]) if c["top_v"].shape[1] else float(max_act[j]),
        histogram={"edges": edges[j].astype(float).tolist(),
                   "counts": c["hist"][j].astype(int).tolist()},
        contexts=[context(j, i) for v, i in zip(c["top_v"][j], c["top_i"][j]) if v > 0],
        bands=[{"low": float(max_act[j]) * b / (n_bands + 1),
                "high": float(max_act[j]) * (b + 1) / (n_bands + 1),
                "contexts": sorted((context(j, i) for v, i in zip(c["band_v"][b, j],
                                                                  c["band_i"][b, j])
                                    if v > -np.inf), key=lambda x: -x["activation"])}
               for b in range(n_bands)])
    if promoted is not None:
      tv, ti, bv, bi = (np.asarray(x[j]) for x in promoted)
      entry.update(promoted=token_list(tv, ti), suppressed=token_list(bv, bi))
    out.append(entry)
  return out
