"""A forward pass over the edge graph: every edge can be patched on its own, in one pass.

Written over the same parameter pytree as `interp.models.transformer` (float32), but with the
residual stream kept as its summands: the input of receiver r is

  in_r = bias_r + sum_u valid[u, r] * (mask[u, r] * out_u + (1 - mask[u, r]) * source_u)
         + delta_r

where out_u is upstream node u's output in *this* run, source_u its output in the corrupted
(or mean) run and delta_r an optional additive probe (zeros; its gradient is d metric / d in_r,
which edge attribution patching reads). bias_r collects the constants every run shares (GPT-2's
per-layer b_O, a post-norm's LayerNorm bias). With mask = 1 everywhere this is the model's own
forward (tests check it against `transformer.forward`); with mask = 0 every receiver reads the
source run, so the logits are the source run's.

Norms: each receiver's pre-norm (ln1, ln2, ln_final, and Gemma's q/k norms) stays inside the
receiving node and is recomputed from its patched input. Gemma's post-norm on the attention
output belongs to the upstream heads: the layer's RMS scale is computed from the sum of its
heads' outputs in the current run, and each head's output is its own W_O term divided by that
shared scale (times the gain), so the heads' outputs sum exactly to hook_attn_out. The MLP's
post-norm is inside the MLP node. Grouped K/V: a key or value receiver per K/V head.

Precision (`interp.precision`): parameters, the residual stream and upstream outputs are in the
policy's compute dtype; matrix products accumulate in float32; norms and softmax compute in
float32; logits are float32. The default (float32) runs exactly the float32 program.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from interp.discovery.graph import EdgeGraph
from interp.models.config import Activation, MLPType, NormType, PositionalType
from interp.models.transformer import rope, softcap_logits
from interp.precision import FLOAT32, as_precision

F32 = jnp.float32


def _mm(prec, spec, a, b, output=False):
  """einsum in the compute dtype with float32 accumulation (plain einsum under float32).

  Every product here has its batch axes (head, prompt) leading both operands, a layout the
  CPU's native bfloat16 kernels take, so bfloat16 operands are not widened to float32 there
  (`interp.precision._widen_on_cpu`), in the forward pass or the backward (`_low_mm`)."""
  if prec.is_float32:
    return jnp.einsum(spec, a, b)
  return _low_mm(spec, jnp.dtype(prec.output_dtype if output else prec.compute_dtype), a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _low_mm(spec, out_dtype, a, b):
  """`spec`'s product of two compute-dtype operands, summed in float32, returned in out_dtype.

  The backward pass casts the cotangent to the operands' dtype, so its two transposed products
  are compute-dtype products too. JAX's own rule would multiply a float32 cotangent by a
  bfloat16 operand, which widens both and runs the slow float32 kernel on the CPU; on the
  Gemma 3 270M EAP-IG benchmark that was about half of a bfloat16 call. Valid for specs in which
  every index of an operand also appears in the other operand or the output (all here).
  """
  return jnp.einsum(spec, a, b, preferred_element_type=F32).astype(out_dtype)


def _low_mm_fwd(spec, out_dtype, a, b):
  return _low_mm(spec, out_dtype, a, b), (a, b)


def _low_mm_bwd(spec, out_dtype, residuals, g):
  a, b = residuals
  operands, out = spec.split("->")
  x, y = operands.split(",")
  g = g.astype(a.dtype)
  ga = jnp.einsum(f"{out},{y}->{x}", g, b, preferred_element_type=F32).astype(a.dtype)
  gb = jnp.einsum(f"{x},{out}->{y}", a, g, preferred_element_type=F32).astype(b.dtype)
  return ga, gb


_low_mm.defvjp(_low_mm_fwd, _low_mm_bwd)


def _norm(cfg, p, x, axis_mean=True):
  """The model's Norm over the last axis (LayerNorm or RMSNorm with the config's offset)."""
  if cfg.norm == NormType.NONE:
    return x
  dtype, x = x.dtype, x.astype(F32)
  if cfg.norm == NormType.LAYERNORM:
    x = x - x.mean(-1, keepdims=True)
  y = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + cfg.norm_eps)
  y = y * (cfg.norm_offset + p["w"].astype(F32))
  return (y + p["b"].astype(F32) if cfg.norm == NormType.LAYERNORM else y).astype(dtype)


def _act(kind, x):
  if kind == Activation.RELU:
    return jax.nn.relu(x)
  return jax.nn.gelu(x, approximate=(kind == Activation.GELU_TANH))


def _post_norm_heads(cfg, p, r):
  """Gemma's attention post-norm split over heads: r [h b p d] -> outputs [h b p d], bias [d]."""
  dtype, r = r.dtype, r.astype(F32)
  if cfg.norm == NormType.LAYERNORM:
    r = r - r.mean(-1, keepdims=True)
  total = r.sum(0)
  scale = jnp.sqrt(jnp.mean(total * total, -1, keepdims=True) + cfg.norm_eps)
  out = (r / scale * (cfg.norm_offset + p["w"].astype(F32))).astype(dtype)
  bias = p["b"] if cfg.norm == NormType.LAYERNORM else jnp.zeros_like(p["w"])
  return out, bias


def _heads(graph: EdgeGraph, local, base, p, xq, xk, xv, prec=FLOAT32):
  """Per-head attention outputs [h b p d] (before any post-norm) from per-receiver inputs.

  xq [h b p d]; xk, xv [g b p d] (one per K/V head) or [h b p d] when q/k/v are not split.
  Head-major throughout (`prepare`'s weight layout), so every product batches over (head,
  prompt) with no transposes. local (bool) and base (the RoPE base) are traced: every layer
  runs as one scanned body.
  """
  cfg = graph.cfg
  h, g = cfg.n_heads, cfg.n_kv_heads
  a = p["attn"]
  w_k, w_v = a["W_K"], a["W_V"]  # [g d e]
  kv = xk.shape[0]
  rep = lambda w: w if kv == g else jnp.repeat(w, h // g, axis=0)
  # unsplit: each query head reads its own input through its K/V head's weights
  w_k, w_v = rep(w_k), rep(w_v)
  ln = lambda x: _norm(cfg, p["ln1"], x) if "ln1" in p else x
  q = _mm(prec, "nbpd,nde->nbpe", ln(xq), a["W_Q"])
  k = _mm(prec, "nbpd,nde->nbpe", ln(xk), w_k)
  v = _mm(prec, "nbpd,nde->nbpe", ln(xv), w_v)
  if cfg.attn_bias:
    per_head = lambda b: b[:, None, None, :]
    q, k, v = q + per_head(a["b_Q"]), k + per_head(rep(a["b_K"])), v + per_head(rep(a["b_V"]))
  if cfg.qk_norm:
    q, k = _norm(cfg, a["q_norm"], q), _norm(cfg, a["k_norm"], k)
  if cfg.smear_keys:
    s = jax.nn.sigmoid(rep(a["smear"]))[:, None, None, None]
    k = s * k + (1 - s) * jnp.concatenate([k[:, :, :1], k[:, :, :-1]], axis=2)
  if cfg.positional == PositionalType.ROPE:
    q, k = rope(q, base, pos_axis=2), rope(k, base, pos_axis=2)
  if kv != h:
    k, v = jnp.repeat(k, h // kv, axis=0), jnp.repeat(v, h // kv, axis=0)
  n = q.shape[2]
  scores = _mm(prec, "nbpe,nbse->nbps", q * cfg.query_scale, k, output=True)  # float32
  pos = jnp.arange(n)
  causal = pos[None, :] <= pos[:, None]
  if cfg.sliding_window is not None:
    causal = causal & (~local | (pos[:, None] - pos[None, :] < cfg.sliding_window))
  scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
  z = _mm(prec, "nbps,nbse->nbpe", jax.nn.softmax(scores, -1).astype(v.dtype), v)
  return _mm(prec, "nbpe,ned->nbpd", z, a["W_O"])


def _mlp(cfg, p, x, prec=FLOAT32):
  m = p["mlp"]
  x = _norm(cfg, p["ln2"], x) if "ln2" in p else x
  pre = _mm(prec, "bpd,df->bpf", x, m["W_in"])
  if cfg.mlp_bias:
    pre = pre + m["b_in"]
  post = (_act(cfg.act, _mm(prec, "bpd,df->bpf", x, m["W_gate"])) * pre
          if cfg.mlp == MLPType.GATED else _act(cfg.act, pre))
  out = _mm(prec, "bpf,fd->bpd", post, m["W_out"])
  if cfg.mlp_bias:
    out = out + m["b_out"]
  return _norm(cfg, p["ln2_post"], out) if cfg.post_norms else out


def embed(cfg, params, tokens):
  """The embed node's output [b p d]: token embedding (scaled for Gemma) plus learned positions."""
  x = jnp.take(params["embed"]["W_E"], tokens, axis=0)
  if cfg.embed_scale:
    x = x * jnp.asarray(cfg.d_model ** 0.5, x.dtype)
  if cfg.positional == PositionalType.LEARNED:
    x = x + params["pos_embed"]["W_pos"][: tokens.shape[1]]
  return x


def _unembed(cfg, params, x, logits_at, prec=FLOAT32, columns=None):
  """Logits [b k v], or [b k c] for only the vocabulary `columns` int [b c] of each prompt."""
  if cfg.norm != NormType.NONE:
    x = _norm(cfg, params["ln_final"], x)
  if logits_at is not None:
    x = jnp.take_along_axis(x, logits_at[:, :, None], axis=1)
  if columns is not None:  # a [b c d] slice of the unembedding instead of all of it
    w = (jnp.take(params["embed"]["W_E"], columns, axis=0) if cfg.tied_embeddings
         else jnp.moveaxis(jnp.take(params["unembed"]["W_U"], columns, axis=1), 0, -1))
    logits = _mm(prec, "bkd,bcd->bkc", x, w.astype(x.dtype), output=True)
    if not cfg.tied_embeddings and cfg.unembed_bias:
      logits = logits + jnp.take(params["unembed"]["b_U"], columns)[:, None].astype(F32)
  elif cfg.tied_embeddings:
    logits = _mm(prec, "bkd,vd->bkv", x, params["embed"]["W_E"].astype(x.dtype), output=True)
  else:
    logits = _mm(prec, "bkd,dv->bkv", x, params["unembed"]["W_U"].astype(x.dtype), output=True)
    if cfg.unembed_bias:
      logits = logits + params["unembed"]["b_U"].astype(logits.dtype)
  return softcap_logits(cfg, logits)


def _attention(graph: EdgeGraph, local, base, p, x, prec):
  """One layer's heads from its attention receivers' inputs x [n_attn b p d] (q, k, v rows when
  split): the per-head outputs [h b p d] and the bias the layer adds to the residual after them
  (the post-norm's share and b_O; 0 where neither exists)."""
  cfg, h = graph.cfg, graph.cfg.n_heads
  if graph.split_qkv:
    xq, xk, xv = x[:h], x[h:h + cfg.n_kv_heads], x[h + cfg.n_kv_heads:]
  else:
    xq = xk = xv = x
  r = _heads(graph, local, base, p, xq, xk, xv, prec)
  bias = 0.0
  if cfg.post_norms:
    r, bias = _post_norm_heads(cfg, p["ln1_post"], r)
  if cfg.attn_bias:
    bias = bias + p["attn"]["b_O"]
  return r, bias


def prepare(cfg, params, precision=None) -> dict:
  """The parameters as the edge forward reads them (`run` and `run_uniform` take either).

  Floating leaves in the policy's compute dtype; the blocks stacked on a leading layer axis
  under "blocks" (the scanned body's per-layer slices); W_Q, W_K and W_V head-major [L n d e],
  so that each head's product and its gradient batch over (head, prompt) without transposing a
  weight. Measured on Gemma 3 270M's shapes (EAP-IG, one integration point, 16 x 16 tokens,
  2 CPU cores): stacking inside every call took ~0.5 s and per-layer weight transposes in the
  backward pass ~0.9 s of a ~4 s point; a caller that scores many times prepares once.
  Already prepared parameters are returned unchanged.
  """
  if "blocks" in params:
    return params
  prec = as_precision(precision)
  # The vocabulary tables stay as given: only the rows a run reads (its tokens, the metric's
  # columns) are cast, not a 262k x 640 table per call (~0.4 s on the CPU).
  tables = {k: params[k] for k in ("embed", "unembed") if k in params}
  params = params if prec.is_float32 else {**prec.cast_compute(params), **tables}
  blocks = jax.tree.map(lambda *xs: jnp.stack(xs),
                        *[params[f"blocks_{i}"] for i in range(cfg.n_layers)])
  attn = dict(blocks["attn"])
  for name in ("W_Q", "W_K", "W_V"):
    attn[name] = jnp.moveaxis(attn[name], 2, 1)  # [L d n e] -> [L n d e]
  rest = {k: v for k, v in params.items() if not k.startswith("blocks_")}
  return {**rest, "blocks": {**blocks, "attn": attn}}


def _start(graph: EdgeGraph, params, tokens, embed_out, precision):
  """(policy, prepared parameters, the embed node's output in the compute dtype)."""
  prec = as_precision(precision)
  params = prepare(graph.cfg, params, prec)
  x0 = embed(graph.cfg, params, tokens) if embed_out is None else embed_out
  return prec, params, x0.astype(prec.compute_dtype)


def _layer_kinds(cfg):
  """Per layer: whether it is a local (sliding-window) layer, and its RoPE base."""
  layers = range(cfg.n_layers)
  local = jnp.array([cfg.is_local(i) for i in layers])
  base = jnp.array([cfg.rope_local_base if cfg.is_local(i) else cfg.rope_base for i in layers],
                   jnp.float32)
  return local, base


def run(graph: EdgeGraph, params, tokens, source, mask=None, deltas=None, logits_at=None,
        embed_out=None, precision=None, columns=None):
  """The edge-patched forward.

  Args:
    graph: the model's `EdgeGraph` (its config is the model's).
    params: the model's float32 parameters, or `prepare`'s.
    tokens: int [b p], the base run's tokens.
    source: [n_up b p d] (or [n_up 1 p d], a mean) upstream outputs patched in where mask is 0.
    mask: float [n_up n_recv], 1 = edge clean (default: all clean).
    deltas: optional [n_recv b p d] added to each receiver's input.
    logits_at: optional int [b k]: unembed only these positions.
    embed_out: optional [b p d] replacing the embed node's output (integrated gradients
      along the inputs).
    precision: an `interp.precision` policy or its name (default float32).
    columns: optional int [b c]: compute only these vocabulary columns of each prompt's logits
      (a logit-difference metric reads two; the whole unembedding is the costliest product).

  Returns:
    (logits [b p v], [b k v] or [b k c], outs [n_up b p d]: every upstream node's output).
  """
  cfg = graph.cfg
  prec, params, x0 = _start(graph, params, tokens, embed_out, precision)
  b, n = tokens.shape
  valid = jnp.asarray(graph.valid, x0.dtype)
  mask = jnp.ones_like(valid) if mask is None else jnp.asarray(mask, x0.dtype)
  deltas = None if deltas is None else deltas.astype(x0.dtype)
  keep, swap = valid * mask, valid * (1 - mask)
  source = jnp.broadcast_to(source, (graph.n_up, b, n, cfg.d_model)).astype(x0.dtype)
  outs = source.at[0].set(x0)
  bias = jnp.zeros((cfg.d_model,), x0.dtype)
  h, n_attn = cfg.n_heads, graph.n_attn_recv
  per_up, per_recv = graph.per_layer_up, graph.per_layer_recv

  def inputs(outs, bias, r0, n_recv):
    """Inputs [n_recv b p d] of receivers r0.. (later nodes' edges are invalid, so reading
    every upstream row is exact)."""
    k = jax.lax.dynamic_slice_in_dim(keep, r0, n_recv, 1)
    w = jax.lax.dynamic_slice_in_dim(swap, r0, n_recv, 1)
    x = jnp.einsum("ur,ubpd->rbpd", k, outs) + jnp.einsum("ur,ubpd->rbpd", w, source) + bias
    return x if deltas is None else x + jax.lax.dynamic_slice_in_dim(deltas, r0, n_recv, 0)

  def layer_fn(carry, xs):
    # One body for every layer (a scan), so compile time does not grow with depth.
    outs, bias = carry
    layer, local, base, p = xs
    u0, r0 = 1 + layer * per_up, layer * per_recv
    r, attn_bias = _attention(graph, local, base, p, inputs(outs, bias, r0, n_attn), prec)
    bias = bias + attn_bias
    outs = jax.lax.dynamic_update_slice_in_dim(outs, r, u0, 0)
    if cfg.has_mlp:
      m = _mlp(cfg, p, prec=prec, x=inputs(outs, bias, r0 + n_attn, 1)[0])
      outs = jax.lax.dynamic_update_slice_in_dim(outs, m[None], u0 + h, 0)
    return (outs, bias), None

  local, base = _layer_kinds(cfg)
  (outs, bias), _ = jax.lax.scan(layer_fn, (outs, bias),
                                 (jnp.arange(cfg.n_layers), local, base, params["blocks"]))
  final = inputs(outs, bias, graph.n_recv - 1, 1)[0]
  return _unembed(cfg, params, final, logits_at, prec, columns), outs


def run_uniform(graph: EdgeGraph, params, tokens, source, alpha=None, deltas=None,
                logits_at=None, embed_out=None, precision=None, columns=None):
  """`run` with the same mask value `alpha` on every valid edge (None: 1), computed as the
  model's own forward: the fast path of EAP and EAP-IG, which only ever use such masks.

  Why: with a uniform mask every receiver of a layer reads
    in_r = bias + alpha * resid(this run) + (1 - alpha) * resid(source) + delta_r,
  where resid is the running sum of the upstream outputs written so far, so two [b p d]
  running sums replace `run`'s einsum over the whole [n_up b p d] stack of outputs for every
  receiver (and its [n_up b p d] scan carry, whose per-layer copies the backward pass keeps).
  Measured at the GPT-2 small shape (12 layers, 157 upstream nodes, 4 x 16 tokens, EAP-IG
  m = 8, 2 shared CPU cores): the scoring call went from 18-21 s through `run` to 3.5-5 s
  through this, and XLA's temporaries from 845 MiB to 792 MiB (585 MiB once the integration
  points are summed in a scan, `scores._integrate`). The rest is not yet broken down; the
  largest candidate is the per-head copies of the residual stream the backward pass keeps
  (each head's input is its own receiver, so its own [h b p d] norm inputs).

  Args and Returns: as `run`, with `alpha` a scalar (traced or not) instead of `mask`.
  """
  cfg = graph.cfg
  prec, params, x0 = _start(graph, params, tokens, embed_out, precision)
  b, n = tokens.shape
  h, per_up, per_recv, n_attn = cfg.n_heads, graph.per_layer_up, graph.per_layer_recv, \
      graph.n_attn_recv
  L, d = cfg.n_layers, cfg.d_model
  source = jnp.asarray(source, x0.dtype)
  src_layers = source[1:].reshape((L, per_up) + source.shape[1:])
  if deltas is None:
    deltas = jnp.zeros((graph.n_recv, 1, 1, d), x0.dtype)
  deltas = deltas.astype(x0.dtype)
  alpha = None if alpha is None else jnp.asarray(alpha, x0.dtype)
  d_layers = deltas[:-1].reshape((L, per_recv) + deltas.shape[1:])

  def mix(resid, src, bias):
    return resid + bias if alpha is None else alpha * resid + (1 - alpha) * src + bias

  def layer_fn(carry, xs):
    resid, src, bias = carry
    local, base, p, src_l, d_l = xs
    r, attn_bias = _attention(graph, local, base, p, mix(resid, src, bias)[None] + d_l[:n_attn],
                              prec)
    bias = bias + attn_bias
    resid, src = resid + r.sum(0), src + src_l[:h].sum(0)
    ys = r
    if cfg.has_mlp:
      m = _mlp(cfg, p, prec=prec, x=mix(resid, src, bias) + d_l[n_attn])
      resid, src = resid + m, src + src_l[h]
      ys = jnp.concatenate([r, m[None]], 0)
    return (resid, src, bias), ys

  local, base = _layer_kinds(cfg)
  carry = (x0, source[0], jnp.zeros((d,), x0.dtype))
  (resid, src, bias), ys = jax.lax.scan(layer_fn, carry, (local, base, params["blocks"],
                                                           src_layers, d_layers))
  final = mix(resid, src, bias) + deltas[-1]
  outs = jnp.concatenate([x0[None], ys.reshape((L * per_up, b, n, d))], 0)
  return _unembed(cfg, params, final, logits_at, prec, columns), outs


def outputs(graph: EdgeGraph, params, tokens) -> jax.Array:
  """Every upstream node's output [n_up b p d] on `tokens` (an unpatched run)."""
  zeros = jnp.zeros((graph.n_up, 1, tokens.shape[1], graph.cfg.d_model), jnp.float32)
  first = jnp.zeros((tokens.shape[0], 1), jnp.int32)  # the logits are not needed: one position
  return jax.jit(lambda p, t, z, at: run_uniform(graph, p, t, z, logits_at=at)[1])(
      params, tokens, zeros, first)
