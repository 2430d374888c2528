"""Planted features: activations built from known sparse directions, to check that a dictionary
recovers them (the toy benchmark of Sharkey et al. 2022 and of every SAE paper since).

x = sum_i a_i f_i with f_i unit directions in R^d (more of them than d: superposition), each
present independently with probability `density` (or, with `zipf` > 0, with probabilities
falling as rank^-zipf and averaging `density`, so rare features compete with frequent ones), with
magnitude uniform in [0.5, 1.5].
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from interp.parallel import mesh as mesh_lib


@dataclasses.dataclass(frozen=True)
class PlantedFeatures:
  d: int = 64
  n_features: int = 256
  density: float = 1 / 64
  seed: int = 0
  zipf: float = 0.0

  def probabilities(self) -> jax.Array:
    w = jnp.arange(1, self.n_features + 1, dtype=jnp.float32) ** -self.zipf
    return jnp.minimum(self.density * self.n_features * w / w.sum(), 1.0)

  def directions(self) -> jax.Array:
    # A key of its own, so that no dictionary initialised from key(seed) starts at the truth.
    key = jax.random.fold_in(jax.random.key(self.seed), 0x5AE)
    f = jax.random.normal(key, (self.n_features, self.d))
    return f / jnp.linalg.norm(f, axis=-1, keepdims=True)

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    k_on, k_mag = jax.random.split(key)
    on = jax.random.bernoulli(k_on, self.probabilities(), (n, self.n_features))
    mags = jax.random.uniform(k_mag, (n, self.n_features), minval=0.5, maxval=1.5)
    return (on * mags) @ self.directions()


class SyntheticStore:
  """The activation-store interface over planted features: batch(step) is a pure function of
  (seed, step), generated on device directly into its `data` sharding."""

  def __init__(self, features: PlantedFeatures, batch_size: int, mesh: Mesh, seed: int = 0):
    self.features, self.batch_size, self.mesh, self.seed = features, batch_size, mesh, seed
    self.d_in = features.d
    self._make = jax.jit(functools.partial(features.sample, n=batch_size),
                         out_shardings=mesh_lib.batch_sharding(mesh))

  def batch(self, step: int) -> jax.Array:
    return self._make(jax.random.fold_in(jax.random.key(self.seed), step))

  def sample(self, n: int) -> np.ndarray:
    return np.asarray(self.features.sample(jax.random.key(self.seed + 10_000), n))

  def describe(self) -> dict:
    return {"source": "planted", **dataclasses.asdict(self.features), "data_seed": self.seed}


def max_cosine(truth: jax.Array, decoder: jax.Array) -> jax.Array:
  """For each true direction [n, d], its largest cosine with any decoder row [m, d]."""
  t = truth / jnp.linalg.norm(truth, axis=-1, keepdims=True)
  w = decoder / jnp.maximum(jnp.linalg.norm(decoder, axis=-1, keepdims=True), 1e-12)
  return jnp.max(t @ w.T, axis=-1)
