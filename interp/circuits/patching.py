"""Activation, path and attribution patching, every site of a kind in one compiled call.

Vocabulary:
  base run     the forward pass that is intervened on.
  source run   the forward pass whose activations are patched in (same token shape).
  denoising    base = corrupted prompts, source = clean: which sites restore the behaviour?
  noising      base = clean, source = corrupted: which sites break it?
  site         one place to patch. Kinds (`Kind`):
                 resid     blocks.{L}.hook_resid_pre at one position column   -> [l, n_pos]
                 attn_out  blocks.{L}.hook_attn_out at one position column    -> [l, n_pos]
                 mlp_out   blocks.{L}.hook_mlp_out at one position column     -> [l, n_pos]
                 heads     blocks.{L}.attn.hook_z of one head, all positions  -> [l, h]
  positions    int [b, n_pos]: column j of a position site is token positions[i, j] of prompt
               i, so prompts of different templates can be aligned by role (S1, IO, S2, END);
               default arange(p).
  metric       metric(logits) -> scalar, where logits are [b, k, v] at `logits_at` [b, k]
               (all positions when None). Unembedding only the read positions matters on
               Gemma, whose 262k-token unembedding dominates a short prompt.

Activation patching with the default positions (column j = token j of every prompt), no mesh
and no chunk smaller than the sweep runs `suffix_sweep`: a site at (layer l, position p)
recomputes only positions >= p of layers >= l, reading the base run's keys and values for the
prefix, with every site of a layer in one set of products. Otherwise (role-aligned positions, a
chunk, a mesh, smeared keys) it runs, per layer, one `jax.vmap` over a traced site index,
`chunk` sites at a time under `lax.map`, starting from the base run's residual stream at that
layer (earlier layers are not recomputed); with a mesh, each chunk's sites are split over its
`data` axis (the model is replicated), so a sweep over thousands of sites spreads over the
devices without a Python loop. Path patching vmaps over every sender at once.
Path patching (Wang et al., 2022) and attribution patching (Nanda, 2023; a first-order Taylor
expansion, one forward and one backward pass for all sites) are defined at their functions.

Precision: every sweep takes `precision` (`interp.precision`; default float32, the unchanged
program): each forward (and attribution patching's backward) computes in its compute dtype,
so the patched activations have that dtype, while logits, and so every metric, are float32.
"""

from __future__ import annotations

import enum
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp.choices import choice
from interp.circuits import metrics, suffix_sweep
from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.precision import Precision, as_precision

Metric = Callable[[jax.Array], jax.Array]


class Kind(str, enum.Enum):
  RESID = "resid"
  ATTN_OUT = "attn_out"
  MLP_OUT = "mlp_out"
  HEADS = "heads"


_HOOK = {Kind.RESID: "hook_resid_pre", Kind.ATTN_OUT: "hook_attn_out",
         Kind.MLP_OUT: "hook_mlp_out", Kind.HEADS: "attn.hook_z"}


def hook_names(cfg: TransformerConfig, kind: Kind) -> list[str]:
  kind = choice(Kind, kind, "kind")
  if kind == Kind.MLP_OUT and not cfg.has_mlp:
    raise ValueError("kind='mlp_out': this model has no MLPs")
  return [f"blocks.{layer}.{_HOOK[kind]}" for layer in range(cfg.n_layers)]


def default_positions(tokens) -> jax.Array:
  b, p = tokens.shape
  return jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))


def _check_pair(base, source):
  if base.shape != source.shape:
    raise ValueError(f"base tokens {base.shape} and source tokens {source.shape} must have the "
                     "same shape (patching swaps activations position for position)")


def _stack(cfg, params, tokens, names, precision=None) -> jax.Array:
  _, cache = transformer.run_with_cache(cfg, params, tokens, names, precision=precision)
  return jnp.stack([cache[n] for n in names])


def site_mask(kind: Kind, layer, index, this_layer: int, shape, positions) -> jax.Array:
  """Where site (layer, index) touches the activation of `this_layer` (broadcastable to shape)."""
  here = layer == this_layer
  if kind == Kind.HEADS:  # [b p h e]
    return here & (jnp.arange(shape[2]) == index)[None, None, :, None]
  pos = jnp.take(positions, index, axis=1)  # [b]
  return here & (jnp.arange(shape[1])[None, :] == pos[:, None])[:, :, None]


def map_sites(fn, sites: jax.Array, chunk: int | None, mesh: Mesh | None):
  """fn(site) for every row of `sites` [n, ...]: vmapped `chunk` at a time, split over `data`."""
  n = sites.shape[0]
  chunk = min(chunk or n, n)
  if mesh is not None:
    per = mesh.shape["data"]
    chunk = -(-chunk // per) * per
  padded = -(-n // chunk) * chunk
  sites_p = jnp.concatenate([sites, jnp.repeat(sites[-1:], padded - n, 0)]) if padded > n else sites

  def one_chunk(block):
    if mesh is not None:
      block = jax.lax.with_sharding_constraint(block, NamedSharding(mesh, P("data")))
    return jax.vmap(fn)(block)

  out = jax.lax.map(one_chunk, sites_p.reshape((padded // chunk, chunk) + sites.shape[1:]))
  return jax.tree.map(lambda x: x.reshape((padded,) + x.shape[2:])[:n], out)


def grid(cfg: TransformerConfig, kind: Kind, n_pos: int) -> jax.Array:
  """All sites of a kind as (layer, index) rows, layer-major: [l * n_index, 2]."""
  n_index = cfg.n_heads if choice(Kind, kind, "kind") == Kind.HEADS else n_pos
  layer, index = np.meshgrid(np.arange(cfg.n_layers), np.arange(n_index), indexing="ij")
  return jnp.asarray(np.stack([layer.ravel(), index.ravel()], 1), jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "metric", "kind", "chunk", "mesh",
                                             "precision"))
def activation_patching(cfg: TransformerConfig, params, base_tokens, source_tokens,
                        metric: Metric, kind: Kind, positions=None, logits_at=None,
                        chunk: int | None = None, mesh: Mesh | None = None,
                        precision: Precision | str | None = None) -> jax.Array:
  """`metric` of the base run with each site of `kind` patched from the source run.

  Args:
    base_tokens, source_tokens: [b p] ids (module docstring for which is which).
    metric: metric(logits) -> scalar (or any fixed-shape array).
    kind: the site kind; positions: [b n_pos] role-aligned columns for position kinds.
    logits_at: [b k] positions to unembed (None: all).
    chunk: sites per vmapped batch (bounds memory; below the sweep's site count it selects the
      general path); mesh: split each chunk over `data`.
    precision: the compute dtype of both runs (`interp.precision`; default float32); the
      metric still reads float32 logits.

  Returns:
    [l, n_index, ...]: n_index = n_heads for `heads`, n_pos otherwise.
  """
  kind = choice(Kind, kind, "kind")
  _check_pair(base_tokens, source_tokens)
  names = hook_names(cfg, kind)
  n_sites = cfg.n_layers * (cfg.n_heads if kind == Kind.HEADS else base_tokens.shape[1])
  if ((positions is None or kind == Kind.HEADS) and mesh is None
      and (chunk is None or chunk >= n_sites) and suffix_sweep.supported(cfg)):
    return _suffix_patching(cfg, params, base_tokens, source_tokens, metric, kind, logits_at,
                            precision)
  positions = default_positions(base_tokens) if positions is None else positions
  source = _stack(cfg, params, source_tokens, names, precision)
  resid = [f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)]
  # The base run's residual stream: a site in layer L leaves layers < L as they were.
  base_resid = _stack(cfg, params, base_tokens, resid[1:], precision) if cfg.n_layers > 1 else None
  n_index = cfg.n_heads if kind == Kind.HEADS else positions.shape[1]

  def sweep_layer(layer: int):
    # One program per layer: the layer's input is the stored base residual, an edit that ignores
    # what the earlier layers computed, so XLA drops them as dead code and each site computes
    # only layers L.. (about half the model on average) instead of the whole forward.
    start = (lambda x: base_resid[layer - 1].astype(x.dtype)) if layer else (lambda x: x)

    def one(index):
      def patched(x):
        return jnp.where(site_mask(kind, layer, index, layer, x.shape, positions), source[layer], x)
      edits = {resid[layer]: start}
      edits[names[layer]] = (lambda x: patched(start(x))) if names[layer] == resid[layer] else patched
      logits, _ = transformer.forward(cfg, params, base_tokens, Hooks(edits=edits), logits_at,
                                      precision)
      return metric(logits)

    return map_sites(one, jnp.arange(n_index, dtype=jnp.int32), chunk, mesh)

  return jnp.stack([sweep_layer(layer) for layer in range(cfg.n_layers)])


def _suffix_patching(cfg, params, base_tokens, source_tokens, metric, kind, logits_at,
                     precision):
  """`activation_patching` through `suffix_sweep`: each site computes only the rows and layers
  its patch can change (positions are the token positions 0..p-1 of every prompt)."""
  prec = as_precision(precision)
  b, ctx = base_tokens.shape
  n = cfg.n_layers
  if logits_at is None:
    logits_at = jnp.broadcast_to(jnp.arange(ctx, dtype=jnp.int32), (b, ctx))
  logits_at = jnp.asarray(logits_at, jnp.int32)
  resid = [f"blocks.{layer}.hook_resid_pre" for layer in range(n)]
  final = f"blocks.{n - 1}.hook_resid_post"
  extra = {Kind.MLP_OUT: [f"blocks.{layer}.hook_resid_mid" for layer in range(n)],
           Kind.HEADS: hook_names(cfg, Kind.HEADS)}.get(kind, [])
  _, base = transformer.run_with_cache(cfg, params, base_tokens, resid + [final] + extra,
                                       precision=precision)
  names = hook_names(cfg, kind)
  _, src = transformer.run_with_cache(cfg, params, source_tokens, names, precision=precision)
  base_resid = [base[r] for r in resid]

  def at(rows, p, value):
    """rows[:, p:] of one run [b ctx d] as a group of one site, row p replaced by value [b d]."""
    return rows[None, :, p:].at[:, :, 0].set(value[None])

  def entries(layer, blk):
    nxt = base_resid[layer + 1] if layer + 1 < n else base[final]
    if kind == Kind.RESID:
      return [(p, at(base_resid[layer], p, src[names[layer]][:, p]), [(layer, p)], True)
              for p in range(ctx)], []
    if kind == Kind.HEADS:  # the layer's attention is the base run's, one head's z swapped
      post = blk.mlp_add(base_resid[layer][None]
                         + blk.attn_out_one_head_swapped(base[extra[layer]], src[names[layer]]))
      return [], [(0, post, [(layer, h) for h in range(cfg.n_heads)], False)]
    if kind == Kind.ATTN_OUT:  # each position's row is its own site: the MLP on all at once
      post = blk.mlp_add(base_resid[layer] + src[names[layer]])
    else:
      post = base[extra[layer]] + src[names[layer]]
    return [], [(p, at(nxt, p, post[:, p]), [(layer, p)], True) for p in range(ctx)]

  labels, values = suffix_sweep.sweep(cfg, prec, transformer.cast_params(params, prec),
                                      base_tokens, logits_at, metric, base_resid, base[final],
                                      entries)
  n_index = cfg.n_heads if kind == Kind.HEADS else ctx
  order = np.argsort([layer * n_index + index for layer, index in labels])
  return values[order].reshape((n, n_index) + values.shape[1:])


def patch_one(cfg: TransformerConfig, params, base_tokens, source_tokens, metric: Metric,
              kind: Kind, layer: int, index: int, positions=None, logits_at=None,
              precision: Precision | str | None = None) -> jax.Array:
  """One site patched by itself, with a plain edit: the reference the vmapped sweep must equal
  (both runs under `precision`, default float32)."""
  kind = choice(Kind, kind, "kind")
  positions = default_positions(base_tokens) if positions is None else positions
  name = hook_names(cfg, kind)[layer]
  _, cache = transformer.run_with_cache(cfg, params, source_tokens, [name], precision=precision)
  src = cache[name]

  def edit(x):
    if kind == Kind.HEADS:
      return x.at[:, :, index].set(src[:, :, index])
    rows = jnp.arange(x.shape[0])
    cols = positions[:, index]
    return x.at[rows, cols].set(src[rows, cols])

  logits, _ = transformer.forward(cfg, params, base_tokens, Hooks(edits={name: edit}), logits_at,
                                  precision)
  return metric(logits)


@functools.partial(jax.jit, static_argnames=("cfg", "metric", "kind", "precision"))
def attribution_patching(cfg: TransformerConfig, params, base_tokens, source_tokens,
                         metric: Metric, kind: Kind, positions=None, logits_at=None,
                         precision: Precision | str | None = None):
  """First-order estimate of every site's patching effect: (a_source - a_base) . d metric/d a.

  One forward and one backward pass of the base run (plus one forward of the source run) for
  all sites, under `precision` (default float32). Returns (metric of the base run, estimated
  change [l, n_index]), both float32; the exact change is `activation_patching(...) -
  metric(base)`.
  """
  kind = choice(Kind, kind, "kind")
  _check_pair(base_tokens, source_tokens)
  positions = default_positions(base_tokens) if positions is None else positions
  names = hook_names(cfg, kind)
  source = _stack(cfg, params, source_tokens, names, precision)
  value, cache, grads = transformer.hook_grads(cfg, params, base_tokens, names, metric,
                                               logits_at=logits_at, precision=precision)
  rows = []
  for i, n in enumerate(names):
    # Widened before the difference: two nearby bfloat16 activations would otherwise lose
    # their low bits to the subtraction's rounding (a no-op in float32).
    delta = source[i].astype(jnp.float32) - cache[n].astype(jnp.float32)
    term = delta * grads[n]  # float32: the gradient of float32 zeros (`hook_grads`)
    if kind == Kind.HEADS:
      rows.append(term.sum((0, 1, 3)))
    else:
      per_pos = term.sum(-1)  # [b p]
      rows.append(jnp.take_along_axis(per_pos, positions, axis=1).sum(0))
  return value, jnp.stack(rows)


# ----- Path patching (Wang et al., 2022, section 3.1).

class Input(str, enum.Enum):
  Q = "q"
  K = "k"
  V = "v"


Receiver = tuple[int, int, str]  # (layer, head, "q" | "k" | "v")


def _receiver_masks(cfg: TransformerConfig, receivers: Sequence[Receiver]):
  """{(layer, input): head mask} for the receivers; k/v heads are KV-head indices (GQA)."""
  masks: dict[tuple[int, Input], np.ndarray] = {}
  group = cfg.n_heads // cfg.n_kv_heads
  for layer, head, which in receivers:
    which = choice(Input, which, "receiver input")
    if not 0 <= layer < cfg.n_layers or not 0 <= head < cfg.n_heads:
      raise ValueError(f"receiver ({layer}, {head}, {which.value}) is outside the model's "
                       f"{cfg.n_layers} layers x {cfg.n_heads} heads")
    n, idx = (cfg.n_heads, head) if which == Input.Q else (cfg.n_kv_heads, head // group)
    mask = masks.setdefault((layer, which), np.zeros(n, bool))
    mask[idx] = True
  return masks


@functools.partial(jax.jit, static_argnames=("cfg", "metric", "receivers", "senders",
                                             "freeze_mlps", "chunk", "mesh", "precision"))
def path_patching(cfg: TransformerConfig, params, orig_tokens, new_tokens, metric: Metric,
                  receivers: tuple[Receiver, ...] | None = None, receiver_positions=None,
                  logits_at=None, freeze_mlps: bool = False,
                  senders: tuple[tuple[int, int], ...] | None = None, chunk: int | None = None,
                  mesh: Mesh | None = None,
                  precision: Precision | str | None = None) -> jax.Array:
  """Each head as a sender: the metric when only its direct paths to the receivers carry the
  new (corrupted) run's values.

  For sender head s: (1) run the original prompts with s's output (hook_z) taken from the new
  run and every other head frozen to its original output (MLPs too with `freeze_mlps`; by
  default they recompute, as in Wang et al.), recording the receivers' inputs; (2) run the
  original prompts again with only the receivers' query/key/value inputs replaced by those
  recordings (at `receiver_positions` [b] if given, else every position) and everything
  downstream recomputed. With `receivers=None` the receiver is the logits: the metric of run (1)
  itself, i.e. the sender's direct effect (plus MLP-mediated effects unless frozen).

  `senders` limits the sweep to those (layer, head) pairs (a sender at or above every
  receiver's layer has no path to it); the others are returned as NaN. `precision` (default
  float32) is the compute dtype of every run, the recorded ones included; the metric reads
  float32 logits.

  Returns:
    [l, h, ...]: the metric per sender head.
  """
  orig_z = _stack(cfg, params, orig_tokens, hook_names(cfg, Kind.HEADS), precision)
  new_z = _stack(cfg, params, new_tokens, hook_names(cfg, Kind.HEADS), precision)
  mlp_names = hook_names(cfg, Kind.MLP_OUT) if freeze_mlps else []
  orig_mlp = _stack(cfg, params, orig_tokens, mlp_names, precision) if freeze_mlps else None
  masks = _receiver_masks(cfg, receivers or ())
  rec_names = {key: f"blocks.{key[0]}.attn.hook_{key[1].value}" for key in masks}
  b, p = orig_tokens.shape

  def one(site):
    sender_layer, sender_head = site[0], site[1]
    edits = {}
    for i, n in enumerate(hook_names(cfg, Kind.HEADS)):
      sel = ((i == sender_layer) & (jnp.arange(cfg.n_heads) == sender_head))[None, None, :, None]
      edits[n] = lambda x, i=i, sel=sel: jnp.where(sel, new_z[i], orig_z[i])
    for i, n in enumerate(mlp_names):
      edits[n] = lambda x, i=i: orig_mlp[i]
    logits, cache = transformer.forward(cfg, params, orig_tokens,
                                        Hooks(capture=tuple(rec_names.values()), edits=edits),
                                        logits_at, precision)
    if not masks:
      return metric(logits)
    edits = {}
    for key, name in rec_names.items():
      sel = jnp.asarray(masks[key])[None, None, :, None]
      if receiver_positions is not None:
        sel = sel & (jnp.arange(p)[None, :] == receiver_positions[:, None])[:, :, None, None]
      edits[name] = lambda x, sel=sel, rec=cache[name]: jnp.where(sel, rec, x)
    logits, _ = transformer.forward(cfg, params, orig_tokens, Hooks(edits=edits), logits_at,
                                    precision)
    return metric(logits)

  if senders is None:
    out = map_sites(one, grid(cfg, Kind.HEADS, 0), chunk, mesh)
    return out.reshape((cfg.n_layers, cfg.n_heads) + out.shape[1:])
  if not senders:
    raise ValueError("senders: give at least one (layer, head) pair, or None for every head")
  sites = jnp.asarray(senders, jnp.int32)
  out = map_sites(one, sites, chunk, mesh)
  full = jnp.full((cfg.n_layers, cfg.n_heads) + out.shape[1:], jnp.nan, out.dtype)
  return full.at[sites[:, 0], sites[:, 1]].set(out)


# ----- Metrics over logits [b k v] (k = the positions read; the last one is used).

def logit_diff(answers: jax.Array) -> Metric:
  """Mean over prompts of logit[correct] - logit[wrong] at the last read position.

  `answers` is int [b 2]: (correct, wrong) token ids per prompt.
  """
  def on_columns(picked):  # the logits of (correct, wrong): [b k 2]
    return (picked[:, -1, 0] - picked[:, -1, 1]).mean()
  # A ColumnMetric: the suffix sweep unembeds only these two columns (`interp.circuits.metrics`).
  return metrics.ColumnMetric(jnp.asarray(answers), on_columns)


def kl_from(reference_logits: jax.Array) -> Metric:
  """Mean KL(reference || patched) of the next-token distribution at the last read position."""
  ref = jax.nn.log_softmax(reference_logits[:, -1].astype(jnp.float32), -1)

  def metric(logits):
    logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32), -1)
    return (jnp.exp(ref) * (ref - logp)).sum(-1).mean()
  return metric


def normalised(patched, clean, corrupt):
  """(patched - corrupt) / (clean - corrupt): 0 = no better than corrupted, 1 = fully clean."""
  return (patched - corrupt) / (clean - corrupt)
