"""Value functions over token masks, and occlusion (leave-one-out) attributions.

A value function maps masks bool [n p] (True = kept) to the explained scalar float [n]
(vocabulary in `interp.attribution`). `masked_lm_value` builds one for a language model: each
masked-out token is replaced by `baseline_token` (a pad, `<unk>` or a neutral word) and the
model runs on every masked sequence. All n sequences go through one compiled program: vmapped
`chunk` at a time under `lax.map`, so memory is bounded by `chunk` forwards however many
coalitions a Shapley estimate asks for, and on a sharded model one call covers them all.

Attributions from this package are NumPy float64 arrays [p]: the model runs on the device, but
the regressions over the values are small and ill-conditioned enough to want float64 on the host.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from interp.models import transformer
from interp.models.config import TransformerConfig

Value = Callable[[jax.Array], jax.Array]
Metric = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class LogitDiff:
  """Metric: logits[position, good] - logits[position, bad].

  A frozen dataclass rather than a lambda so equal metrics hash equal and reuse the compiled
  program (the metric is a static argument of the jitted forward).
  """

  good: int
  bad: int
  position: int = -1

  def __call__(self, logits: jax.Array) -> jax.Array:
    return logits[self.position, self.good] - logits[self.position, self.bad]


@dataclasses.dataclass(frozen=True)
class LogProb:
  """Metric: log-probability of `token` at `position`."""

  token: int
  position: int = -1

  def __call__(self, logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits[self.position])[self.token]


def players(p: int, keep=None) -> np.ndarray:
  """Indices of the positions that may be masked: all of range(p) except those in `keep`."""
  if keep is None:
    return np.arange(p)
  keep = np.asarray(keep, bool)
  if keep.shape != (p,):
    raise ValueError(f"keep must be bool [{p}], got shape {keep.shape}")
  return np.flatnonzero(~keep)


def expand(coalitions, idx: np.ndarray, p: int) -> np.ndarray:
  """Masks bool [n p] from coalitions bool [n q] over the players `idx`; others are kept."""
  coalitions = np.asarray(coalitions, bool)
  masks = np.ones((coalitions.shape[0], p), bool)
  masks[:, idx] = coalitions
  return masks


def evaluate(value: Value, masks) -> np.ndarray:
  """`value(masks)` as float64 [n], checking its shape."""
  masks = np.asarray(masks, bool)
  out = np.asarray(value(jnp.asarray(masks)), np.float64)
  if out.shape != (masks.shape[0],):
    raise ValueError(f"value function returned shape {out.shape} for masks {masks.shape}; "
                     f"expected ({masks.shape[0]},)")
  return out


@functools.partial(jax.jit, static_argnames=("cfg", "metric", "chunk"))
def masked_values(cfg: TransformerConfig, params, tokens, masks, metric: Metric,
                  baseline_token, keep, chunk: int) -> jax.Array:
  """`metric` of the model on `tokens` [p] under each of `masks` [n p]: float32 [n].

  Positions where neither the mask nor `keep` [p] is set read `baseline_token`. Runs `chunk`
  sequences at a time (n must be a multiple of `chunk`; `masked_lm_value` pads).
  """
  def one(mask):
    seq = jnp.where(mask | keep, tokens, baseline_token)
    logits, _ = transformer.forward(cfg, params, seq[None])
    return metric(logits[0]).astype(jnp.float32)
  return jax.lax.map(one, masks, batch_size=chunk)


def masked_lm_value(cfg: TransformerConfig, params, tokens, metric: Metric, baseline_token: int,
                    keep=None, chunk: int = 64) -> Value:
  """A value function for `metric` of an LM on `tokens` with masked tokens replaced.

  Args:
    cfg, params: the model.
    tokens: int [p], one sequence.
    metric: `metric(logits [p v]) -> scalar`, e.g. `LogitDiff(good, bad)` or `LogProb(token)`.
      Hashable metrics (the dataclasses here) let repeated calls share one compiled program.
    baseline_token: the token that replaces a masked one.
    keep: bool [p], positions never masked whatever the mask says (default none).
    chunk: forwards per vmapped step. The mask count is padded up to a multiple of `chunk`
      (with all-kept rows, discarded), so calls with similar counts reuse the compiled program.

  Returns:
    `value(masks bool [n p]) -> float32 [n]`.
  """
  tokens = jnp.asarray(tokens, jnp.int32)
  if tokens.ndim != 1:
    raise ValueError(f"tokens must be one sequence [p], got shape {tokens.shape}")
  p = tokens.shape[0]
  keep_arr = jnp.zeros((p,), bool) if keep is None else jnp.asarray(keep, bool)
  if keep_arr.shape != (p,):
    raise ValueError(f"keep must be bool [{p}], got shape {keep_arr.shape}")
  baseline = jnp.asarray(baseline_token, jnp.int32)

  def value(masks):
    masks = jnp.asarray(masks, bool)
    if masks.ndim != 2 or masks.shape[1] != p:
      raise ValueError(f"masks must be bool [n, {p}], got shape {masks.shape}")
    n = masks.shape[0]
    if n == 0:
      return jnp.zeros((0,), jnp.float32)
    padded = jnp.concatenate([masks, jnp.ones((-n % chunk, p), bool)])
    return masked_values(cfg, params, tokens, padded, metric, baseline, keep_arr, chunk)[:n]

  return value


def occlusion(value: Value, p: int, keep=None) -> np.ndarray:
  """Leave-one-out: f(all) - f(all but token i), for each player i (0 for kept positions).

  One value call with q + 1 masks. Returns float64 [p].
  """
  idx = players(p, keep)
  coalitions = np.ones((len(idx) + 1, len(idx)), bool)
  coalitions[1:] = ~np.eye(len(idx), dtype=bool)
  v = evaluate(value, expand(coalitions, idx, p))
  out = np.zeros(p)
  out[idx] = v[0] - v[1:]
  return out
