"""Token sources where induction helps, and repeated random tokens for head scores.

`RepeatedPairs` (spec `pairs:MIN-MAX`) fills each window with random segments, each followed
by its copy: `A A B B C C ...`, segment lengths uniform in [MIN, MAX], tokens without
replacement within a segment (so each copied token has one earlier occurrence). The second
copy of a segment is predictable only by induction: find the previous occurrence of the current
token, read what followed it. Unlike `repeat:L` (one segment tiled with a fixed period), the lag
varies, so no head can solve it by attending a fixed distance back (a 1-layer model does exactly
that on `repeat:L`: measured, its loss on another period then rises to ~8 nats), and first
occurrences sit anywhere in the window, so a previous-token head must work at every position.

Every window starts at a segment boundary. That alignment is a scaffold: the 2-layer toy's
phase change comes at ~400 steps; cut at a random phase, it came only at ~2,500 (measured, 24
tokens, d_model 64, batch 64). It is also a shortcut: late positions are more often at the
longest lags, and after ~1,000 steps a 1-layer model learns to guess the lag from the absolute
position (ICL score -1.4 on held-out repeats at 1,500 steps, prefix-matching 0.29, no
previous-token head). It follows the `interp.data.sources.Source` protocol.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from interp.data import sources


@dataclasses.dataclass(frozen=True)
class RepeatedPairs:
  """Windows of random segments each followed by its copy (see the module docstring)."""

  vocab_size: int
  min_len: int = 4
  max_len: int = 16

  def __post_init__(self):
    if not 1 <= self.min_len <= self.max_len <= self.vocab_size:
      raise ValueError(f"pairs:{self.min_len}-{self.max_len}: need 1 <= MIN <= MAX <= "
                       f"vocab_size ({self.vocab_size})")

  def batch(self, seed, step, batch_size, length, rows=slice(None)):
    rng = sources.step_rng(seed, step)
    # Enough segments for the shortest lengths; every row draws the same amount of randomness,
    # so a row does not depend on which process asks for it.
    n_seg = -(-length // (2 * self.min_len))
    lengths = rng.integers(self.min_len, self.max_len + 1, size=(batch_size, n_seg))
    order = np.argsort(rng.random((batch_size, n_seg, self.vocab_size)), axis=-1)
    out = np.empty((batch_size, length), np.int32)
    for i in range(batch_size):
      parts = []
      for seg, n in zip(order[i], lengths[i]):
        parts += [seg[:n], seg[:n]]
      out[i] = np.concatenate(parts)[:length]
    return out[rows]

  def describe(self):
    return {"source": f"pairs:{self.min_len}-{self.max_len}", "vocab_size": self.vocab_size}


def make_source(spec: str, vocab_size: int):
  """`pairs:MIN-MAX` here; anything else (corpus, files:GLOB, repeat:L) from interp.data."""
  name, _, arg = spec.partition(":")
  if name != "pairs":
    return sources.make_source(spec, vocab_size)
  lo, sep, hi = arg.partition("-")
  if not (sep and lo.isdigit() and hi.isdigit()):
    raise ValueError(f"--data={spec!r}: expected pairs:MIN-MAX (segment lengths, e.g. pairs:4-16)"
                     f" or one of {sources.USAGE}")
  return RepeatedPairs(vocab_size, int(lo), int(hi))


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
