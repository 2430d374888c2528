"""Attention-level evidence per head: where it looks (pattern) and how much it writes (norms).

Head h of layer l, at query position i, writes sum_j a_ij v_j W_O^h into the residual stream
(its `attn.hook_result` [b p h d]), where a_ij is its attention weight (`hook_pattern`) and v_j
the value vector of source j (`hook_v`; with grouped-query attention, kv head h // (h/g)).
The write norm from source j to query i is the norm of that one term,

  |a_ij v_j W_O^h| = a_ij |v_j W_O^h|     (a_ij >= 0 is a scalar),

the "attention weights are not explanations" correction of Kobayashi et al. (2020): a head
can attend strongly to a source whose value vector it maps to almost nothing. |v_j W_O^h| is
computed as sqrt(v_j^T G^h v_j) with G^h = W_O^h W_O^h^T [e e], so no [p d] per-head vector is
materialised.

Post-norms (Gemma, `cfg.post_norms`): the attention output passes through an RMSNorm (or
LayerNorm) over the *sum* of heads before it reaches the residual stream. We measure writes
after it, with its scale frozen at the value on this input: the post-norm is then linear, and
head h's contribution at position i is (centred, for LayerNorm) head_out * (offset + w) / rms_i,
where rms_i is the norm's divisor of the whole attention output at i. These contributions sum
over heads and sources to `hook_attn_out` (less the output bias b_O and a LayerNorm's bias,
which belong to no head). Without post-norms the write is the head's `hook_result` itself.

Precision (`interp.precision`): every function takes `precision=` (default float32, the
unchanged program), the compute dtype of the forward whose patterns, values and hook_z are
read; they are widened to float32 before anything here multiplies or sums them, and W_O is the
float32 parameter, so every norm and weight returned is float32.

Shapes: l layers, b batch, h query heads, p query positions, s source positions, e d_head.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from interp.models import transformer
from interp.models.config import NormType, TransformerConfig
from interp.precision import Precision


class HeadEvidence(NamedTuple):
  """Per head [l h], averaged over the chosen query positions of the batch.

  attention:  total attention weight on the source set, sum_{j in S} a_ij.
  write_norm: |sum_{j in S} a_ij v_j W_O^h|, what the head writes from the source set.
  head_norm:  |sum_j a_ij v_j W_O^h|, everything the head writes.
  A head with high `attention` but low `write_norm` attends to the set and moves little from it.
  """
  attention: jax.Array
  write_norm: jax.Array
  head_norm: jax.Array


def output_map(cfg: TransformerConfig, params, layer: int) -> jax.Array:
  """W_O [h e d] of `layer`, with a post-norm's centring and weight folded in."""
  w_o = params[f"blocks_{layer}"]["attn"]["W_O"].astype(jnp.float32)
  if not cfg.post_norms:
    return w_o
  if cfg.norm == NormType.LAYERNORM:  # centring over d is linear, so it folds into W_O
    w_o = w_o - w_o.mean(-1, keepdims=True)
  w = params[f"blocks_{layer}"]["ln1_post"]["w"].astype(jnp.float32)
  return w_o * (cfg.norm_offset + w)


def post_norm_divisor(cfg: TransformerConfig, params, layer: int, z: jax.Array) -> jax.Array:
  """The post-norm's divisor [b p] on this input (ones without post-norms), from hook_z."""
  if not cfg.post_norms:
    return jnp.ones(z.shape[:2], jnp.float32)
  attn = params[f"blocks_{layer}"]["attn"]
  out = jnp.einsum("bphe,hed->bpd", z.astype(jnp.float32), attn["W_O"].astype(jnp.float32))
  if cfg.attn_bias:
    out = out + attn["b_O"]
  if cfg.norm == NormType.LAYERNORM:
    out = out - out.mean(-1, keepdims=True)
  return jnp.sqrt(jnp.mean(out * out, -1) + cfg.norm_eps)


def _norm(x: jax.Array, gram: jax.Array) -> jax.Array:
  """|x W| for x [b n h e] and gram = W W^T [h e e]: [b n h]."""
  sq = jnp.einsum("bnhe,hef,bnhf->bnh", x, gram, x)
  return jnp.sqrt(jnp.maximum(sq, 0.0))


def _layers(cfg: TransformerConfig, params, tokens, precision=None):
  """Per layer: (pattern [b h p s], v [b s h e] repeated to query heads, gram [h e e],
  post-norm divisor [b p], z [b p h e]), all float32, from a forward under `precision`."""
  names = []
  for l in range(cfg.n_layers):
    names += [f"blocks.{l}.attn.hook_{k}" for k in ("pattern", "v", "z")]
  _, cache = transformer.run_with_cache(cfg, params, tokens, names, precision=precision)
  for l in range(cfg.n_layers):
    pre = f"blocks.{l}.attn.hook_"
    pattern = cache[pre + "pattern"].astype(jnp.float32)
    v = jnp.repeat(cache[pre + "v"].astype(jnp.float32), cfg.n_heads // cfg.n_kv_heads, axis=2)
    w_o = output_map(cfg, params, l)
    gram = jnp.einsum("hed,hfd->hef", w_o, w_o)
    z = cache[pre + "z"].astype(jnp.float32)
    yield pattern, v, gram, post_norm_divisor(cfg, params, l, z), z


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def attention_patterns(cfg: TransformerConfig, params, tokens,
                       precision: Precision | str | None = None) -> jax.Array:
  """Attention weights [l b h p s] of tokens [b p] (float32; the forward under `precision`)."""
  names = [f"blocks.{l}.attn.hook_pattern" for l in range(cfg.n_layers)]
  _, cache = transformer.run_with_cache(cfg, params, tokens, names, precision=precision)
  return jnp.stack([cache[n].astype(jnp.float32) for n in names])


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def write_norms(cfg: TransformerConfig, params, tokens,
                precision: Precision | str | None = None) -> jax.Array:
  """|a_ij v_j W_O^h| for every layer, head, query i and source j: [l b h p s].

  After the frozen post-norm on models that have one (module docstring).
  """
  out = []
  for pattern, v, gram, divisor, _ in _layers(cfg, params, tokens, precision):
    value_norm = _norm(v, gram).transpose(0, 2, 1)  # [b h s]
    out.append(pattern * value_norm[:, :, None, :] / divisor[:, None, :, None])
  return jnp.stack(out)


def _mask(m, b: int, n: int, what: str) -> jax.Array:
  m = jnp.asarray(m, bool)
  if m.shape not in ((n,), (b, n)):
    raise ValueError(f"{what} must be bool [{n}] or [{b}, {n}], got shape {m.shape}")
  return jnp.broadcast_to(m, (b, n))


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def head_evidence(cfg: TransformerConfig, params, tokens, sources, queries=None,
                  precision: Precision | str | None = None) -> HeadEvidence:
  """How much each head attends to, and writes from, a set of source positions.

  Args:
    cfg, params: the model.
    tokens: int [b p].
    sources: bool [s] or [b s], the source positions S (s = p).
    queries: bool [p] or [b p], the query positions averaged over (default: the last one).
    precision: the forward's compute dtype (module docstring; default float32).

  Returns:
    HeadEvidence of [l h] arrays (see its docstring).
  """
  b, p = tokens.shape
  src = _mask(sources, b, p, "sources").astype(jnp.float32)
  if queries is None:
    queries = jnp.arange(p) == p - 1
  qry = _mask(queries, b, p, "queries").astype(jnp.float32)
  mean = lambda x: jnp.einsum("bph,bp->h", x, qry) / qry.sum()  # x [b p h]
  attention, write, total = [], [], []
  for pattern, v, gram, divisor, z in _layers(cfg, params, tokens, precision):
    on_src = pattern * src[:, None, None, :]
    z_src = jnp.einsum("bhps,bshe->bphe", on_src, v)  # the part of hook_z read from S
    attention.append(mean(on_src.sum(-1).transpose(0, 2, 1)))
    write.append(mean(_norm(z_src, gram) / divisor[:, :, None]))
    total.append(mean(_norm(z, gram) / divisor[:, :, None]))
  return HeadEvidence(jnp.stack(attention), jnp.stack(write), jnp.stack(total))
