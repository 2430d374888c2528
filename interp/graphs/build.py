"""Edge weights of an attribution graph: batched vector-Jacobian products of the replacement model.

Vocabulary (beyond `interp.graphs.linear`):
  source   a node whose output enters the residual stream: an active feature (activation times
           its decoder row, added at hook_mlp_out of its layer, or of every layer >= it for a
           CLT), an error node (layer, pos) or a token embedding (pos). Every edge row has its
           columns in the order [features F, errors L*p (layer-major), embeddings p].
  target   a node whose value is affine in the sources: a feature's pre-activation
           x_in[l, pos] . W_enc[l, :, f] + b_enc[l, f], or a logit at the last position, taken
           as circuit-tracer does: the logit minus the mean logit over the vocabulary, before
           soft-capping (the unembedding columns are demeaned).
  readout  a target's vector `vec` [d] and the readout it is dotted with (x_in[l, pos] for
           features, final[last] for logits), plus a constant (b_enc; demeaned b_U).
  edge     weight of source s on target t = (s's output vector) . d t / d(residual where s
           writes); each target's row is one VJP of `linear_forward`.
  bias     a target's value when every source is zero: b_enc, b_dec, attention and norm biases
           (and the MLP outputs of held positions, `graphs.linear.hold`).
           Row sum + bias = the target's value, exactly (the replacement model is affine).

Rows are computed `chunk` targets at a time (`patching.map_sites`: vmapped, split over the
mesh's `data` axis), so at most one chunk of [chunk, L, p, d] gradients is ever alive: memory
is linear in the prompt length. With more active features than `max_feature_nodes`, targets are
chosen greedily by their influence on the logits, as circuit-tracer does.

Precision: under a bfloat16 policy the replacement model's forward and its VJPs run in
bfloat16 (parameters via `transformer.cast_params`, so norm gains stay float32; injections and
cotangents cast), and the gradients are widened to float32 before `source_dots`, so every edge
weight is a float32 sum of float32 products. Biases and target values are float32 throughout.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from interp.circuits import weights
from interp.circuits.patching import map_sites
from interp.graphs import linear as gl
from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.precision import FLOAT32, Precision, as_precision
from interp.sae import transcoder as tc


class Targets(NamedTuple):
  """Targets as arrays [T]: layer (0 for logits), pos, vec [T d], is_logit, const."""
  layer: np.ndarray
  pos: np.ndarray
  vec: np.ndarray
  is_logit: np.ndarray
  const: np.ndarray


def top_logits(rep: gl.Replacement, max_logits: int = 10, mass: float = 0.95):
  """The most probable next tokens covering `mass` of probability, at most `max_logits`.

  Returns:
    (token ids int [K], probabilities [K]).
  """
  probs = np.asarray(jax.nn.softmax(rep.logits))
  order = np.argsort(-probs, kind="stable")[:max_logits]
  cum = np.cumsum(probs[order])
  k = min(int(np.searchsorted(cum, mass)) + 1, len(order))
  return order[:k].astype(np.int32), probs[order[:k]].astype(np.float32)


def logit_targets(cfg: TransformerConfig, params: dict, tokens_out, last: int) -> Targets:
  """Targets for the logits of `tokens_out` at position `last` (demeaned, pre-soft-cap)."""
  w_u = weights.unembedding(cfg, params, fold_norms=False)
  vec = np.asarray(w_u[:, tokens_out] - w_u.mean(1, keepdims=True)).T
  const = np.zeros(len(tokens_out), np.float32)
  if cfg.unembed_bias:
    b = np.asarray(params["unembed"]["b_U"])
    const = (b[tokens_out] - b.mean()).astype(np.float32)
  k = len(tokens_out)
  return Targets(np.zeros(k, np.int32), np.full(k, last, np.int32), vec.astype(np.float32),
                 np.ones(k, bool), const)


def feature_targets(tc_params: dict, active: dict, index) -> Targets:
  """Targets for the pre-activations of active features `index` (into `active`)."""
  layer, feat = active["layer"][index], active["feature"][index]
  w_enc = np.asarray(tc_params["W_enc"])
  scale = np.asarray(tc_params["in_scale"])[layer][:, None]
  vec = (w_enc[layer, :, feat] * scale).astype(np.float32)
  const = np.asarray(tc_params["b_enc"])[layer, feat].astype(np.float32)
  return Targets(layer.astype(np.int32), active["pos"][index].astype(np.int32), vec,
                 np.zeros(len(layer), bool), const)


def concat(*ts: Targets) -> Targets:
  return Targets(*(np.concatenate(parts) for parts in zip(*ts)))


def _counts(active: dict, n_layers: int) -> tuple[int, ...]:
  return tuple(int(c) for c in np.bincount(active["layer"], minlength=n_layers))


def decoder_vectors(tc_cfg: tc.TranscoderConfig, tc_params: dict, counts: tuple, f_pos,
                    f_feat, f_act) -> tuple[list, int]:
  """Each active feature's output vectors, grouped per (source layer, target layer).

  Returns:
    ([(target layer, positions [F_s], vectors [F_s d], slice of the features)], F).
  """
  offs = np.concatenate([[0], np.cumsum(counts)]).astype(int)
  out = []
  for s, count in enumerate(counts):
    if not count:
      continue
    sl = slice(int(offs[s]), int(offs[s + 1]))
    for tl in (range(s, len(counts)) if tc_cfg.kind == tc.Kind.CLT else [s]):
      w = tc_params["W_dec"][s, :, tl] if tc_cfg.kind == tc.Kind.CLT else tc_params["W_dec"][s]
      out.append((tl, f_pos[sl], f_act[sl, None] * w[f_feat[sl]] / tc_params["out_scale"][tl],
                  sl))
  return out, int(offs[-1])


def source_dots(decoders, rep: gl.Replacement, g_embed, g_mlp) -> jax.Array:
  """Every source's contribution [F + L*p + p] given gradients at the embedding [p d] and at
  each layer's hook_mlp_out [L p d]: its output vector dotted with the gradient where it writes
  (in float32, whatever the gradients' dtype)."""
  decoders, n_feat = decoders
  g_embed, g_mlp = g_embed.astype(jnp.float32), g_mlp.astype(jnp.float32)
  feats = jnp.zeros((n_feat,), jnp.float32)
  for tl, pos, dec, sl in decoders:
    feats = feats.at[sl].add(jnp.sum(g_mlp[tl, pos] * dec, -1))
  err = jnp.sum(rep.error * g_mlp, -1).reshape(-1)
  return jnp.concatenate([feats, err, jnp.sum(rep.embed * g_embed, -1)])


@functools.lru_cache(maxsize=16)
def _edge_program(cfg: TransformerConfig, tc_cfg: tc.TranscoderConfig, counts: tuple,
                  chunk: int, mesh, precision: Precision = FLOAT32):
  def program(params, tc_params, rep, f_pos, f_feat, f_act, t):
    # The linear model in the compute dtype; the decoder vectors below stay float32.
    cp, ctc = transformer.cast_params(params, precision), precision.cast_compute(tc_params)
    fwd = lambda e, m: gl.linear_forward(cfg, cp, tc_cfg, ctc, rep.frozen, e, m)
    (x_in, final), vjp = jax.vjp(fwd, *precision.cast_compute((rep.embed, rep.mlp)))
    decoders = decoder_vectors(tc_cfg, tc_params, counts, f_pos, f_feat, f_act)

    def row(i):
      vec, logit = t.vec[i].astype(x_in.dtype), t.is_logit[i]
      cot_x = jnp.zeros_like(x_in).at[t.layer[i], t.pos[i]].set(jnp.where(logit, 0.0, vec))
      cot_f = jnp.zeros_like(final).at[t.pos[i]].set(jnp.where(logit, vec, 0.0))
      return source_dots(decoders, rep, *vjp((cot_x, cot_f)))

    return map_sites(row, jnp.arange(t.layer.shape[0]), chunk, mesh)

  return jax.jit(program)


def edge_rows(cfg: TransformerConfig, params: dict, tc_cfg: tc.TranscoderConfig,
              tc_params: dict, rep: gl.Replacement, active: dict, targets: Targets,
              chunk: int = 16, mesh=None, precision: Precision | str | None = None) -> np.ndarray:
  """Every source's edge weight into each target.

  Args:
    cfg, params, tc_cfg, tc_params: the model and transcoder.
    rep: the prompt's `Replacement`; active: its `active_features`.
    targets: the rows to compute.
    chunk: targets per vmapped VJP batch (bounds memory); mesh: splits each chunk over `data`.
    precision: the policy of the replacement model's forward and VJPs (None: float32).
  Returns:
    float32 [T, F + L*p + p], columns in source order (module doc).
  """
  if mesh is not None:
    chunk = -(-chunk // mesh.shape["data"]) * mesh.shape["data"]
  n = len(targets.layer)
  pad = -(-n // chunk) * chunk - n
  t = Targets(*(np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in targets))
  # One chunk per call: every call has the same shapes, so one compiled program serves the
  # logit rows and every greedy round of feature rows.
  prog = _edge_program(cfg, tc_cfg, _counts(active, cfg.n_layers), chunk, mesh,
                       as_precision(precision))
  f_args = tuple(jnp.asarray(active[k]) for k in ("pos", "feature", "act"))
  out = [prog(params, tc_params, rep, *f_args, Targets(*(jnp.asarray(a[i:i + chunk]) for a in t)))
         for i in range(0, n + pad, chunk)]
  return np.concatenate([np.asarray(o) for o in out])[:n]


@functools.partial(jax.jit, static_argnums=(0, 2))
def _bias_readouts(cfg, params, tc_cfg, tc_params, rep):
  return gl.linear_forward(cfg, params, tc_cfg, tc_params, rep.frozen,
                           jnp.zeros_like(rep.embed), rep.bias_mlp)


def target_bias(cfg: TransformerConfig, params: dict, tc_cfg: tc.TranscoderConfig,
                tc_params: dict, rep: gl.Replacement, targets: Targets) -> np.ndarray:
  """Each target's value with every source set to zero (only `rep.bias_mlp` injected): [T]."""
  x_in, final = _bias_readouts(cfg, params, tc_cfg, tc_params, rep)
  return _read(np.asarray(x_in), np.asarray(final), targets)


def target_values(rep: gl.Replacement, targets: Targets) -> np.ndarray:
  """Each target's value in the real forward pass: [T]."""
  return _read(np.asarray(rep.x_in), np.asarray(rep.final), targets)


def _read(x_in, final, t: Targets) -> np.ndarray:
  at = np.where(t.is_logit[:, None], final[t.pos], x_in[t.layer, t.pos])
  return (np.sum(at * t.vec, -1) + t.const).astype(np.float32)


def select_features(rows_for, active: dict, logit_rows: np.ndarray, logit_probs, n_layers: int,
                    max_nodes: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
  """Feature targets chosen greedily by estimated influence on the logits (circuit-tracer).

  Each round propagates the logits' probability weights back through the |rows| computed so
  far (row-normalised) and computes rows for the `batch` unvisited features of most influence.

  Args:
    rows_for: index array into `active` -> their edge rows [k, S].
    active: the active features; logit_rows [K, S]; logit_probs [K].
    n_layers: bounds the path length; max_nodes: features to select; batch: per round.
  Returns:
    (selected feature indices, sorted; their rows [len, S]).
  """
  n_feat = len(active["layer"])
  if n_feat <= max_nodes:
    index = np.arange(n_feat)
    return index, rows_for(index) if n_feat else np.zeros((0, logit_rows.shape[1]), np.float32)
  norm = lambda r: np.abs(r) / np.maximum(np.abs(r).sum(1, keepdims=True), 1e-10)
  visited, rows = np.zeros(0, int), np.zeros((0, logit_rows.shape[1]), np.float32)
  logit_n = norm(logit_rows)
  while len(visited) < max_nodes:
    cur = logit_probs @ logit_n
    total = cur.copy()
    feat_n = norm(rows)
    for _ in range(n_layers + 1):
      cur = cur[visited] @ feat_n
      total += cur
    score = total[:n_feat].copy()
    score[visited] = -np.inf
    take = np.argsort(-score, kind="stable")[:min(batch, max_nodes - len(visited))]
    visited = np.concatenate([visited, take])
    rows = np.concatenate([rows, rows_for(take)])
  order = np.argsort(visited)
  return visited[order], rows[order]
