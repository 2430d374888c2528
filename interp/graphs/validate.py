"""Checking an attribution graph against the real model, and attribution through attention scores.

Vocabulary (beyond `interp.graphs.attribute`):
  steer      scale one feature's activation a by `factor` in the REAL model: add
             (factor - 1) a W_dec[f] to hook_mlp_out at its position (every layer >= its own for
             a CLT); factor 0 turns it off. Observed effect: the change of the top logit target
             (demeaned, pre-soft-cap) in the real forward, everything downstream live.
  predicted  the same change read off the signed adjacency: feature j's activation responds
             linearly, da_j = sum_s A[j, s] / a_s da_s, so da = (I - M)^-1 da_0 with
             M[j, s] = A[j, s] / a_s over features, and the logit moves by sum_s A[l, s] / a_s da_s
             (direct and indirect paths; errors, patterns and norms stay frozen).
  score attribution  for one (layer, head, query pos, key pos), the attention score
             q . k * query_scale with every norm divisor frozen (ln1 and the q/k norms) is
             bilinear in the residual streams at the two positions, each affine in the sources.
             Query side: each source's share of q with k frozen at its real value; key side the
             converse. Each side plus its bias (q or k with every source zero) sums to the score
             exactly; the two sides together are the score's first-order change when every
             source is scaled by (1 + eps).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from interp.graphs import attribute
from interp.graphs import build as gb
from interp.graphs import linear as gl
from interp.graphs import prune as gp
from interp.models import transformer
from interp.models.config import NormType, PositionalType, TransformerConfig
from interp.models.hooks import Hooks
from interp.sae import transcoder as tc


def predicted_effects(graph: attribute.Graph, features, factor: float, logit: int = 0):
  """The graph's predicted change of logit node `logit` when each of `features` is steered.

  Args:
    graph: the unpruned graph; features: indices of feature nodes (adjacency order).
    factor: the activation is multiplied by this (0 = off).
  Returns:
    float [len(features)].
  """
  nf = graph.layout.n_features
  act = attribute.feature_info(graph)["act"].astype(np.float64)
  m = graph.adjacency[:nf, :nf] / act[None, :]
  row = graph.adjacency[graph.layout.n - graph.layout.n_logits + logit, :nf] / act
  # row (I - m)^-1 once, by one linear solve, then each feature's change da_i scales entry i.
  through = np.linalg.solve((np.eye(nf) - m).T, row)
  features = np.asarray(features)
  return through[features] * (factor - 1.0) * act[features]


@functools.partial(jax.jit, static_argnums=(0, 2))
def _steered(cfg, params, tc_cfg, tc_params, tokens, layers, pos, feat, delta, vec):
  L = cfg.n_layers

  def one(layer, p, f, d):
    shift = jnp.zeros((L,) + tokens.shape + (cfg.d_model,), jnp.float32)
    for t in range(L):
      if tc_cfg.kind == tc.Kind.CLT:
        w, on = tc_params["W_dec"][layer, f, t], layer <= t
      else:
        w, on = tc_params["W_dec"][t, f], layer == t
      shift = shift.at[t, 0, p].add(jnp.where(on, d * w / tc_params["out_scale"][t], 0.0))
    edits = {f"blocks.{t}.hook_mlp_out": (lambda x, t=t: x + shift[t].astype(x.dtype))
             for t in range(L)}
    name = ("ln_final.hook_normalized" if cfg.norm != NormType.NONE
            else f"blocks.{L - 1}.hook_resid_post")
    _, cache = transformer.forward(cfg, params, tokens, Hooks(capture=(name,), edits=edits),
                                   logits_at=jnp.array([[tokens.shape[1] - 1]]))
    return cache[name][0, -1].astype(jnp.float32) @ vec

  return jax.vmap(one)(layers, pos, feat, delta)


def observed_effects(cfg: TransformerConfig, params, tc_cfg: tc.TranscoderConfig, tc_params,
                     graph: attribute.Graph, features, factor: float, logit: int = 0):
  """The real model's change of logit node `logit` when each of `features` is steered.

  Returns:
    float [len(features)]: steered minus unsteered (demeaned, pre-soft-cap) logit.
  """
  info = attribute.feature_info(graph)
  idx = np.asarray(features)
  t = gb.logit_targets(cfg, params, graph.logit_tokens[logit:logit + 1], 0)
  toks = jnp.asarray(graph.tokens)[None]
  delta = (factor - 1.0) * info["act"][idx]
  args = (jnp.asarray(info["layer"][idx]), jnp.asarray(info["pos"][idx]),
          jnp.asarray(info["feature"][idx]), jnp.asarray(delta, jnp.float32))
  steered = _steered(cfg, params, tc_cfg, tc_params, toks, *args, jnp.asarray(t.vec[0]))
  base = _steered(cfg, params, tc_cfg, tc_params, toks, *args[:3], jnp.zeros_like(args[3]),
                  jnp.asarray(t.vec[0]))
  return np.asarray(steered - base, np.float64)


def agreement(predicted, observed) -> dict:
  """Pearson correlation and mean absolute error of predicted vs observed effects."""
  p, o = np.asarray(predicted, np.float64), np.asarray(observed, np.float64)
  corr = float(np.corrcoef(p, o)[0, 1]) if len(p) > 1 and p.std() > 0 and o.std() > 0 else 1.0
  return {"correlation": corr, "mean_abs_error": float(np.mean(np.abs(p - o))),
          "predicted": p.tolist(), "observed": o.tolist()}


def top_features(graph: attribute.Graph, n: int = 5) -> np.ndarray:
  """The `n` feature nodes of most influence on the logits."""
  infl = gp.influence(gp.normalize(graph.adjacency), gp.logit_weights(graph.layout, graph.probs))
  return np.argsort(-infl[:graph.layout.n_features], kind="stable")[:n]


# ----- Attribution through attention scores.

def _qk(cfg, params, fz, resid, layer, head, which):
  """q [p e] (head `head`) or k [p e] (its KV head) of resid_pre [p d], norms frozen, RoPE on."""
  blk = params[f"blocks_{layer}"]
  x = gl.norm(cfg, resid, fz.ln1[layer], blk.get("ln1"))
  n = head if which == "Q" else head // (cfg.n_heads // cfg.n_kv_heads)
  y = x @ blk["attn"]["W_" + which][:, n]
  if cfg.attn_bias:
    y = y + blk["attn"]["b_" + which][n]
  if cfg.qk_norm:
    scale = (fz.q_norm if which == "Q" else fz.k_norm)[layer][:, n]
    y = gl.norm(cfg, y, scale, blk["attn"]["q_norm" if which == "Q" else "k_norm"])
  if cfg.smear_keys and which == "K":
    raise NotImplementedError("score attribution with smeared keys")
  if cfg.positional == PositionalType.ROPE:
    base = cfg.rope_local_base if cfg.is_local(layer) else cfg.rope_base
    y = transformer.rope(y[None, :, None], base)[0, :, 0]
  return y


def attention_score_attribution(cfg: TransformerConfig, params, tc_cfg: tc.TranscoderConfig,
                                tc_params, graph: attribute.Graph, layer: int, head: int,
                                q_pos: int, k_pos: int) -> dict:
  """Each source's contribution to one attention score, via the query and via the key.

  Args:
    graph: the prompt's graph (its replacement model and active features are used).
    layer, head, q_pos, k_pos: the score (k_pos <= q_pos).
  Returns:
    dict: score (frozen-norm, equal to the model's), query / key [S] per source (columns in
    `graphs.build` source order: all active features, errors, embeddings), query_bias,
    key_bias (each side's value with every source zero), first_order (d score / d eps when
    every source is scaled by 1 + eps).
  """
  rep, active = graph.rep, graph.active
  counts = gb._counts(active, cfg.n_layers)
  r = _score_parts(cfg, params, tc_cfg, tc_params, layer, counts, rep,
                   *(jnp.asarray(active[x]) for x in ("pos", "feature", "act")),
                   jnp.int32(head), jnp.int32(q_pos), jnp.int32(k_pos))
  score, query, key, q_bias, k_bias, first = jax.device_get(r)
  return {"score": float(score), "query": np.asarray(query), "key": np.asarray(key),
          "query_bias": float(q_bias), "key_bias": float(k_bias), "first_order": float(first)}


# Compiled once per (model, transcoder, layer, feature counts): head and positions are traced.
@functools.partial(jax.jit, static_argnums=(0, 2, 4, 5))
def _score_parts(cfg, params, tc_cfg, tc_params, layer, counts, rep, f_pos, f_feat, f_act, head,
                 q_pos, k_pos):
  fz = rep.frozen
  zero_mlp = rep.bias_mlp  # every source zero: b_dec, and held positions' outputs
  resid = lambda e, m: gl.linear_forward(cfg, params, tc_cfg, tc_params, fz, e, m, upto=layer)
  q_of = lambda e, m: _qk(cfg, params, fz, resid(e, m), layer, head, "Q")[q_pos]
  k_of = lambda e, m: _qk(cfg, params, fz, resid(e, m), layer, head, "K")[k_pos]
  q, k = q_of(rep.embed, rep.mlp), k_of(rep.embed, rep.mlp)
  s = cfg.query_scale
  dec = gb.decoder_vectors(tc_cfg, tc_params, counts, f_pos, f_feat, f_act)
  g_q = jax.grad(lambda e, m: s * q_of(e, m) @ k, argnums=(0, 1))(rep.embed, rep.mlp)
  g_k = jax.grad(lambda e, m: s * q @ k_of(e, m), argnums=(0, 1))(rep.embed, rep.mlp)
  zero_e = jnp.zeros_like(rep.embed)

  def scaled(eps):  # every source times (1 + eps); bias_mlp and the other biases fixed
    e, m = rep.embed * (1 + eps), zero_mlp + (rep.mlp - zero_mlp) * (1 + eps)
    return s * q_of(e, m) @ k_of(e, m)

  first = jax.jvp(scaled, (jnp.float32(0.0),), (jnp.float32(1.0),))[1]
  return (s * q @ k, gb.source_dots(dec, rep, *g_q), gb.source_dots(dec, rep, *g_k),
          s * q_of(zero_e, zero_mlp) @ k, s * q @ k_of(zero_e, zero_mlp), first)
