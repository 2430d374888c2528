"""Token sources where induction helps, and repeated random tokens for head scores.

The toys train on `pairs:MIN-MAX` (`interp.data.sources.RepeatedPairs`: random segments each
followed by its copy, so only induction predicts the copies).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def repeated_tokens(key: jax.Array, batch: int, seg_len: int, high: int, *, low: int = 0,
                    bos: int | None = None, copies: int = 2) -> jax.Array:
  """Random segments repeated `copies` times: [batch, (1 if bos) + copies * seg_len] int32.

  Tokens are drawn without replacement from [low, high) within a segment, so in the later
  copies every token has exactly one earlier occurrence per copy (Olsson et al.'s repeated random
  tokens; TransformerLens's `rep_tokens` draw with replacement). `bos` is prepended if given.
  """
  if seg_len > high - low:
    raise ValueError(f"seg_len={seg_len} exceeds the {high - low} tokens in [{low}, {high})")
  noise = jax.random.uniform(key, (batch, high - low))
  seg = jax.lax.top_k(noise, seg_len)[1].astype(jnp.int32) + low
  out = jnp.tile(seg, (1, copies))
  if bos is not None:
    out = jnp.concatenate([jnp.full((batch, 1), bos, jnp.int32), out], axis=1)
  return out


def paired_tokens(key: jax.Array, batch: int, seg_len: int, length: int, high: int) -> jax.Array:
  """Random segments of `seg_len` tokens, each followed by its copy (A A B B ...), cut to
  `length`: [batch, length] int32, every copy at lag `seg_len`.

  Tokens are distinct within a segment (ids in [0, high)); segments are independent. The
  first segment is `repeated_tokens(key, batch, seg_len, high)`'s, so at seg_len = length / 2
  this is exactly those tokens.
  """
  n = -(-length // (2 * seg_len))
  keys = [key] + [jax.random.fold_in(key, i) for i in range(1, n)]
  pairs = [repeated_tokens(k, batch, seg_len, high) for k in keys]
  return jnp.concatenate(pairs, axis=1)[:, :length]
