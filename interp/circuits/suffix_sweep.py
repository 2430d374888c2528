"""Activation patching sweeps that recompute only what a patch can change (a suffix forward).

A patch at (layer l, position p) leaves every position < p unchanged at every layer (attention
is causal), and leaves layers < l unchanged everywhere. So a patched run needs only the rows
(positions >= p) of layers >= l, reading the base run's keys and values for positions < p, as
a KV cache would. The sweep runs layer by layer over all sites at once:

  group p0     the sites whose rows start at position p0 (a position site at p0; head sites
               change every position, so they form group 0), an array [n, b, ctx - p0, d].
  entry        where a site joins its group: resid (l, p) before block l; attn_out (l, p) after
               block l (its layer-l MLP runs on row p alone); mlp_out (l, p) after block l (no
               work at layer l); heads (l, h) after block l, whose attention is the base run's
               with one head's z swapped (the layer's scores and pattern are not recomputed).
  rows         each block's position-wise work (norms, projections, MLP) runs on the rows of
               every group concatenated, so the weights are read once per layer and the products
               have thousands of rows; only the attention core runs per group.
  last block   only the read positions (`logits_at`) reach the metric: there the block computes
               keys and values for the whole suffix and the rest for the read rows alone.

Work per site, against a whole forward: (n_layers - l) / n_layers of the layers on
(ctx - p) / ctx of the positions, less the entry layer and most of the last block. The results
equal `patching.activation_patching`'s general path up to float reassociation.

Supported: every `TransformerConfig` switch except smeared keys (their keys read the previous
position's, which the caller routes to the general path).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from interp.circuits import metrics
from interp.models import transformer
from interp.models.config import NormType, PositionalType, TransformerConfig
from interp.models.hooks import HookContext
from interp.precision import Precision

_NO_HOOKS = HookContext(None)


def supported(cfg: TransformerConfig) -> bool:
  return not cfg.smear_keys


class _Block:
  """Block `layer`'s pieces as functions of rows [..., d] (the same modules as the forward)."""

  def __init__(self, cfg: TransformerConfig, prec: Precision, params, layer: int):
    self.cfg, self.prec, self.layer = cfg, prec, layer
    self.p = params[f"blocks_{layer}"]
    ap = self.p["attn"]
    h, g = cfg.n_heads, cfg.n_kv_heads
    # Q, K and V in one product: the same sums per output, one pass over the rows.
    self.w_qkv = jnp.concatenate([ap["W_Q"], ap["W_K"], ap["W_V"]], axis=1)
    self.b_qkv = (jnp.concatenate([ap["b_Q"], ap["b_K"], ap["b_V"]], axis=0)
                  if cfg.attn_bias else None)
    self.split = (h, h + g)

  def norm(self, name, x):
    if self.cfg.norm == NormType.NONE:
      return x
    return transformer.Norm(self.cfg).apply({"params": self.p[name]}, x, _NO_HOOKS)

  def qkv_fused(self, resid):
    """q, k and v of rows [..., d] side by side, [..., h + 2g, e], before qk-norm and RoPE."""
    y = self.prec.einsum("...d,dne->...ne", self.norm("ln1", resid), self.w_qkv)
    return y + self.b_qkv if self.b_qkv is not None else y

  def qkv(self, resid):
    """(q, k, v): [..., h, e], [..., g, e], [..., g, e]."""
    return tuple(jnp.split(self.qkv_fused(resid), self.split, axis=-2))

  def rotate(self, x, name, start: int):
    """qk-norm and RoPE of [n, b, s, heads, e] rows at positions start.. (padded to 0..)."""
    cfg = self.cfg
    if cfg.qk_norm:
      x = transformer.Norm(cfg).apply({"params": self.p["attn"][name]}, x, _NO_HOOKS)
    if cfg.positional == PositionalType.ROPE:
      base = cfg.rope_local_base if cfg.is_local(self.layer) else cfg.rope_base
      pad = [(0, 0)] * x.ndim
      pad[-3] = (start, 0)
      x = transformer.rope(jnp.pad(x, pad), base, pos_axis=x.ndim - 3)[..., start:, :, :]
    return x

  def attend(self, q, qpos, k, v):
    """z [n, b, k_q, h, e] of queries q at positions qpos ([k_q] or [b, k_q]) over keys and
    values [n, b, s, g, e] at positions 0..s-1 (the forward's masking and softmax)."""
    cfg = self.cfg
    h, g = cfg.n_heads, cfg.n_kv_heads
    if g != h:
      k, v = jnp.repeat(k, h // g, axis=-2), jnp.repeat(v, h // g, axis=-2)
    scores = self.prec.einsum("nbphe,nbshe->nbhps", q * cfg.query_scale, k, output=True)
    mask = transformer.attention_mask(cfg, self.layer, qpos, jnp.arange(k.shape[2]))
    mask = mask[:, None] if qpos.ndim == 2 else mask  # [b, 1, q, s] or [q, s]
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    pattern = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return self.prec.einsum("nbhps,nbshe->nbphe", pattern, v)

  def attn_out(self, z):
    """What attention adds to the residual, from z [..., h, e]."""
    out = self.prec.einsum("...he,hed->...d", z, self.p["attn"]["W_O"])
    if self.cfg.attn_bias:
      out = out + self.p["attn"]["b_O"]
    return self.norm("ln1_post", out) if self.cfg.post_norms else out

  def mlp_add(self, resid_mid):
    """resid_post from resid_mid rows [..., d]."""
    cfg = self.cfg
    if not cfg.has_mlp:
      return resid_mid
    x = self.norm("ln2", resid_mid)
    shape = x.shape
    out = transformer.MLP(cfg, self.layer, self.prec).apply(
        {"params": self.p["mlp"]}, x.reshape(1, -1, shape[-1]), _NO_HOOKS).reshape(shape)
    if cfg.post_norms:
      out = self.norm("ln2_post", out)
    return resid_mid + out


def _rowwise(fn, *groups):
  """fn over the rows of every group at once: each argument is a list (one entry per group) of
  arrays [n_i, b, s_i, ...]; fn maps [rows, ...] arrays to one [rows, ...] array."""
  lead = [x.shape[:3] for x in groups[0]]
  flat = [jnp.concatenate([x.reshape((-1,) + x.shape[3:]) for x in arrs]) for arrs in groups]
  y = fn(*flat)
  sizes = [a * b * c for a, b, c in lead]
  bounds = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
  return [part.reshape(sh + part.shape[1:]) for part, sh in zip(jnp.split(y, bounds), lead)]


Entry = tuple[int, jax.Array, list]  # (start position, rows [n, b, ctx - start, d], site labels)


def sweep(cfg: TransformerConfig, prec: Precision, params, base_tokens, logits_at,
          metric: Callable, base_resid: list, base_final: jax.Array,
          entries: Callable[[int, _Block], tuple[list[Entry], list[Entry]]]):
  """The metric of every site, keyed by its label.

  Args:
    params: parameters already cast for `prec`.
    logits_at: int [b, k] read positions.
    base_resid: the base run's hook_resid_pre of each layer, [b, ctx, d].
    base_final: the base run's last hook_resid_post [b, ctx, d].
    entries: entries(layer, block) -> (sites joining before the block, sites joining after it).

  Returns:
    (labels, values [n_sites, ...]) in matching order.
  """
  ctx = base_tokens.shape[1]
  groups: dict[int, tuple[jax.Array, list]] = {}
  finals: list[Entry] = []

  def join(into: dict, start, rows, labels):
    if start in into:
      old, old_labels = into[start]
      into[start] = (jnp.concatenate([old, rows]), old_labels + labels)
    else:
      into[start] = (rows, labels)

  for layer in range(cfg.n_layers):
    blk = _Block(cfg, prec, params, layer)
    before, after = entries(layer, blk)
    for start, rows, labels in before:
      join(groups, start, rows, labels)
    last = layer == cfg.n_layers - 1
    if groups:
      starts = sorted(groups)
      rows = [groups[s][0] for s in starts]
      # The base run's keys and values at this layer: the prefix every group reads.
      _, bk, bv = blk.qkv(base_resid[layer][None])
      bk = blk.rotate(bk, "k_norm", 0)
      zs, reads = [], []
      for s, r, (q, k, v) in zip(starts, rows, _qkv_groups(blk, rows)):
        q, k = blk.rotate(q, "q_norm", s), blk.rotate(k, "k_norm", s)
        n = r.shape[0]
        k = jnp.concatenate([jnp.broadcast_to(bk[:, :, :s], (n,) + bk.shape[1:2] + (s,)
                                              + bk.shape[3:]), k], axis=2)
        v = jnp.concatenate([jnp.broadcast_to(bv[:, :, :s], (n,) + bv.shape[1:2] + (s,)
                                              + bv.shape[3:]), v], axis=2)
        if last:  # only the read rows go on: gather them (clipped; unread rows fixed below)
          idx = jnp.clip(logits_at - s, 0, ctx - s - 1)[None, :, :, None]
          q = jnp.take_along_axis(q, idx[..., None], axis=2)
          reads.append(jnp.take_along_axis(r, idx, axis=2))
          zs.append(blk.attend(q, logits_at, k, v))
        else:
          zs.append(blk.attend(q, s + jnp.arange(ctx - s), k, v))
      resid = reads if last else rows
      new = _rowwise(lambda x, z: blk.mlp_add(x + blk.attn_out(z)), resid, zs)
      if last:
        finals += [(s, x, groups[s][1]) for s, x in zip(starts, new)]
      else:
        groups = {s: (x, groups[s][1]) for s, x in zip(starts, new)}
    for start, rows, labels in after:
      if last:
        idx = jnp.clip(logits_at - start, 0, ctx - start - 1)[None, :, :, None]
        finals.append((start, jnp.take_along_axis(rows, idx, axis=2), labels))
      else:
        join(groups, start, rows, labels)

  # Rows before a site's start are the base run's: take them from its final residual.
  base_read = jnp.take_along_axis(base_final, logits_at[:, :, None], axis=1)
  outs = [jnp.where((logits_at >= s)[None, :, :, None], x, base_read[None]) for s, x, _ in finals]
  labels = [lab for _, _, labs in finals for lab in labs]
  columns = metrics.columns_of(metric)
  if columns is None:
    logits = jnp.concatenate(_rowwise(lambda x: _unembed(cfg, prec, params, x), outs))
  else:  # only the vocabulary columns the metric reads, per prompt (`interp.circuits.metrics`)
    logits = _unembed(cfg, prec, params, jnp.concatenate(outs), columns)
  values = jax.vmap(functools.partial(metrics.apply_metric, metric))(logits)
  return labels, values


def _qkv_groups(blk: _Block, rows):
  """(q, k, v) of every group's rows, computed as one product over all of them."""
  cfg = blk.cfg
  width = cfg.n_heads + 2 * cfg.n_kv_heads
  y = _rowwise(lambda x: blk.qkv_fused(x).reshape(x.shape[0], -1), rows)
  return [tuple(jnp.split(part.reshape(part.shape[:3] + (width, cfg.d_head)), blk.split, axis=-2))
          for part in y]


def _unembed(cfg: TransformerConfig, prec: Precision, params, x, columns=None):
  """Logits (float32) of final-residual rows, as `transformer.Transformer` computes them; with
  `columns` int [b c], x is [n b k d] and only each prompt's columns are computed."""
  if cfg.norm != NormType.NONE:
    x = transformer.Norm(cfg).apply({"params": params["ln_final"]}, x, _NO_HOOKS)
  if columns is not None:
    return metrics.column_logits(cfg, prec, params, x, columns)
  if cfg.tied_embeddings:
    logits = transformer.Embed(cfg, prec).apply({"params": params["embed"]}, x,
                                                method=transformer.Embed.attend)
  else:
    logits = transformer.Unembed(cfg, prec).apply({"params": params["unembed"]}, x)
  return transformer.softcap_logits(cfg, logits.astype(jnp.float32))
