"""LIME (Ribeiro et al., 2016): a linear surrogate of the value function near the full input.

Coalitions z in {0,1}^q (1 = player kept) are sampled around the full input, each is weighted
by an exponential kernel of its distance to the all-kept point,

  weight(z) = sqrt(exp(-distance(z)^2 / kernel_width^2))     (the `lime` package's kernel),

and a weighted ridge regression v(z) ~ intercept + z . coef is fitted; `coef` are the
attributions.

Sampling (`Sampling`):
  count      the LIME text explainer's: drop a number of players drawn uniformly from 1..q,
             chosen at random (so heavily masked inputs are as common as lightly masked ones)
  bernoulli  keep each player independently with probability 1/2

Distance (`Distance`), both in [0, 1] (the `lime` text explainer uses cosine * 100 with kernel
width 25, i.e. our default 0.25 on this scale):
  cosine     1 - cos(z, 1) = 1 - sqrt(|z| / q)   (1 for the empty coalition)
  hamming    fraction of players dropped, (q - |z|) / q

Unlike Shapley values, LIME's coefficients depend on the sampling, kernel width and ridge
penalty; they agree with Shapley values only when the value function is linear.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from interp.attribution.masking import Value, evaluate, expand, players
from interp.choices import choice


class Sampling(str, enum.Enum):
  COUNT = "count"
  BERNOULLI = "bernoulli"


class Distance(str, enum.Enum):
  COSINE = "cosine"
  HAMMING = "hamming"


class LimeResult(NamedTuple):
  """coef float64 [p] (0 at kept positions); intercept; score: weighted R^2 of the fit."""
  coef: np.ndarray
  intercept: float
  score: float


def sample_coalitions(key: jax.Array, q: int, samples: int,
                      sampling: Sampling = Sampling.COUNT) -> np.ndarray:
  """bool [samples q]: the full coalition first (as `lime` does), then `samples - 1` drawn."""
  sampling = choice(Sampling, sampling, "sampling")
  k_count, k_perm = jax.random.split(key)
  n = samples - 1
  if sampling == Sampling.BERNOULLI:
    z = np.asarray(jax.random.bernoulli(k_perm, 0.5, (n, q)))
  else:
    drop = jax.random.randint(k_count, (n,), 1, q + 1)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_perm, (n, q)), axis=1), axis=1)
    z = np.asarray(rank >= drop[:, None])
  return np.concatenate([np.ones((1, q), bool), z])


def distances(coalitions, distance: Distance = Distance.COSINE) -> np.ndarray:
  """Distance [n] of each coalition bool [n q] to the full one (module docstring)."""
  distance = choice(Distance, distance, "distance")
  z = np.asarray(coalitions, bool)
  frac = z.sum(1) / z.shape[1]
  return 1.0 - np.sqrt(frac) if distance == Distance.COSINE else 1.0 - frac


def lime_fit(coalitions, values, kernel_width: float = 0.25,
             distance: Distance = Distance.COSINE, ridge: float = 1.0) -> LimeResult:
  """Weighted ridge regression of `values` [n] on `coalitions` bool [n q] (coef has length q).

  Minimises sum_n w_n (v_n - b - z_n . coef)^2 + ridge |coef|^2, the intercept b unpenalised
  (scikit-learn's `Ridge(alpha=ridge)` with `sample_weight`, which `lime` uses).
  """
  z = np.asarray(coalitions, np.float64)
  v = np.asarray(values, np.float64)
  w = np.sqrt(np.exp(-distances(coalitions, distance) ** 2 / kernel_width ** 2))
  z_mean = w @ z / w.sum()
  v_mean = w @ v / w.sum()
  zc, vc = z - z_mean, v - v_mean
  gram = (zc * w[:, None]).T @ zc + ridge * np.eye(z.shape[1])
  coef = np.linalg.solve(gram, (zc * w[:, None]).T @ vc)
  intercept = v_mean - z_mean @ coef
  resid = vc - zc @ coef
  total = w @ vc ** 2
  score = 1.0 - (w @ resid ** 2) / total if total > 0 else 1.0
  return LimeResult(coef, float(intercept), float(score))


def lime(value: Value, p: int, samples: int, seed: jax.Array, keep=None,
         sampling: Sampling = Sampling.COUNT, distance: Distance = Distance.COSINE,
         kernel_width: float = 0.25, ridge: float = 1.0) -> LimeResult:
  """LIME attributions of every token (module docstring).

  Args:
    value: `value(masks bool [n p]) -> [n]`; called once with `samples` masks.
    p: number of positions.
    samples: coalitions, the unmasked input included.
    seed: a `jax.random` key.
    keep: bool [p], positions always kept (coefficient 0).
    sampling, distance, kernel_width, ridge: the surrogate's neighbourhood and penalty.

  Returns:
    LimeResult with coef float64 [p].
  """
  idx = players(p, keep)
  if len(idx) == 0:
    v = evaluate(value, np.ones((1, p), bool))
    return LimeResult(np.zeros(p), float(v[0]), 1.0)
  z = sample_coalitions(seed, len(idx), samples, sampling)
  fit = lime_fit(z, evaluate(value, expand(z, idx, p)), kernel_width, distance, ridge)
  coef = np.zeros(p)
  coef[idx] = fit.coef
  return fit._replace(coef=coef)
