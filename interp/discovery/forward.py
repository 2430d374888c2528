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
import os

import jax
import jax.numpy as jnp

from interp.discovery.graph import EdgeGraph
from interp.models.config import Activation, MLPType, NormType, PositionalType
from interp.models.transformer import rope, softcap_logits
from interp.precision import FLOAT32, as_precision

F32 = jnp.float32


# XLA:CPU hands elementwise and reduction fusions, not only dots, to its YNNPACK library by
# default. On the edge forward's backward pass those (per-head norm VJPs, sums over heads) ran
# several times slower than XLA's own loops: at the GPT-2 small shape (EAP-IG, m = 8, 4 x 16
# tokens, 2 cores) the call took 2.5 s with every fusion kind there and 1.8 s with dots only.
# The option is CPU-only and experimental, so it is asked for only on the CPU, only where the
# user's XLA_FLAGS does not set it, and only if this XLA accepts it (`compiler_options`).
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.cache
def compiler_options() -> dict | None:
  """What the discovery programs pass to `jax.jit(compiler_options=...)`: None, or on the CPU
  the option above (after checking once that this XLA knows it)."""
  if jax.default_backend() != "cpu" or "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
    return None
  try:
    jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(jnp.float32(0)).compile()
  except Exception:  # noqa: BLE001 (an XLA without the option: compile as XLA chooses)
    return None
  return dict(_CPU_OPTIONS)


def jit(fn, **kwargs):
  """`jax.jit` with `compiler_options()`."""
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


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


def _post_norm_heads(cfg, p, r, total):
  """Gemma's attention post-norm split over heads: the heads' outputs r [h b p d] (or None) and
  their sum `total` [b p d] -> (outputs [h b p d] or None, their sum [b p d], bias [d])."""
  dtype, gain = total.dtype, cfg.norm_offset + p["w"].astype(F32)
  center = ((lambda x: x - x.mean(-1, keepdims=True)) if cfg.norm == NormType.LAYERNORM
            else (lambda x: x))
  total = center(total.astype(F32))
  scale = jnp.sqrt(jnp.mean(total * total, -1, keepdims=True) + cfg.norm_eps)
  out = None if r is None else (center(r.astype(F32)) / scale * gain).astype(dtype)
  bias = p["b"] if cfg.norm == NormType.LAYERNORM else jnp.zeros_like(p["w"])
  return out, (total / scale * gain).astype(dtype), bias


def _heads(graph: EdgeGraph, local, base, p, xq, xk, xv, prec=FLOAT32):
  """Per-head attention patterns' mixes z [h b p e] (before W_O) from per-receiver inputs.

  xq [h b p d]; xk, xv [g b p d] (one per K/V head) or [h b p d] when q/k/v are not split.
  Head-major throughout (`prepare`'s weight layout), so every product batches over (head,
  prompt) with no transposes. local (bool) and base (the RoPE base) are the layer's, static.
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
  # Unsplit, q, k and v read one input: normed once, so the backward pass runs one norm VJP on
  # the summed cotangent, not three (each a per-head reduction over d_model; at the GPT-2 shape
  # the three took ~0.6 s of a ~3.3 s EAP-IG call).
  yq = ln(xq)
  yk = yq if xk is xq else ln(xk)
  yv = yq if xv is xq else ln(xv)
  q = _mm(prec, "nbpd,nde->nbpe", yq, a["W_Q"])
  k = _mm(prec, "nbpd,nde->nbpe", yk, w_k)
  v = _mm(prec, "nbpd,nde->nbpe", yv, w_v)
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
  if cfg.sliding_window is not None and local:
    causal = causal & (pos[:, None] - pos[None, :] < cfg.sliding_window)
  scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
  return _mm(prec, "nbps,nbse->nbpe", jax.nn.softmax(scores, -1).astype(v.dtype), v)


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


def _attention(graph: EdgeGraph, local, base, p, x, prec, per_head=True):
  """One layer's heads from its attention receivers' inputs x [n_attn b p d] (q, k, v rows when
  split): the per-head outputs [h b p d] (None unless `per_head`), their sum [b p d], and the
  bias the layer adds to the residual after them (the post-norm's share and b_O; 0 where
  neither exists).

  The sum is one product contracting heads and head dimension together, not a sum of the
  per-head products: h products with an inner dimension of d_head, each writing a d_model-wide
  output, then a reduction over heads, cost ~0.3 s of a ~2.5 s EAP-IG call at the GPT-2 shape.
  A caller that needs only the residual stream (EAP-IG's points along the inputs) asks for no
  per-head outputs, and XLA drops their product."""
  cfg, h = graph.cfg, graph.cfg.n_heads
  if graph.split_qkv:
    xq, xk, xv = x[:h], x[h:h + cfg.n_kv_heads], x[h + cfg.n_kv_heads:]
  else:
    xq = xk = xv = x
  z = _heads(graph, local, base, p, xq, xk, xv, prec)
  w_o = p["attn"]["W_O"]
  r = _mm(prec, "nbpe,ned->nbpd", z, w_o) if per_head else None
  total = _mm(prec, "nbpe,ned->bpd", z, w_o)
  bias = 0.0
  if cfg.post_norms:
    r, total, bias = _post_norm_heads(cfg, p["ln1_post"], r, total)
  if cfg.attn_bias:
    bias = bias + p["attn"]["b_O"]
  return r, total, bias


def prepare(cfg, params, precision=None) -> dict:
  """The parameters as the edge forward reads them (`run` and `run_uniform` take either).

  Floating leaves in the policy's compute dtype; the blocks as a list under "layers", one dict
  per layer, with W_Q, W_K and W_V head-major [n d e], so that each head's product and its
  gradient batch over (head, prompt) without transposing a weight. The layers are a Python
  loop, not a scan over stacked weights: a scanned body slices (copies) each layer's weights
  out of the stack at every call, forward and backward, inside every integration point. At the
  GPT-2 small shape (EAP-IG, m = 8, 4 x 16 tokens, 2 CPU cores) those copies took ~0.75 s of a
  ~3.3 s call; the price is compile time that grows with depth (2.0 s -> 3.8 s there).
  A caller that scores many times prepares once (the transposes, and the casts under a
  low-precision policy). Already prepared parameters are returned unchanged.
  """
  if "layers" in params:
    return params
  prec = as_precision(precision)
  # The vocabulary tables stay as given: only the rows a run reads (its tokens, the metric's
  # columns) are cast, not a 262k x 640 table per call (~0.4 s on the CPU).
  tables = {k: params[k] for k in ("embed", "unembed") if k in params}
  params = params if prec.is_float32 else {**prec.cast_compute(params), **tables}
  layers = []
  for i in range(cfg.n_layers):
    block = dict(params[f"blocks_{i}"])
    attn = dict(block["attn"])
    for name in ("W_Q", "W_K", "W_V"):
      attn[name] = jnp.moveaxis(attn[name], 1, 0)  # [d n e] -> [n d e]
    layers.append({**block, "attn": attn})
  rest = {k: v for k, v in params.items() if not k.startswith("blocks_")}
  return {**rest, "layers": layers}


def _start(graph: EdgeGraph, params, tokens, embed_out, precision):
  """(policy, prepared parameters, the embed node's output in the compute dtype)."""
  prec = as_precision(precision)
  params = prepare(graph.cfg, params, prec)
  x0 = embed(graph.cfg, params, tokens) if embed_out is None else embed_out
  return prec, params, x0.astype(prec.compute_dtype)


def _layer_kind(cfg, layer):
  """(whether `layer` is a local (sliding-window) layer, its RoPE base)."""
  local = cfg.is_local(layer)
  return local, (cfg.rope_local_base if local else cfg.rope_base)


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
    k, w = keep[:, r0:r0 + n_recv], swap[:, r0:r0 + n_recv]
    x = jnp.einsum("ur,ubpd->rbpd", k, outs) + jnp.einsum("ur,ubpd->rbpd", w, source) + bias
    return x if deltas is None else x + deltas[r0:r0 + n_recv]

  for layer, p in enumerate(params["layers"]):  # unrolled: see `prepare`
    u0, r0 = 1 + layer * per_up, layer * per_recv
    local, base = _layer_kind(cfg, layer)
    r, _, attn_bias = _attention(graph, local, base, p, inputs(outs, bias, r0, n_attn), prec)
    bias = bias + attn_bias
    outs = outs.at[u0:u0 + h].set(r)
    if cfg.has_mlp:
      m = _mlp(cfg, p, prec=prec, x=inputs(outs, bias, r0 + n_attn, 1)[0])
      outs = outs.at[u0 + h].set(m)
  final = inputs(outs, bias, graph.n_recv - 1, 1)[0]
  return _unembed(cfg, params, final, logits_at, prec, columns), outs


def run_uniform(graph: EdgeGraph, params, tokens, source, alpha=None, deltas=None,
                logits_at=None, embed_out=None, precision=None, columns=None, per_head=True):
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
  points are summed in a scan, `scores._integrate`). Then (XLA profile of the EAP-IG call
  along the inputs, same shape, quiet machine) 3.25 s -> 1.69 s: unrolled layers without
  weight copies (`prepare`), one norm per layer's shared head input (`_heads`), the heads'
  sum as one product (`_attention`) and dot-only library fusions (`compiler_options`). Of
  what is left, ~1.3 s is the matrix products, forward and backward: the per-head ones (each
  head's input is its own receiver) run below the merged products' rate.

  Args and Returns: as `run`, with `alpha` a scalar (traced or not) instead of `mask`,
  `deltas` also as `layer_deltas`' per-layer list, and `per_head=False` to skip the upstream
  outputs (returned as None) where only the logits and their gradients are needed.
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
  if isinstance(deltas, (list, tuple)):  # already per layer (`layer_deltas`)
    d_layers, d_final = [x.astype(x0.dtype) for x in deltas[:-1]], deltas[-1].astype(x0.dtype)
  else:
    deltas = deltas.astype(x0.dtype)
    d_layers = [deltas[i * per_recv:(i + 1) * per_recv] for i in range(L)]
    d_final = deltas[-1]
  alpha = None if alpha is None else jnp.asarray(alpha, x0.dtype)

  def mix(resid, src, bias):
    return resid + bias if alpha is None else alpha * resid + (1 - alpha) * src + bias

  resid, src, bias = x0, source[0], jnp.zeros((d,), x0.dtype)
  ys = [x0[None]]
  for layer, p in enumerate(params["layers"]):  # unrolled: see `prepare`
    local, base = _layer_kind(cfg, layer)
    src_l, d_l = src_layers[layer], d_layers[layer]
    r, total, attn_bias = _attention(graph, local, base, p,
                                     mix(resid, src, bias)[None] + d_l[:n_attn], prec, per_head)
    bias = bias + attn_bias
    resid, src = resid + total, src + src_l[:h].sum(0)
    ys.append(r)
    if cfg.has_mlp:
      m = _mlp(cfg, p, prec=prec, x=mix(resid, src, bias) + d_l[n_attn])
      resid, src = resid + m, src + src_l[h]
      ys.append(m[None])
  final = mix(resid, src, bias) + d_final
  outs = jnp.concatenate(ys, 0) if per_head else None
  return _unembed(cfg, params, final, logits_at, prec, columns), outs


def layer_deltas(graph: EdgeGraph, tokens, dtype) -> list:
  """Zero receiver probes as `run_uniform` reads them: one [per_layer_recv b p d] array per
  layer, then the logits' [b p d] (`stack_deltas` turns such a list, or its gradient, into the
  [n_recv b p d] layout).

  Why a list: differentiating through slices of one [n_recv b p d] array makes its gradient a
  sum of n_recv zero-padded full-size pieces; in bfloat16 (a convert between the pad and the
  add) XLA did not turn that into a concatenation, and on Gemma 3 270M's shapes (EAP-IG,
  16 x 16 tokens) those sums took 2.0 s of a 4.8 s call."""
  shape = tokens.shape + (graph.cfg.d_model,)
  return ([jnp.zeros((graph.per_layer_recv,) + shape, dtype) for _ in range(graph.cfg.n_layers)]
          + [jnp.zeros(shape, dtype)])


def stack_deltas(per_layer) -> jax.Array:
  """`layer_deltas`' per-layer list (or a gradient with its structure) as one [n_recv b p d]."""
  return jnp.concatenate(list(per_layer[:-1]) + [per_layer[-1][None]], 0)


def outputs(graph: EdgeGraph, params, tokens) -> jax.Array:
  """Every upstream node's output [n_up b p d] on `tokens` (an unpatched run)."""
  zeros = jnp.zeros((graph.n_up, 1, tokens.shape[1], graph.cfg.d_model), jnp.float32)
  first = jnp.zeros((tokens.shape[0], 1), jnp.int32)  # the logits are not needed: one position
  return jit(lambda p, t, z, at: run_uniform(graph, p, t, z, logits_at=at)[1])(
      params, tokens, zeros, first)
