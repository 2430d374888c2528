"""Shapley values of the players (maskable tokens) of a value function: exact and KernelSHAP.

With q players and value v over coalitions S (the kept players), player i's Shapley value is

  phi_i = sum over S not containing i of |S|! (q - |S| - 1)! / q! * (v(S + i) - v(S)),

the unique attribution with efficiency (sum_i phi_i = v(all) - v(empty)), symmetry, dummy and
linearity. `exact_shapley` evaluates all 2^q coalitions in one value call (q up to ~16).

KernelSHAP (Lundberg & Lee, 2017) recovers the same numbers as the solution of a weighted least
squares problem over coalitions z in {0,1}^q,

  min_phi sum_z pi(z) (v(z) - v(empty) - z . phi)^2   subject to  sum_i phi_i = v(all) - v(empty),
  pi(z) = (q - 1) / (C(q, |z|) |z| (q - |z|)),

which is finite only for 0 < |z| < q; the empty and full coalitions enter through the
constraint, not through infinite weights. We sample coalitions *from* pi (a size s with
probability proportional to 1 / (s (q - s)), then s players uniformly), so the sampled regression
has equal weights, and pair each coalition with its complement (antithetic sampling; the
kernel is symmetric under complement), which cancels much of the sampling noise. The estimate
converges to the exact Shapley values as `samples` grows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from interp.attribution.masking import Value, evaluate, expand, players

MAX_EXACT_PLAYERS = 20  # 2^20 forwards: past this, use kernel_shap


def all_coalitions(q: int) -> np.ndarray:
  """bool [2^q q]: row c keeps player i iff bit i of c is set (row 0 empty, last row full)."""
  codes = np.arange(2 ** q)
  return ((codes[:, None] >> np.arange(q)) & 1).astype(bool)


def shapley_from_values(v: np.ndarray, q: int) -> np.ndarray:
  """Exact Shapley values [q] from v [2^q], indexed by coalition code as in `all_coalitions`."""
  codes = np.arange(2 ** q)
  sizes = all_coalitions(q).sum(1)
  weight = np.array([math.factorial(s) * math.factorial(q - s - 1) / math.factorial(q)
                     for s in range(q)])
  phi = np.zeros(q)
  for i in range(q):
    without = codes[(codes >> i) & 1 == 0]
    phi[i] = np.sum(weight[sizes[without]] * (v[without | (1 << i)] - v[without]))
  return phi


def exact_shapley(value: Value, p: int, keep=None) -> np.ndarray:
  """Exact Shapley values of every token, from all 2^q coalitions in one value call.

  Args:
    value: `value(masks bool [n p]) -> [n]`.
    p: number of positions.
    keep: bool [p], positions that are always kept (not players; their value is 0).

  Returns:
    float64 [p]; sums to v(all) - v(no players).
  """
  idx = players(p, keep)
  q = len(idx)
  if q > MAX_EXACT_PLAYERS:
    raise ValueError(f"exact Shapley over {q} players needs 2^{q} forwards; use kernel_shap "
                     f"(at most {MAX_EXACT_PLAYERS} players here)")
  out = np.zeros(p)
  if q == 0:
    return out
  v = evaluate(value, expand(all_coalitions(q), idx, p))
  out[idx] = shapley_from_values(v, q)
  return out


def sample_kernel_coalitions(key: jax.Array, q: int, samples: int, paired: bool = True
                             ) -> np.ndarray:
  """bool [samples q] coalitions drawn from the Shapley kernel (sizes 1..q-1 only).

  With `paired`, the second half is the complement of the first (one extra row when odd).
  """
  if q < 2:
    return np.zeros((0, q), bool)
  sizes = np.arange(1, q)
  prob = 1.0 / (sizes * (q - sizes))
  drawn = (samples + 1) // 2 if paired else samples
  k_size, k_perm = jax.random.split(key)
  size = jax.random.choice(k_size, jnp.asarray(sizes), (drawn,), p=jnp.asarray(prob / prob.sum()))
  # A uniform subset of each size: the `size` players with the smallest random keys.
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_perm, (drawn, q)), axis=1), axis=1)
  z = np.asarray(rank < size[:, None])
  if paired:
    z = np.concatenate([z, ~z])[:samples]
  return z


def kernel_shap_fit(coalitions, values, v_empty: float, v_full: float) -> np.ndarray:
  """Efficiency-constrained least squares over coalitions sampled from the kernel: phi [q].

  The constraint is eliminated by substituting phi_q = delta - sum_{i<q} phi_i (as the `shap`
  package does), leaving an unconstrained, equally weighted problem in q - 1 unknowns.
  """
  z = np.asarray(coalitions, np.float64)
  q = z.shape[1]
  delta = v_full - v_empty
  if q == 1:
    return np.array([delta])
  y = np.asarray(values, np.float64) - v_empty - z[:, -1] * delta
  x = z[:, :-1] - z[:, -1:]
  head, *_ = np.linalg.lstsq(x, y, rcond=None)
  return np.concatenate([head, [delta - head.sum()]])


def kernel_shap(value: Value, p: int, samples: int, seed: jax.Array, keep=None,
                paired: bool = True) -> np.ndarray:
  """KernelSHAP estimate of every token's Shapley value (module docstring).

  Args:
    value: `value(masks bool [n p]) -> [n]`; called once with samples + 2 masks.
    p: number of positions.
    samples: coalitions to sample (besides the empty and full ones).
    seed: a `jax.random` key.
    keep: bool [p], positions always kept (not players; their value is 0).
    paired: pair each sampled coalition with its complement.

  Returns:
    float64 [p]; sums exactly to v(all) - v(no players).
  """
  idx = players(p, keep)
  q = len(idx)
  out = np.zeros(p)
  if q == 0:
    return out
  z = sample_kernel_coalitions(seed, q, samples, paired)
  ends = np.stack([np.zeros(q, bool), np.ones(q, bool)])
  v = evaluate(value, expand(np.concatenate([ends, z]), idx, p))
  out[idx] = kernel_shap_fit(z, v[2:], v[0], v[1])
  return out
