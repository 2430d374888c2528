"""Ablations of attention heads, vmapped: every head (or layer, or set of heads) in one call.

A head is ablated by replacing its `hook_z` [b p h e] (its output before W_O) with
  zero       zeros
  mean       its mean over a reference batch, per position (default reference: the batch)
  resample   its value on another input, row for row (default: the batch rolled by one row,
             so each sequence gets another sequence's activation)
With `preserve_patterns`, every layer's attention pattern is also frozen to the clean run's
(Olsson et al.'s pattern-preserving ablation): the ablated head's output is removed, but later
heads attend exactly where they did, so the effect is only through what is written (direct
path and V-composition), not through moved attention (Q-/K-composition).

Which heads go together is a boolean mask [l h]; `ablate` takes [n l h] masks and runs the n
ablated forwards as one vmapped (or `chunk`-at-a-time `lax.map`ped) program, returning
`metric(logits, tokens)` for each.
"""

from __future__ import annotations

import enum
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks

Metric = Callable[[jax.Array, jax.Array], jax.Array]


class Ablation(str, enum.Enum):
  ZERO = "zero"
  MEAN = "mean"
  RESAMPLE = "resample"


def _names(cfg: TransformerConfig, hook: str) -> list[str]:
  return [f"blocks.{i}.attn.{hook}" for i in range(cfg.n_layers)]


def _stacked(cfg, params, tokens, hook: str) -> jax.Array:
  names = _names(cfg, hook)
  _, cache = transformer.run_with_cache(cfg, params, tokens, names)
  return jnp.stack([cache[n] for n in names])


def fill_values(cfg: TransformerConfig, params, tokens, mode: Ablation, reference=None):
  """What replaces each head's hook_z: [l b|1 p h e] (None for zero ablation)."""
  mode = Ablation(mode)
  if mode == Ablation.ZERO:
    return None
  if mode == Ablation.MEAN:
    ref = tokens if reference is None else reference
    return _stacked(cfg, params, ref, "hook_z").mean(1, keepdims=True)
  ref = jnp.roll(tokens, 1, axis=0) if reference is None else reference
  if ref.shape != tokens.shape:
    raise ValueError(f"resample ablation needs reference tokens of the batch's shape "
                     f"{tokens.shape}, got {ref.shape}")
  return _stacked(cfg, params, ref, "hook_z")


def run_ablated(cfg: TransformerConfig, params, tokens, mask, fill=None, patterns=None):
  """Logits with the heads in `mask` [l h] replaced by `fill` (zeros if None); `patterns`
  [l b h p s], if given, replace every layer's attention pattern."""
  edits = {}
  for i, name in enumerate(_names(cfg, "hook_z")):
    value = 0.0 if fill is None else fill[i]
    edits[name] = (lambda z, m=mask[i], v=value: jnp.where(m[None, None, :, None], v, z))
  if patterns is not None:
    for i, name in enumerate(_names(cfg, "hook_pattern")):
      edits[name] = (lambda x, p=patterns[i]: p.astype(x.dtype))
  logits, _ = transformer.forward(cfg, params, tokens, Hooks(edits=edits))
  return logits


@functools.partial(jax.jit, static_argnames=("cfg", "metric", "mode", "preserve_patterns",
                                             "chunk"))
def ablate(cfg: TransformerConfig, params, tokens, masks, metric: Metric,
           mode: Ablation = Ablation.ZERO, reference=None, preserve_patterns: bool = False,
           chunk: int | None = None) -> jax.Array:
  """`metric(logits, tokens)` with each of `masks` [n l h] ablated: [n ...], one compiled call.

  Args:
    mode: zero, mean or resample (module docstring); `reference` tokens for mean / resample.
    preserve_patterns: freeze every attention pattern to the clean run's.
    chunk: run this many ablations at a time (lax.map) instead of all at once (vmap), to bound
      memory on large models.
  """
  fill = fill_values(cfg, params, tokens, mode, reference)
  patterns = _stacked(cfg, params, tokens, "hook_pattern") if preserve_patterns else None
  one = lambda m: metric(run_ablated(cfg, params, tokens, m, fill, patterns), tokens)
  if chunk:
    return jax.lax.map(one, masks, batch_size=chunk)
  return jax.vmap(one)(masks)


def each_head_masks(cfg: TransformerConfig) -> jax.Array:
  """[l*h l h]: one mask per head, layer-major."""
  n = cfg.n_layers * cfg.n_heads
  return jnp.eye(n, dtype=bool).reshape(n, cfg.n_layers, cfg.n_heads)


def each_layer_masks(cfg: TransformerConfig) -> jax.Array:
  """[l l h]: all heads of one layer per mask."""
  eye = jnp.eye(cfg.n_layers, dtype=bool)
  return jnp.broadcast_to(eye[:, :, None], (cfg.n_layers, cfg.n_layers, cfg.n_heads))


def head_mask(cfg: TransformerConfig, heads) -> jax.Array:
  """[l h] mask of the (layer, head) pairs in `heads`."""
  mask = jnp.zeros((cfg.n_layers, cfg.n_heads), bool)
  for layer, head in heads:
    mask = mask.at[layer, head].set(True)
  return mask


def ablate_each_head(cfg: TransformerConfig, params, tokens, metric: Metric, **kwargs):
  """`metric` with each head ablated alone: [l h ...] (kwargs as `ablate`)."""
  out = ablate(cfg, params, tokens, each_head_masks(cfg), metric, **kwargs)
  return out.reshape((cfg.n_layers, cfg.n_heads) + out.shape[1:])


def ablate_each_layer(cfg: TransformerConfig, params, tokens, metric: Metric, **kwargs):
  """`metric` with all heads of each layer ablated: [l ...] (kwargs as `ablate`)."""
  return ablate(cfg, params, tokens, each_layer_masks(cfg), metric, **kwargs)
