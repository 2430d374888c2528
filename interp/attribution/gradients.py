"""Gradient attributions to token embeddings: gradient x input and integrated gradients.

For a scalar `f(x)` of embeddings x [p d] (any trailing shape works; the first axis is the
position), the attribution of position i sums over its embedding dimensions:

  gradient x input     a_i = sum_d df/dx_id (x) * x_id
  integrated gradients a_i = sum_d (x_id - b_id) * integral_0^1 df/dx_id (b + t (x - b)) dt
                       (Sundararajan et al., 2017), with the integral a `Rule` over `steps`
                       points, all evaluated in one vmapped call (or `chunk` at a time).

IG is complete: sum_i a_i = f(x) - f(b) up to the quadrature error, which falls as steps^-2
for both rules (`Rule`):
  midpoint   t = (k + 1/2) / steps, k < steps, equal weights (never evaluates the endpoints)
  trapezoid  t = k / steps, k <= steps, end weights halved (steps + 1 gradient evaluations)
Gradient x input equals IG with a zero baseline only for a linear f.

For an LM, `lm_embedding_fn` turns `metric(logits)` into such an f by replacing the
`hook_embed` activation (after Gemma's sqrt(d) scale; learned position embeddings are added
after it and are not attributed).

Baselines: a zero baseline (the default) suits models with learned positions (GPT-2), whose
first norm sees W_pos along the whole path. Where the first norm sees only the token embedding
(RoPE models: Gemma), its output x / rms(x) is the same for every t x with t >> sqrt(eps) and
is 0 at t = 0: f(t x) jumps in a sliver of the path next to the baseline, where the gradient
is ~1/sqrt(eps). Quadrature misses or blows up on that jump, so completeness fails badly;
use a baseline token's embedding (`baseline_token`) there. The `lm_*` wrappers are jitted with the parameters as
arguments, not closed-over constants, so one compiled program serves any parameters.
These functions return jax arrays, not the NumPy arrays of the masking-based methods.

Precision (`interp.precision`): the `lm_*` functions take `precision=` (default float32, the
unchanged program). The embeddings, the path points and the gradients with respect to them are
float32; the forward and backward passes between them run in the compute dtype (the replaced
`hook_embed` is rounded to it, and its gradient widened back), and the metric reads float32
logits, so each attribution is a float32 sum over embedding dimensions.
"""

from __future__ import annotations

import enum
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from interp.attribution.masking import Metric, join_metric, read_at, split_metric
from interp.choices import choice
from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks, patch
from interp.precision import Precision, as_precision


class Rule(str, enum.Enum):
  MIDPOINT = "midpoint"
  TRAPEZOID = "trapezoid"


def path_points(steps: int, rule: Rule = Rule.MIDPOINT) -> tuple[jax.Array, jax.Array]:
  """(t [k], weights [k]) of the quadrature of an integral over [0, 1] (module docstring)."""
  rule = choice(Rule, rule, "rule")
  if steps < 1:
    raise ValueError(f"steps must be positive, got {steps}")
  if rule == Rule.MIDPOINT:
    return (jnp.arange(steps) + 0.5) / steps, jnp.full((steps,), 1.0 / steps)
  w = jnp.full((steps + 1,), 1.0 / steps).at[jnp.array([0, steps])].set(0.5 / steps)
  return jnp.arange(steps + 1) / steps, w


def _per_position(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1).sum(1)


def grad_x_input(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """Gradient x input per position: [p] for x [p ...]."""
  return _per_position(jax.grad(f)(x) * x)


def integrated_gradients(f: Callable[[jax.Array], jax.Array], x: jax.Array,
                         baseline: jax.Array | None = None, steps: int = 64,
                         rule: Rule = Rule.MIDPOINT, chunk: int | None = None) -> jax.Array:
  """Integrated gradients per position along the straight path from `baseline` to `x`.

  Args:
    f: scalar function of x [p ...].
    x: the input.
    baseline: same shape as x (default zeros).
    steps, rule: the quadrature (module docstring).
    chunk: evaluate this many path points at a time (`lax.map`) instead of all at once.

  Returns:
    [p]; sums to about f(x) - f(baseline).
  """
  baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
  t, w = path_points(steps, rule)
  grad = jax.grad(f)
  at = lambda s: grad(baseline + s.astype(x.dtype) * (x - baseline))
  grads = jax.lax.map(at, t, batch_size=chunk) if chunk else jax.vmap(at)(t)
  mean_grad = jnp.tensordot(w.astype(grads.dtype), grads, axes=1)
  return _per_position((x - baseline) * mean_grad)


def token_embeddings(cfg: TransformerConfig, params, tokens) -> jax.Array:
  """The `hook_embed` activation [p d] of tokens [p]: W_E rows, times sqrt(d) for Gemma."""
  x = jnp.take(params["embed"]["W_E"], jnp.asarray(tokens, jnp.int32), axis=0)
  if cfg.embed_scale:
    x = x * jnp.asarray(cfg.d_model ** 0.5, x.dtype)
  return x


def lm_embedding_fn(cfg: TransformerConfig, params, tokens, metric: Metric,
                    precision: Precision | str | None = None):
  """f(embeddings [p d]) = metric(logits [p v]) of the model with `hook_embed` replaced
  (only the metric's `position` unembedded, where it has one: `masking.read_at`), the forward
  under `precision` (default float32)."""
  tokens = jnp.asarray(tokens, jnp.int32)[None]
  logits_at, metric = read_at(metric, tokens.shape[1])

  def f(emb):
    logits, _ = transformer.forward(cfg, params, tokens,
                                    Hooks(edits={"hook_embed": patch(emb[None])}), logits_at,
                                    precision)
    return metric(logits[0])
  return f


def lm_baseline(cfg: TransformerConfig, params, tokens, baseline_token=None,
                keep=None) -> jax.Array:
  """Baseline embeddings [p d]: zeros, or `baseline_token`'s embedding at every position;
  positions in `keep` (bool [p]) keep the input's embedding, so their attribution is 0."""
  x = token_embeddings(cfg, params, tokens)
  if baseline_token is None:
    base = jnp.zeros_like(x)
  else:
    base = jnp.broadcast_to(token_embeddings(cfg, params, jnp.asarray([baseline_token])), x.shape)
  if keep is not None:
    base = jnp.where(jnp.asarray(keep, bool)[:, None], x, base)
  return base


@functools.partial(jax.jit, static_argnames=("cfg", "metric_static", "precision"))
def _lm_grad_x_input(cfg, params, tokens, metric_static, metric_leaves, precision):
  f = lm_embedding_fn(cfg, params, tokens, join_metric(metric_static, metric_leaves), precision)
  return grad_x_input(f, token_embeddings(cfg, params, tokens))


def lm_grad_x_input(cfg: TransformerConfig, params, tokens, metric: Metric,
                    precision: Precision | str | None = None) -> jax.Array:
  """Gradient x input [p] of `metric` for tokens [p], on the `hook_embed` embeddings, the
  forward and backward under `precision` (module docstring; default float32)."""
  return _lm_grad_x_input(cfg, params, tokens, *split_metric(metric), as_precision(precision))


@functools.partial(jax.jit, static_argnames=("cfg", "metric_static", "steps", "rule", "chunk",
                                             "precision"))
def _lm_integrated_gradients(cfg, params, tokens, metric_static, metric_leaves, baseline_token,
                             keep, steps, rule, chunk, precision):
  f = lm_embedding_fn(cfg, params, tokens, join_metric(metric_static, metric_leaves), precision)
  x = token_embeddings(cfg, params, tokens)
  base = lm_baseline(cfg, params, tokens, baseline_token, keep)
  return integrated_gradients(f, x, base, steps, rule, chunk)


def lm_integrated_gradients(cfg: TransformerConfig, params, tokens, metric: Metric,
                            baseline_token=None, keep=None, steps: int = 64,
                            rule: Rule = Rule.MIDPOINT, chunk: int | None = None,
                            precision: Precision | str | None = None) -> jax.Array:
  """Integrated gradients [p] of `metric` for tokens [p], on the `hook_embed` embeddings.

  The baseline is `lm_baseline(cfg, params, tokens, baseline_token, keep)`; the attributions
  sum to about metric(input) - metric(baseline embeddings). Other arguments as in
  `integrated_gradients`. One compiled program serves every `LogitDiff` / `LogProb` metric of
  the same shapes (`masking.split_metric`). `precision`: the compute dtype of every forward
  and backward along the path (module docstring; default float32).
  """
  return _lm_integrated_gradients(cfg, params, tokens, *split_metric(metric), baseline_token,
                                  keep, steps, rule, chunk, as_precision(precision))
