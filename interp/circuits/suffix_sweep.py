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
  fresh        a position site's rows, at the layer where they are first computed, are the
               base run's except row p (nothing after p has read it yet): their queries, keys
               and values after row p are the base run's, and only row p goes into the product.
  last block   only the read positions (`logits_at`) reach the metric: there the block computes
               queries, the MLP and the rest for the read rows alone. Without RoPE and
               qk-norm (GPT-2, the toys) a key is linear in its normalised row, so the read
               queries are folded through W_K and W_V (`_Block.attend_folded`) and the suffix
               rows need no product at all; otherwise it computes their keys and values.

Work per site, against a whole forward: (n_layers - l) / n_layers of the layers on
(ctx - p) / ctx of the positions, less the entry layer's products after row p and most of the
last block. The results equal `patching.activation_patching`'s general path up to float
reassociation. Measured (XLA's cost analysis, the GPT-2-shaped benchmark model, 16 positions,
4 prompts): the resid sweep went from 568 to 532 GFLOP with the fresh rows and the fold, the
2-layer attention-only toy's from 7.1 to 2.7 GFLOP.

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
    # Q, K and V in one product: the same sums per output, one pass over the rows. The weight
    # is flat [d, (h + 2g) e]: in one profile of the GPT-2 shape, the [d, h + 2g, e] form ran
    # the larger layers' products at 138-190 GFLOP/s against ~230 flat (such a product's time
    # also moves by a third between runs here, so this is one measurement, not a law).
    w = jnp.concatenate([ap["W_Q"], ap["W_K"], ap["W_V"]], axis=1)
    self.w_qkv = w.reshape(w.shape[0], -1)
    self.b_qkv = (jnp.concatenate([ap["b_Q"], ap["b_K"], ap["b_V"]], axis=0).reshape(-1)
                  if cfg.attn_bias else None)
    self.split = (h, h + g)

  def norm(self, name, x):
    if self.cfg.norm == NormType.NONE:
      return x
    return transformer.Norm(self.cfg).apply({"params": self.p[name]}, x, _NO_HOOKS)

  def qkv_flat(self, resid, width: int | None = None):
    """q, k and v of rows [..., d] side by side, [..., (h + 2g) e], before qk-norm and RoPE;
    with `width`, only the first width outputs (h e: the queries alone)."""
    w, b = self.w_qkv[:, :width], self.b_qkv
    y = self.prec.einsum("...d,df->...f", self.norm("ln1", resid), w)
    return y + b[:width] if b is not None else y

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
    return self.prec.einsum("nbhps,nbshe->nbphe", self.pattern(scores, qpos, q.dtype), v)

  def pattern(self, scores, qpos, dtype):
    """The forward's masking and softmax of scores [n, b, h, k_q, s] over keys at 0..s-1."""
    mask = transformer.attention_mask(self.cfg, self.layer, qpos, jnp.arange(scores.shape[-1]))
    mask = mask[:, None] if qpos.ndim == 2 else mask  # [b, 1, q, s] or [q, s]
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)

  @property
  def foldable(self) -> bool:
    """Keys and values linear in the normalised rows (no RoPE, no qk-norm): `attend_folded`."""
    return not self.cfg.qk_norm and self.cfg.positional != PositionalType.ROPE

  def attend_folded(self, q, qpos, rows, start: int, base_k, base_v):
    """`attend` of queries q [n, b, k_q, h, e] at qpos [b, k_q] over the base run's keys and
    values [1, b, ctx, g, e] at positions < start and the rows [n, b, ctx - start, d] at
    positions start.., without the rows' keys and values: q . (W_K y + b_K) = (W_K q) . y +
    q . b_K over the normalised rows y, and the pattern's weighted sum of y taken before W_V.
    Per row that is h d multiply-adds against d (h + 2g) e for the rows' products, which is
    what a query that reads a whole suffix saves (`foldable` configs only)."""
    cfg, ap = self.cfg, self.p["attn"]
    rep = cfg.n_heads // cfg.n_kv_heads
    per_head = lambda x: jnp.repeat(x, rep, axis=-2) if rep > 1 else x  # K/V heads axis at -2
    w_k, w_v, pre_k, pre_v = map(per_head, (ap["W_K"], ap["W_V"], base_k[0, :, :start],
                                            base_v[0, :, :start]))
    y = self.norm("ln1", rows)
    q = q * cfg.query_scale
    scores = self.prec.einsum("nbkhd,nbsd->nbhks", self.prec.einsum("nbkhe,dhe->nbkhd", q, w_k),
                              y, output=True)
    if cfg.attn_bias:
      scores = scores + self.prec.einsum("nbkhe,he->nbhk", q, per_head(ap["b_K"]),
                                         output=True)[..., None]
    if start:
      scores = jnp.concatenate(
          [self.prec.einsum("nbkhe,bshe->nbhks", q, pre_k, output=True), scores], axis=-1)
    pattern = self.pattern(scores, qpos, q.dtype)
    suffix = pattern[..., start:]
    z = self.prec.einsum("nbkhd,dhe->nbkhe",
                         self.prec.einsum("nbhks,nbsd->nbkhd", suffix, y), w_v)
    if cfg.attn_bias:
      z = z + (jnp.moveaxis(suffix.sum(-1), 2, 3)[..., None] * per_head(ap["b_V"])).astype(z.dtype)
    if start:
      z = z + self.prec.einsum("nbhks,bshe->nbkhe", pattern[..., :start], pre_v)
    return z

  def attn_out(self, z):
    """What attention adds to the residual, from z [..., h, e]."""
    return self.attn_post(self.prec.einsum("...he,hed->...d", z, self.p["attn"]["W_O"]))

  def attn_post(self, out):
    """`attn_out` from the heads' summed output [..., d] (before the bias and post-norm)."""
    if self.cfg.attn_bias:
      out = out + self.p["attn"]["b_O"]
    return self.norm("ln1_post", out) if self.cfg.post_norms else out

  def attn_out_one_head_swapped(self, z_base, z_new):
    """`attn_out` of z_base [..., h, e] with head i's z taken from z_new, for every i at once:
    [h, ..., d]. The heads' outputs add, so each is the base sum moved by head i's difference
    through its own W_O alone (widened to float32 before the difference)."""
    w_o = self.p["attn"]["W_O"]
    base = self.prec.einsum("...he,hed->...d", z_base, w_o, output=True)
    diff = z_new.astype(jnp.float32) - z_base.astype(jnp.float32)
    moved = base + self.prec.einsum("...he,hed->h...d", diff, w_o, output=True)
    return self.attn_post(moved.astype(z_base.dtype))

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


# (start position, rows [n, b, ctx - start, d], site labels, fresh): `fresh` says that each
# site's rows equal the base run's at the layer it joins, except its first row (a position site:
# only row p is patched, and rows after it have not yet read it), so at that layer the rows
# after the first take their queries, keys and values from the base run instead of a product.
Entry = tuple[int, jax.Array, list, bool]


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
  # start -> (rows [n, b, ctx - start, d], labels, n_fresh): the last n_fresh sites are fresh
  # at the coming block (`Entry`); the others' rows were all computed by earlier blocks.
  groups: dict[int, tuple[jax.Array, list, int]] = {}
  finals: list[tuple[int, jax.Array, list]] = []

  def join(into: dict, start, rows, labels, fresh):
    n_new = rows.shape[0]
    if start not in into:
      into[start] = (rows, labels, n_new if fresh else 0)
      return
    old, old_labels, n_fresh = into[start]
    if fresh:  # onto the fresh tail
      into[start] = (jnp.concatenate([old, rows]), old_labels + labels, n_fresh + n_new)
    else:  # in front, which leaves the fresh tail where it is
      into[start] = (jnp.concatenate([rows, old]), labels + old_labels, n_fresh)

  for layer in range(cfg.n_layers):
    blk = _Block(cfg, prec, params, layer)
    before, after = entries(layer, blk)
    for start, rows, labels, fresh in before:
      join(groups, start, rows, labels, fresh)
    last = layer == cfg.n_layers - 1
    if groups:
      starts = sorted(groups)
      rows = [groups[s][0] for s in starts]
      # The last block reads whole suffixes from its read rows alone: folded, it needs no
      # product over the rows (`_Block.attend_folded`).
      fold = last and blk.foldable
      # The base run's keys and values at this layer: the prefix every group reads.
      (_, bk, bv), qkvs = _qkv_groups(
          blk, base_resid[layer][None],
          [] if fold else [(s, groups[s][0], groups[s][2]) for s in starts])
      bk = blk.rotate(bk, "k_norm", 0)
      zs, reads = [], []
      if fold:
        reads = [jnp.take_along_axis(r, _read_index(logits_at, s, ctx), axis=2)
                 for s, r in zip(starts, rows)]
        qs = _rowwise(lambda x: blk.qkv_flat(x, cfg.n_heads * cfg.d_head), reads)
        zs = [blk.attend_folded(q.reshape(q.shape[:3] + (cfg.n_heads, cfg.d_head)), logits_at,
                                r, s, bk, bv) for s, r, q in zip(starts, rows, qs)]
      for s, r, (q, k, v) in zip(starts, rows, qkvs):
        q, k = blk.rotate(q, "q_norm", s), blk.rotate(k, "k_norm", s)
        n = r.shape[0]
        k = jnp.concatenate([jnp.broadcast_to(bk[:, :, :s], (n,) + bk.shape[1:2] + (s,)
                                              + bk.shape[3:]), k], axis=2)
        v = jnp.concatenate([jnp.broadcast_to(bv[:, :, :s], (n,) + bv.shape[1:2] + (s,)
                                              + bv.shape[3:]), v], axis=2)
        if last:  # only the read rows go on: gather them (clipped; unread rows fixed below)
          idx = _read_index(logits_at, s, ctx)
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
        groups = {s: (x, groups[s][1], 0) for s, x in zip(starts, new)}
    for start, rows, labels, fresh in after:
      if last:
        finals.append((start, jnp.take_along_axis(rows, _read_index(logits_at, start, ctx), axis=2),
                       labels))
      else:
        join(groups, start, rows, labels, fresh)

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


def _read_index(logits_at, start: int, ctx: int):
  """Where the read positions fall in rows start.. ([1, b, k, 1]; clipped: rows a site has not
  reached are the base run's, put back after the last block)."""
  return jnp.clip(logits_at - start, 0, ctx - start - 1)[None, :, :, None]


def _qkv_groups(blk: _Block, base_rows, groups):
  """(q, k, v) of the base run's rows [1, b, ctx, d] and of every group's, in one product.

  groups: (start, rows [n, b, ctx - start, d], n_fresh) per group; of its last n_fresh sites
  only row 0 goes into the product, their other rows' q, k and v are the base run's.
  Returns ((q, k, v) of the base rows, [(q, k, v) per group]), each [..., heads, e].
  """
  cfg = blk.cfg
  width = cfg.n_heads + 2 * cfg.n_kv_heads
  pieces = [base_rows]
  for _, rows, n_fresh in groups:
    n_old = rows.shape[0] - n_fresh
    pieces += ([rows[:n_old]] if n_old else []) + ([rows[n_old:, :, :1]] if n_fresh else [])
  flat = _rowwise(blk.qkv_flat, pieces)
  heads = [y.reshape(y.shape[:3] + (width, cfg.d_head)) for y in flat]
  base, i, out = heads[0], 1, []
  for start, rows, n_fresh in groups:
    n_old = rows.shape[0] - n_fresh
    parts = []
    if n_old:
      parts.append(heads[i])
      i += 1
    if n_fresh:
      rest = base[:, :, start + 1:]
      rest = jnp.broadcast_to(rest, (n_fresh,) + rest.shape[1:])
      parts.append(jnp.concatenate([heads[i], rest], axis=2))
      i += 1
    y = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    out.append(tuple(jnp.split(y, blk.split, axis=-2)))
  return tuple(jnp.split(base, blk.split, axis=-2)), out


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
