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
