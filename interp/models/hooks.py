"""Hook points: TransformerLens names, defined once with their shapes, captured functionally.

A forward pass takes a `Hooks` value: the names to `capture` and the `edits` to make. An edit is
any function `activation -> activation` (patch in a stored value, ablate a head, add a steering
vector, splice in an SAE); it may close over traced arrays, so the whole forward composes with
`jax.jit`, `jax.vmap` and `jax.grad`. Nothing is stored that was not asked for.

Hook names and shapes (letters as in `interp.models.config`):

  hook_embed                      [b p d]   token embedding (after Gemma's sqrt(d) scale)
  hook_pos_embed                  [b p d]   learned positions only
  blocks.{L}.hook_resid_pre       [b p d]
  blocks.{L}.ln1.hook_scale       [b p 1]   the divisor: sqrt(var+eps) (LayerNorm) or rms (RMSNorm)
  blocks.{L}.ln1.hook_normalized  [b p d]
  blocks.{L}.attn.hook_q          [b p h e]
  blocks.{L}.attn.hook_k          [b p g e]
  blocks.{L}.attn.hook_v          [b p g e]
  blocks.{L}.attn.hook_rot_q      [b p h e] rotary models, after RoPE
  blocks.{L}.attn.hook_rot_k      [b p g e] rotary models, after RoPE
  blocks.{L}.attn.hook_attn_scores[b h p s] masked entries hold the dtype's minimum
  blocks.{L}.attn.hook_pattern    [b h p s]
  blocks.{L}.attn.hook_z          [b p h e]
  blocks.{L}.attn.hook_result     [b p h d] per-head output z W_O (computed only when hooked)
  blocks.{L}.ln1_post.hook_scale / ln1_post.hook_normalized   Gemma's norm of the attention output
  blocks.{L}.hook_attn_out        [b p d]   what attention adds to the residual stream
  blocks.{L}.hook_resid_mid       [b p d]   models with MLPs
  blocks.{L}.ln2.hook_scale / ln2.hook_normalized
  blocks.{L}.mlp.hook_pre         [b p m]   pre-activation (the gate, for gated MLPs)
  blocks.{L}.mlp.hook_pre_linear  [b p m]   gated MLPs: the linear (up) branch
  blocks.{L}.mlp.hook_post        [b p m]
  blocks.{L}.ln2_post.hook_scale / ln2_post.hook_normalized   Gemma's norm of the MLP output
  blocks.{L}.hook_mlp_out         [b p d]
  blocks.{L}.hook_resid_post      [b p d]
  ln_final.hook_scale / ln_final.hook_normalized
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from interp.models.config import MLPType, NormType, PositionalType, TransformerConfig

Edit = Callable[[jax.Array], jax.Array]


def hook_shapes(cfg: TransformerConfig, batch: int = 1, seq: int | None = None,
                ) -> dict[str, tuple[int, ...]]:
  """Every hook name this config has, with its activation shape for [batch, seq] tokens."""
  b, p = batch, (cfg.n_ctx if seq is None else seq)
  d, h, g, e, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
  norm = cfg.norm != NormType.NONE
  out = {"hook_embed": (b, p, d)}
  if cfg.positional == PositionalType.LEARNED:
    out["hook_pos_embed"] = (b, p, d)
  for L in range(cfg.n_layers):
    pre = f"blocks.{L}."
    out[pre + "hook_resid_pre"] = (b, p, d)
    if norm:
      out[pre + "ln1.hook_scale"] = (b, p, 1)
      out[pre + "ln1.hook_normalized"] = (b, p, d)
    out[pre + "attn.hook_q"] = (b, p, h, e)
    out[pre + "attn.hook_k"] = (b, p, g, e)
    out[pre + "attn.hook_v"] = (b, p, g, e)
    if cfg.positional == PositionalType.ROPE:
      out[pre + "attn.hook_rot_q"] = (b, p, h, e)
      out[pre + "attn.hook_rot_k"] = (b, p, g, e)
    out[pre + "attn.hook_attn_scores"] = (b, h, p, p)
    out[pre + "attn.hook_pattern"] = (b, h, p, p)
    out[pre + "attn.hook_z"] = (b, p, h, e)
    out[pre + "attn.hook_result"] = (b, p, h, d)
    if cfg.post_norms:
      out[pre + "ln1_post.hook_scale"] = (b, p, 1)
      out[pre + "ln1_post.hook_normalized"] = (b, p, d)
    out[pre + "hook_attn_out"] = (b, p, d)
    if cfg.has_mlp:
      out[pre + "hook_resid_mid"] = (b, p, d)
      if norm:
        out[pre + "ln2.hook_scale"] = (b, p, 1)
        out[pre + "ln2.hook_normalized"] = (b, p, d)
      out[pre + "mlp.hook_pre"] = (b, p, m)
      if cfg.mlp == MLPType.GATED:
        out[pre + "mlp.hook_pre_linear"] = (b, p, m)
      out[pre + "mlp.hook_post"] = (b, p, m)
      if cfg.post_norms:
        out[pre + "ln2_post.hook_scale"] = (b, p, 1)
        out[pre + "ln2_post.hook_normalized"] = (b, p, d)
      out[pre + "hook_mlp_out"] = (b, p, d)
    out[pre + "hook_resid_post"] = (b, p, d)
  if norm:
    out["ln_final.hook_scale"] = (b, p, 1)
    out["ln_final.hook_normalized"] = (b, p, d)
  return out


def hook_names(cfg: TransformerConfig) -> tuple[str, ...]:
  return tuple(hook_shapes(cfg, 1, 1))


def as_names(names) -> tuple[str, ...]:
  """Hook names as a tuple; one bare string is one name (not a sequence of characters)."""
  return (names,) if isinstance(names, str) else tuple(names)


def check_names(cfg: TransformerConfig, names, what: str = "hook") -> None:
  """Raises ValueError naming any unknown hook and listing the valid ones."""
  valid = hook_names(cfg)
  valid_set = set(valid)
  bad = [n for n in names if n not in valid_set]
  if not bad:
    return
  templates = sorted({re.sub(r"^blocks\.\d+\.", "blocks.{L}.", n) for n in valid},
                     key=lambda t: (t.startswith("blocks"), t))
  hints = []
  for n in bad:
    close = difflib.get_close_matches(n, valid, n=3)
    hints.append(f"{n!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
  raise ValueError(
      f"unknown {what} name(s): {'; '.join(hints)}. Valid names for this model "
      f"(L in 0..{cfg.n_layers - 1}): {', '.join(templates)}")


@dataclasses.dataclass(frozen=True)
class Hooks:
  """What a forward pass should capture and edit.

  Attributes:
    capture: hook names whose activations are returned in the cache.
    edits: hook name -> function applied to the activation there; the cache holds the edited value.
  """

  capture: tuple[str, ...] = ()
  edits: Mapping[str, Edit] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "capture", as_names(self.capture))

  def validate(self, cfg: TransformerConfig) -> None:
    check_names(cfg, self.capture, "capture hook")
    check_names(cfg, tuple(self.edits), "edit hook")

  def wants(self, name: str) -> bool:
    return name in self.edits or name in self.capture


class HookContext:
  """Carries `Hooks` through one traced forward pass and collects the cache."""

  def __init__(self, hooks: Hooks | None):
    self.hooks = hooks or Hooks()
    self.cache: dict[str, jax.Array] = {}

  def wants(self, name: str) -> bool:
    return self.hooks.wants(name)

  def __call__(self, name: str, x: jax.Array) -> jax.Array:
    fn = self.hooks.edits.get(name)
    if fn is not None:
      y = fn(x)
      if jnp.shape(y) != x.shape:
        raise ValueError(f"edit at hook {name!r} returned shape {jnp.shape(y)}, expected {x.shape}")
      x = jnp.asarray(y, x.dtype)
    if name in self.hooks.capture:
      self.cache[name] = x
    return x


# ----- Common edits. Each returns an `Edit`; head-indexed ones act on [b p h ...] activations.

def patch(value: jax.Array) -> Edit:
  """Replace the activation by `value` (broadcast to its shape)."""
  return lambda x: jnp.broadcast_to(value, x.shape).astype(x.dtype)


def add(vector: jax.Array) -> Edit:
  """Add `vector` (e.g. a steering direction, shape [d] or broadcastable) at every position."""
  return lambda x: x + vector


def ablate_head(head, mean: jax.Array | None = None, axis: int = 2) -> Edit:
  """Zero (or set to `mean`, shape without the batch axis) one head of a head-indexed hook.

  `head` may be a traced integer, so `jax.vmap` over heads ablates every head in one call.
  `axis` is the head axis: 2 for hook_q/k/v/z/result ([b p h .]), 1 for hook_pattern/scores.
  """
  def edit(x):
    n = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = n
    sel = (jnp.arange(n) == head).reshape(shape)
    fill = jnp.zeros_like(x) if mean is None else jnp.broadcast_to(mean, x.shape)
    return jnp.where(sel, fill, x)
  return edit


def patch_positions(value: jax.Array, positions: jax.Array) -> Edit:
  """Replace the activation at sequence positions where the boolean mask `positions` [p] is set."""
  def edit(x):
    mask = positions.reshape((1, -1) + (1,) * (x.ndim - 2))
    return jnp.where(mask, jnp.broadcast_to(value, x.shape), x)
  return edit
