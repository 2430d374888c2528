"""Sparse feature vectors, sampled on device inside the train step.

Each feature is 0 with probability 1 - p (p = its density) and otherwise uniform on [0, 1].
Features come in sets (`FeatureSets`): independent (the default), correlated (a set's members
are present together) or anticorrelated (at most one member of a set is present; each member's
marginal density is still p).

Three choices decide how fast this is, each measured by `interp.toy.speed.data_table` (run by
`experiments/bench_toy.py`). CPU nanoseconds per feature sample on a shared 2-core machine
(process time, so less sensitive to other load than wall time), n=20, batch 1024:
  Prng   the jax.random implementation (`--prng`). The default, threefry2x32, is computed here
         by an unrolled copy of jax's Threefry-2x32 (`threefry_bits`, `fold_in`), bit-identical
         to `jax.random.bits` / `jax.random.fold_in` (tests check it) but fusible with its
         consumer: 3.2-3.7 ns, against 10.8-11.3 ns for `jax.random.bits`, whose CPU lowering
         rolls the rounds into a loop and so writes every round to memory. philox2x32 is as fast
         (3.4-3.5 ns) but runs on one device only: its mulhi does not lower under the Shardy
         partitioner in jax 0.10. philox4x32 5.3-5.5, threefry4x32 5.0, and XLA's
         RngBitGenerator (rbg, unsafe_rbg) 19-20 ns.
  Bits   random bits per feature sample. SHARED_32 draws one 32-bit word u per sample and uses it
         twice: present iff u < p * 2^32, and then u / (p * 2^32) is uniform on [0, 1) (u is
         uniform below the threshold). SEPARATE_64 draws a mask word and a value word, as two
         `torch.rand` calls do: 5.9 ns with the fused threefry. (Splitting a word into two 16-bit
         samples was measured slower on XLA:CPU: the split breaks loop fusion.)
  path   batches are never built on the host: the step samples each instance's batch from
         fold_in(fold_in(key, step), instance) inside the compiled program, a chunk of instances
         at a time, so a batch never leaves the cache. See `interp.toy.program`.

A sample's density is exact to within 2^-25 (the word is compared as float32).
"""

from __future__ import annotations

import dataclasses
import enum
import math

import jax
import jax.numpy as jnp

from interp.choices import choice  # noqa: F401 (toy modules use data.choice)

TWO_32 = 4294967296.0


class Prng(str, enum.Enum):
  """jax.random key implementations (`jax.random.key(seed, impl=...)`)."""

  THREEFRY2X32 = "threefry2x32"
  PHILOX2X32 = "philox2x32"
  PHILOX4X32 = "philox4x32"
  THREEFRY4X32 = "threefry4x32"
  RBG = "rbg"
  UNSAFE_RBG = "unsafe_rbg"


class Bits(str, enum.Enum):
  """Random bits one feature sample costs (see the module docstring)."""

  SHARED_32 = "32"
  SEPARATE_64 = "64"


class SetKind(str, enum.Enum):
  INDEPENDENT = "independent"
  CORRELATED = "correlated"
  ANTICORRELATED = "anticorrelated"


@dataclasses.dataclass(frozen=True)
class FeatureSets:
  """Consecutive features grouped into sets of `size` (the last features may stay independent:
  `n_sets` sets are formed, the rest are independent). A set uses its first member's density."""

  kind: SetKind = SetKind.INDEPENDENT
  size: int = 1
  n_sets: int = 0

  @classmethod
  def parse(cls, text: str) -> "FeatureSets":
    """`independent`, `correlated:SIZE[:N_SETS]` or `anticorrelated:SIZE[:N_SETS]` (--feature_sets).

    N_SETS defaults to as many whole sets as the features allow.
    """
    parts = text.split(":")
    try:
      kind = SetKind(parts[0])
      numbers = [int(p) for p in parts[1:]]
    except ValueError:
      numbers = None
    if numbers is None or len(numbers) > 2 or (kind == SetKind.INDEPENDENT and numbers) or (
        kind != SetKind.INDEPENDENT and (not numbers or min(numbers) < 1)):
      raise ValueError(f"--feature_sets={text!r}: expected one of "
                       f"{[k.value for k in SetKind]}, the last two as KIND:SIZE[:N_SETS] with "
                       f"positive integers, e.g. 'anticorrelated:2'")
    if kind == SetKind.INDEPENDENT:
      return cls()
    return cls(kind, numbers[0], numbers[1] if len(numbers) > 1 else 0)

  def resolve(self, n_features: int) -> "FeatureSets":
    """With `n_sets` filled in; raises if the sets do not fit in `n_features`."""
    if self.kind == SetKind.INDEPENDENT:
      return self
    n_sets = self.n_sets or n_features // self.size
    if n_sets < 1 or n_sets * self.size > n_features:
      raise ValueError(f"{n_sets} {self.kind.value} sets of {self.size} features do not fit in "
                       f"{n_features} features")
    return dataclasses.replace(self, n_sets=n_sets)

  def to_str(self) -> str:
    if self.kind == SetKind.INDEPENDENT:
      return self.kind.value
    return f"{self.kind.value}:{self.size}:{self.n_sets}"


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """How features are sampled.

  Attributes:
    prng: the key implementation.
    bits: random bits per feature sample.
    sets: a `FeatureSets.parse` spec.
    fused: for threefry2x32, compute bits with the fusible unrolled lowering (the same numbers
      as jax.random.bits); False uses jax.random.bits itself (for measurements).
  """

  prng: Prng = Prng.THREEFRY2X32
  bits: Bits = Bits.SHARED_32
  sets: str = dataclasses.field(default="independent", metadata={"flag": "feature_sets"})
  fused: bool = dataclasses.field(default=True, metadata={"flag": None})  # for measurements

  def __post_init__(self):
    object.__setattr__(self, "prng", choice(Prng, self.prng, "--prng"))
    object.__setattr__(self, "bits", choice(Bits, self.bits, "--bits"))
    FeatureSets.parse(self.sets)

  def to_dict(self) -> dict:
    return {"prng": self.prng.value, "bits": self.bits.value, "sets": self.sets,
            "fused": self.fused}

  @property
  def uses_fused_threefry(self) -> bool:
    return self.fused and self.prng == Prng.THREEFRY2X32

  def words_per_sample(self, n_features: int) -> float:
    """32-bit words drawn per input vector (all features)."""
    sets = FeatureSets.parse(self.sets).resolve(n_features)
    per = 1 if self.bits == Bits.SHARED_32 else 2
    if sets.kind == SetKind.INDEPENDENT:
      return per * n_features
    free = n_features - sets.n_sets * sets.size
    if sets.kind == SetKind.CORRELATED:  # one mask word per set, one value word per member
      return sets.n_sets * (1 + sets.size) + per * free
    return per * (sets.n_sets + free)  # anticorrelated: one word picks member and value


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k1, k2, x1, x2):
  """Threefry-2x32 (20 rounds), unrolled: the same function as jax's `threefry2x32_p`, written so
  that XLA fuses it (jax lowers it on CPU as a 5-iteration loop, which cannot fuse)."""
  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x0, x1 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
    x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x0, x1


def threefry_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """`jax.random.bits(key, shape, jnp.uint32)` for a threefry2x32 key (partitionable mode, jax's
  default), bit for bit, in a form XLA fuses with whatever consumes the bits."""
  size = math.prod(shape)
  if size >= 2 ** 32:
    raise ValueError(f"threefry_bits: {size} words exceed the 32-bit counter used here")
  k = jax.random.key_data(key)
  count = jax.lax.iota(jnp.uint32, size).reshape(shape)
  a, b = _threefry2x32(k[0], k[1], jnp.zeros_like(count), count)
  return a ^ b


def fold_in(key: jax.Array, data, config: "DataConfig") -> jax.Array:
  """`jax.random.fold_in`, through the fused threefry when the config uses it."""
  if not config.uses_fused_threefry:
    return jax.random.fold_in(key, data)
  k = jax.random.key_data(key)
  a, b = _threefry2x32(k[0], k[1], jnp.uint32(0), jnp.asarray(data, dtype=jnp.uint32))
  return jax.random.wrap_key_data(jnp.stack([a, b]), impl=Prng.THREEFRY2X32.value)


def random_bits(key: jax.Array, shape: tuple[int, ...], config: "DataConfig") -> jax.Array:
  """uint32 words: the fused threefry or `jax.random.bits`."""
  if config.uses_fused_threefry:
    return threefry_bits(key, shape)
  return jax.random.bits(key, shape, jnp.uint32)


def _unit(u: jax.Array) -> jax.Array:
  """Uniform [0, 1) float32 from uint32 words (23 mantissa bits, as jax.random.uniform)."""
  return jax.lax.bitcast_convert_type((u >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0


def _gate(u: jax.Array, density: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(present, value given present) from one word: u < p 2^32, and u / (p 2^32)."""
  threshold = density * TWO_32
  uf = u.astype(jnp.float32)
  return uf < threshold, uf * (1.0 / jnp.maximum(threshold, 1.0))  # one divide per feature


def _independent(key, density, batch_size: int, config: DataConfig) -> jax.Array:
  n = density.shape[-1]
  if config.bits == Bits.SHARED_32:
    present, value = _gate(random_bits(key, (batch_size, n), config), density)
    return jnp.where(present, value, 0.0)
  # Two calls, not one [2, ...] draw sliced in two: XLA fuses each with its consumer.
  mask = random_bits(fold_in(key, 0, config), (batch_size, n), config)
  value = _unit(random_bits(fold_in(key, 1, config), (batch_size, n), config))
  return jnp.where(mask.astype(jnp.float32) < density * TWO_32, value, 0.0)


def _anticorrelated(key, density, batch_size: int, config: DataConfig, size: int) -> jax.Array:
  """Per set: present with probability size * p, then one member, chosen uniformly, carries it."""
  n_sets = density.shape[-1]
  set_density = jnp.minimum(density * size, 1.0)
  if config.bits == Bits.SHARED_32:
    present, s = _gate(random_bits(key, (batch_size, n_sets), config), set_density)
    scaled = s * size  # uniform on [0, size): the integer part picks, the fraction is the value
    member = jnp.minimum(jnp.floor(scaled), size - 1)
    value = scaled - member
  else:
    present, s = _gate(random_bits(fold_in(key, 0, config), (batch_size, n_sets), config),
                       set_density)
    member = jnp.minimum(jnp.floor(s * size), size - 1)
    value = _unit(random_bits(fold_in(key, 1, config), (batch_size, n_sets), config))
  which = jnp.arange(size, dtype=jnp.float32)
  x = jnp.where(present[..., None] & (member[..., None] == which), value[..., None], 0.0)
  return x.reshape(batch_size, n_sets * size)


def _correlated(key, density, batch_size: int, config: DataConfig, size: int) -> jax.Array:
  """Per set: present with probability p, and then every member is, with its own value."""
  n_sets = density.shape[-1]
  mask = random_bits(fold_in(key, 0, config), (batch_size, n_sets), config)
  present = mask.astype(jnp.float32) < density * TWO_32
  value = _unit(random_bits(fold_in(key, 1, config), (batch_size, n_sets, size), config))
  return jnp.where(present[..., None], value, 0.0).reshape(batch_size, n_sets * size)


def sample(key: jax.Array, density: jax.Array, batch_size: int,
           config: DataConfig = DataConfig()) -> jax.Array:
  """One instance's batch of feature vectors.

  Args:
    key: a typed jax.random key of the config's `prng` (see `root_key`).
    density: [n_features] per-feature densities p in [0, 1].
    batch_size: rows.
    config: PRNG, bits per sample and feature sets.
  Returns:
    [batch_size, n_features] float32.
  """
  n = density.shape[-1]
  sets = FeatureSets.parse(config.sets).resolve(n)
  if sets.kind == SetKind.INDEPENDENT:
    return _independent(key, density, batch_size, config)
  grouped = sets.n_sets * sets.size
  set_density = density[:grouped:sets.size]
  k_sets = fold_in(key, 0, config)
  if sets.kind == SetKind.CORRELATED:
    x = _correlated(k_sets, set_density, batch_size, config, sets.size)
  else:
    x = _anticorrelated(k_sets, set_density, batch_size, config, sets.size)
  if grouped == n:
    return x
  free = _independent(fold_in(key, 1, config), density[grouped:], batch_size, config)
  return jnp.concatenate([x, free], -1)


def root_key(seed: int, prng: Prng) -> jax.Array:
  """The run's root key; every other key is a fold_in of it."""
  return jax.random.key(seed, impl=Prng(prng).value)
