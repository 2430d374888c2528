"""Value functions over token masks, and occlusion (leave-one-out) attributions.

A value function maps masks bool [n p] (True = kept) to the explained scalar float [n]
(vocabulary in `interp.attribution`). `masked_lm_value` builds one for a language model: each
masked-out token is replaced by `baseline_token` (a pad, `<unk>` or a neutral word) and the
model runs on every masked sequence. All n sequences go through one compiled program: vmapped
`chunk` at a time under `lax.map`, so memory is bounded by `chunk` forwards however many
coalitions a Shapley estimate asks for, and on a sharded model one call covers them all.

Attributions from this package are NumPy float64 arrays [p]: the model runs on the device, but
the regressions over the values are small and ill-conditioned enough to want float64 on the host.

Metrics and compilation: `LogitDiff` and `LogProb` are pytrees whose fields (tokens, position)
enter the compiled program as traced values (`split_metric`), so explaining many prompts with
different answers reuses one program; any other callable is a static argument (hashed). A
metric with a `position` field is read there only: the model unembeds that one position
(`read_at`), which on Gemma's 262k vocabulary is most of a short prompt's cost.

Precision (`interp.precision`): `masked_lm_value` takes `precision=` (default float32, the
unchanged program), the compute dtype of every masked forward; the logits the metric reads and
the values are float32.
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
from interp.precision import Precision, as_precision

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


jax.tree_util.register_dataclass(LogitDiff, data_fields=["good", "bad", "position"],
                                 meta_fields=[])
jax.tree_util.register_dataclass(LogProb, data_fields=["token", "position"], meta_fields=[])


def split_metric(metric: Metric):
  """(static part, traced leaves) of a metric (module docstring): a pytree of integers passes
  its leaves traced, anything else is static whole with no leaves."""
  leaves, treedef = jax.tree.flatten(metric)
  if leaves and all(isinstance(x, (int, np.integer, np.ndarray, jax.Array)) for x in leaves):
    return treedef, tuple(leaves)
  return metric, ()


def join_metric(static, leaves) -> Metric:
  """Inverse of `split_metric`, inside the compiled program."""
  return jax.tree.unflatten(static, leaves) if leaves else static


def read_at(metric: Metric, p: int):
  """(logits_at [1 1], metric reading row 0 of [1 v] logits) for a metric with a `position`
  field, or (None, metric) for one that may read any position."""
  if not (dataclasses.is_dataclass(metric) and hasattr(metric, "position")):
    return None, metric
  at = jnp.reshape(jnp.asarray(metric.position, jnp.int32) % p, (1, 1))
  return at, dataclasses.replace(metric, position=0)


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


@functools.partial(jax.jit, static_argnames=("cfg", "metric_static", "chunk", "precision"))
def _masked_values(cfg, params, tokens, masks, metric_static, metric_leaves, baseline_token,
                   keep, chunk, precision):
  metric = join_metric(metric_static, metric_leaves)
  logits_at, metric = read_at(metric, tokens.shape[0])

  def one(mask):
    seq = jnp.where(mask | keep, tokens, baseline_token)
    logits, _ = transformer.forward(cfg, params, seq[None], logits_at=logits_at,
                                    precision=precision)
    return metric(logits[0]).astype(jnp.float32)
  return jax.lax.map(one, masks, batch_size=chunk)


def masked_values(cfg: TransformerConfig, params, tokens, masks, metric: Metric,
                  baseline_token, keep, chunk: int,
                  precision: Precision | str | None = None) -> jax.Array:
  """`metric` of the model on `tokens` [p] under each of `masks` [n p]: float32 [n].

  Positions where neither the mask nor `keep` [p] is set read `baseline_token` (a scalar, or
  int [p] for a different replacement per position, e.g. a counterfactual prompt's). Runs
  `chunk` sequences at a time (n must be a multiple of `chunk`; `masked_lm_value` pads), each
  forward under `precision` (default float32).
  """
  static, leaves = split_metric(metric)
  return _masked_values(cfg, params, tokens, masks, static, leaves, baseline_token, keep, chunk,
                        as_precision(precision))


def masked_lm_value(cfg: TransformerConfig, params, tokens, metric: Metric, baseline_token: int,
                    keep=None, chunk: int = 64,
                    precision: Precision | str | None = None) -> Value:
  """A value function for `metric` of an LM on `tokens` with masked tokens replaced.

  Args:
    cfg, params: the model.
    tokens: int [p], one sequence.
    metric: `metric(logits [p v]) -> scalar`, e.g. `LogitDiff(good, bad)` or `LogProb(token)`.
      Hashable metrics (the dataclasses here) let repeated calls share one compiled program.
    baseline_token: the token that replaces a masked one; int [p] for one per position (a
      counterfactual prompt: masking position i is then patching its token, i.e. its
      layer-0 residual stream, from that prompt).
    keep: bool [p], positions never masked whatever the mask says (default none).
    chunk: forwards per vmapped step. The mask count is padded up to a multiple of `chunk`
      (with all-kept rows, discarded), so calls with similar counts reuse the compiled program.
    precision: the forwards' compute dtype (module docstring; default float32).

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
  precision = as_precision(precision)

  def value(masks):
    masks = jnp.asarray(masks, bool)
    if masks.ndim != 2 or masks.shape[1] != p:
      raise ValueError(f"masks must be bool [n, {p}], got shape {masks.shape}")
    n = masks.shape[0]
    if n == 0:
      return jnp.zeros((0,), jnp.float32)
    padded = jnp.concatenate([masks, jnp.ones((-n % chunk, p), bool)])
    return masked_values(cfg, params, tokens, padded, metric, baseline, keep_arr, chunk,
                         precision)[:n]

  return value


def together(value: Value, *methods: Callable[[Value], object]) -> tuple:
  """`tuple(method(value) for method in methods)`, with every distinct mask they ask for
  evaluated once, in one `value` call.

  Occlusion, KernelSHAP and LIME on one prompt ask for hundreds of masks, a third of them the
  same (the kernel favours coalitions of size 1 and q - 1, LIME draws size 1 a q-th of the time,
  and occlusion's leave-one-out masks are among both), and each call pads its count to the
  forward's chunk. Each method runs twice: first on a value function that records its masks and
  returns zeros (the fits are host arithmetic, cheap), then, once every unique mask has been
  evaluated together, on a lookup of the results. So a method must ask for the same masks
  whatever the values are (true of occlusion, exact Shapley, KernelSHAP and LIME here; not of
  an adaptive sampler).
  """
  asked = []

  def record(masks):
    masks = np.asarray(masks, bool)
    asked.append(masks)
    return np.zeros(masks.shape[0], np.float32)

  for method in methods:
    method(record)
  if not asked:
    return tuple(method(value) for method in methods)
  unique = np.unique(np.concatenate(asked), axis=0)
  values = evaluate(value, unique)
  memo = {row.tobytes(): v for row, v in zip(unique, values)}

  def lookup(masks):
    return np.array([memo[row.tobytes()] for row in np.asarray(masks, bool)], np.float64)

  return tuple(method(lookup) for method in methods)


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
