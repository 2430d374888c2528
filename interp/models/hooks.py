"""Hook points: TransformerLens names, defined once with their shapes, captured functionally.

A forward pass takes a `Hooks` value: the names to `capture` and the `edits` to make. An edit is
any function `activation -> activation` (patch in a stored value, ablate a head, add a steering
vector, splice in an SAE); it may close over traced arrays, so the whole forward composes with
`jax.jit`, `jax.vmap` and `jax.grad`. Nothing is stored that was not asked for.

Two names may hold one tensor: `blocks.{L}.hook_resid_post` is `blocks.{L+1}.hook_resid_pre`
(and `hook_embed` is `blocks.0.hook_resid_pre` without learned positions) unless an edit sits
between them. The cache then holds one array under both names (`cache[a] is cache[b]`), never
a copy; `HookContext.aliases` records which name repeats which.

A capture may be narrowed: `capture_positions` keeps only those sequence positions (the query
axis of the [b h p s] attention hooks), `capture_dtype` stores a narrower dtype than the
compute dtype. Neither changes what the model computes, only what the cache keeps.

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
    capture_positions: sequence positions to keep in the cache (ints, negative counts from the
      end); None keeps every position. The position axis is 1, or 2 for the [b h p s] hooks.
    capture_dtype: dtype the cache stores (e.g. "bfloat16"); None keeps the compute dtype.
  """

  capture: tuple[str, ...] = ()
  edits: Mapping[str, Edit] = dataclasses.field(default_factory=dict)
  capture_positions: tuple[int, ...] | None = None
  capture_dtype: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "capture", as_names(self.capture))
    if self.capture_positions is not None:
      pos = tuple(int(i) for i in self.capture_positions)
      if not pos:
        raise ValueError("capture_positions: give at least one position, or None for all")
      object.__setattr__(self, "capture_positions", pos)
    if self.capture_dtype is not None:
      dt = jnp.dtype(self.capture_dtype)
      if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"capture_dtype={self.capture_dtype!r}: must be a floating dtype "
                         "(float32, bfloat16, float16)")
      object.__setattr__(self, "capture_dtype", dt.name)

  def validate(self, cfg: TransformerConfig) -> None:
    check_names(cfg, self.capture, "capture hook")
    check_names(cfg, tuple(self.edits), "edit hook")

  def wants(self, name: str) -> bool:
    return name in self.edits or name in self.capture

  def stored(self, name: str, x: jax.Array) -> jax.Array:
    """What the cache keeps of activation `x` at hook `name`: positions and dtype narrowed."""
    if self.capture_positions is not None:
      axis = position_axis(name)
      n = x.shape[axis]
      bad = [i for i in self.capture_positions if not -n <= i < n]
      if bad:
        raise ValueError(f"capture_positions {bad} lie outside the {n} positions of {name!r}")
      x = jnp.take(x, jnp.asarray([i % n for i in self.capture_positions]), axis=axis)
    if self.capture_dtype is not None:
      x = x.astype(self.capture_dtype)
    return x


def position_axis(name: str) -> int:
  """The sequence (query) axis of a hook's activation: 2 for [b h p s] hooks, else 1."""
  return 2 if name.endswith(("hook_attn_scores", "hook_pattern")) else 1


class HookContext:
  """Carries `Hooks` through one traced forward pass and collects the cache.

  Attributes:
    cache: hook name -> captured activation (one array for names that alias).
    aliases: hook name -> the earlier name whose array it shares.
  """

  def __init__(self, hooks: Hooks | None):
    self.hooks = hooks or Hooks()
    self.cache: dict[str, jax.Array] = {}
    self.aliases: dict[str, str] = {}
    # id(activation) -> (activation, first name): the activation is kept so its id stays unique.
    self._seen: dict[int, tuple[jax.Array, str]] = {}

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
      seen = self._seen.get(id(x))
      if seen is not None and seen[0] is x:
        self.cache[name] = self.cache[seen[1]]
        self.aliases[name] = seen[1]
      else:
        self._seen[id(x)] = (x, name)
        self.cache[name] = self.hooks.stored(name, x)
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
