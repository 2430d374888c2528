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
ablated forwards as one vmapped program (or `chunk` masks per call), returning
`metric(logits, tokens)` for each. The compiled program returns logits, only at `logits_at`
[b k] positions if given (logits [b k v]: with Gemma's 262k-token vocabulary, unembedding every
position dominates a short prompt's cost), and the metric runs after it, so a new metric
function reuses the compiled forward instead of tracing and compiling it again.

`precision` (`interp.precision`) is the forwards' policy: the clean run, the fill values and
every ablated run compute in its compute dtype (a fill value has the dtype of the hook_z it
replaces); logits, and so the metrics, stay float32.
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
from interp.precision import FLOAT32, Precision, as_precision

Metric = Callable[[jax.Array, jax.Array], jax.Array]


class Ablation(str, enum.Enum):
  ZERO = "zero"
  MEAN = "mean"
  RESAMPLE = "resample"


def _names(cfg: TransformerConfig, hook: str) -> list[str]:
  return [f"blocks.{i}.attn.{hook}" for i in range(cfg.n_layers)]


def _stacked(cfg, params, tokens, hook: str, precision=None) -> jax.Array:
  names = _names(cfg, hook)
  _, cache = transformer.run_with_cache(cfg, params, tokens, names, precision=precision)
  return jnp.stack([cache[n] for n in names])


def fill_values(cfg: TransformerConfig, params, tokens, mode: Ablation, reference=None,
                precision: Precision | None = None):
  """What replaces each head's hook_z: [l b|1 p h e] (None for zero ablation), from forwards
  under `precision` (None: float32), so in its compute dtype."""
  mode = Ablation(mode)
  if mode == Ablation.ZERO:
    return None
  if mode == Ablation.MEAN:
    ref = tokens if reference is None else reference
    # The mean sums in float32 whatever the activations' dtype, then rounds once.
    z = _stacked(cfg, params, ref, "hook_z", precision)
    return z.astype(jnp.float32).mean(1, keepdims=True).astype(z.dtype)
  ref = jnp.roll(tokens, 1, axis=0) if reference is None else reference
  if ref.shape != tokens.shape:
    raise ValueError(f"resample ablation needs reference tokens of the batch's shape "
                     f"{tokens.shape}, got {ref.shape}")
  return _stacked(cfg, params, ref, "hook_z", precision)


def run_ablated(cfg: TransformerConfig, params, tokens, mask, fill=None, patterns=None,
                logits_at=None, precision: Precision | None = None):
  """Logits with the heads in `mask` [l h] replaced by `fill` (zeros if None); `patterns`
  [l b h p s], if given, replace every layer's attention pattern; `logits_at` [b k] and
  `precision` as in `transformer.forward`."""
  edits = {}
  for i, name in enumerate(_names(cfg, "hook_z")):
    value = 0.0 if fill is None else fill[i]
    edits[name] = (lambda z, m=mask[i], v=value:
                   jnp.where(m[None, None, :, None], v, z).astype(z.dtype))
  if patterns is not None:
    for i, name in enumerate(_names(cfg, "hook_pattern")):
      edits[name] = (lambda x, p=patterns[i]: p.astype(x.dtype))
  logits, _ = transformer.forward(cfg, params, tokens, Hooks(edits=edits), logits_at,
                                  precision=precision)
  return logits


@functools.partial(jax.jit, static_argnames=("cfg", "mode", "preserve_patterns", "precision"))
def _clean_values(cfg: TransformerConfig, params, tokens, mode: Ablation, reference,
                  preserve_patterns: bool, precision: Precision = FLOAT32):
  """(fill, patterns): computed once per call of `ablate`, shared by every chunk of masks."""
  fill = fill_values(cfg, params, tokens, mode, reference, precision)
  patterns = (_stacked(cfg, params, tokens, "hook_pattern", precision) if preserve_patterns
              else None)
  return fill, patterns


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def _ablated_logits(cfg: TransformerConfig, params, tokens, masks, fill, patterns, logits_at,
                    precision: Precision = FLOAT32):
  """Logits [n b p|k v] with each of `masks` [n l h] ablated; no metric, so one compilation
  serves every metric function."""
  return jax.vmap(lambda m: run_ablated(cfg, params, tokens, m, fill, patterns, logits_at,
                                        precision))(masks)


def ablate(cfg: TransformerConfig, params, tokens, masks, metric: Metric,
           mode: Ablation = Ablation.ZERO, reference=None, preserve_patterns: bool = False,
           chunk: int | None = None, logits_at=None,
           precision: Precision | str | None = None) -> jax.Array:
  """`metric(logits, tokens)` with each of `masks` [n l h] ablated: [n ...].

  Args:
    cfg, params, tokens: the model and its input [b p].
    masks: [n l h] booleans, the heads ablated together in each of n runs.
    metric: metric(logits, tokens) -> array, with logits [b p v], or [b k v] at `logits_at`.
      It runs outside the compiled forward (vmapped over the n runs), so changing it does not
      recompile the forward.
    mode: zero, mean or resample (module docstring); `reference` tokens for mean / resample.
    preserve_patterns: freeze every attention pattern to the clean run's.
    chunk: run this many ablations per compiled call instead of all n at once, to bound
      memory on large models (the last chunk is padded with empty masks, so one program
      serves all chunks).
    logits_at: int [b k] positions to unembed (None: every position).
    precision: the forwards' policy (`interp.precision`; None: float32); logits stay float32.
  Returns:
    [n ...]: the metric of each ablated run.
  """
  masks = jnp.asarray(masks, bool)
  if masks.ndim != 3 or masks.shape[1:] != (cfg.n_layers, cfg.n_heads):
    raise ValueError(f"masks must be [n, n_layers, n_heads] = [n, {cfg.n_layers}, "
                     f"{cfg.n_heads}] booleans, got shape {masks.shape}")
  if logits_at is not None:
    logits_at = jnp.asarray(logits_at, jnp.int32)
    if logits_at.ndim != 2 or logits_at.shape[0] != tokens.shape[0]:
      raise ValueError(f"logits_at must be [batch, k] positions for tokens {tokens.shape}, "
                       f"got shape {logits_at.shape}")
  transformer.check_token_range(cfg, tokens)
  precision = as_precision(precision)
  fill, patterns = _clean_values(cfg, params, tokens, Ablation(mode), reference,
                                 preserve_patterns, precision)
  apply = jax.vmap(metric, in_axes=(0, None))
  n = masks.shape[0]
  size = min(chunk, n) if chunk else n
  outs = []
  for start in range(0, n, size):
    part = masks[start:start + size]
    pad = size - part.shape[0]
    if pad:
      part = jnp.concatenate([part, jnp.zeros((pad,) + part.shape[1:], bool)])
    logits = _ablated_logits(cfg, params, tokens, part, fill, patterns, logits_at, precision)
    outs.append(apply(logits[:size - pad], tokens))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs)


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
