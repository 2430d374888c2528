"""Checksums and finiteness of a train state, computed on device in one jitted pass.

Vocabulary:
  word           an element's bits as uint32: 4-byte dtypes bitcast, 2- and 1-byte dtypes (and
                 bool) bitcast and widened, 8-byte dtypes split into two words, PRNG keys as
                 their key data.
  leaf checksum  sum over the words w_i of an array of mix(w_i) * m_i, with wrap-around (mod
                 2^32), where i is the word's position in the global (unsharded) array, mix is
                 a bijection of uint32 (murmur3's finaliser) and m_i = 2 * (i * phi) + 1 is odd.
                 An odd multiplier is invertible mod 2^32, so changing any single word (one
                 flipped byte, say) always changes the checksum; and integer sums are
                 associative, so a sharded array has the same checksum on any mesh and any
                 number of processes.
  fingerprint    `Fingerprint(checksums, non_finite)`: {leaf path: leaf checksum} for every
                 array of a tree, and the paths of floating-point leaves holding NaN or Inf.
                 Paths are `jax.tree_util.keystr` strings (".params['W_enc']").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The golden-ratio constant spreads consecutive positions over the whole uint32 range.
_PHI = 0x9E3779B9


# What a checkpoint's `checksums` item says it is: {"format": FORMAT, "leaves": {path: checksum}}.
FORMAT = "interp.checksum/1"


class CorruptCheckpointError(RuntimeError):
  """A restored array does not match the checksum saved with it: the files changed on disk."""


@dataclasses.dataclass(frozen=True)
class Fingerprint:
  """Attributes:
    checksums: leaf path -> leaf checksum (a Python int in [0, 2^32)), in tree order.
    non_finite: paths of floating-point leaves that hold NaN or Inf, in tree order.
  """

  checksums: dict[str, int]
  non_finite: tuple[str, ...]


def _words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words (see the module docstring)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = x.dtype.itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size in (1, 2):
    narrow = jnp.uint8 if size == 1 else jnp.uint16
    return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # a trailing axis of 2 words
  raise TypeError(f"cannot checksum an array of dtype {x.dtype}")


def _mix(w: jax.Array) -> jax.Array:
  """murmur3's 32-bit finaliser: a bijection, so distinct words stay distinct."""
  w = w ^ (w >> 16)
  w = w * jnp.uint32(0x85EBCA6B)
  w = w ^ (w >> 13)
  w = w * jnp.uint32(0xC2B2AE35)
  return w ^ (w >> 16)


def _leaf_checksum(x: jax.Array) -> jax.Array:
  w = _words(x)
  # The flat row-major position of each word in the global array, built from per-axis iotas so
  # that each shard computes its own slice (positions wrap past 2^32 words; still odd below).
  position, stride = jnp.zeros(w.shape, jnp.uint32), 1
  for axis in range(w.ndim - 1, -1, -1):
    position = position + jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * jnp.uint32(stride)
    stride = (stride * w.shape[axis]) % 2**32
  multiplier = position * jnp.uint32(_PHI) * jnp.uint32(2) + jnp.uint32(1)
  return jnp.sum(_mix(w) * multiplier, dtype=jnp.uint32)


@jax.jit
def _fingerprint_arrays(leaves: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
  checksums = [_leaf_checksum(x) for x in leaves]
  finite = [jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
            for x in leaves]
  return checksums, finite


def _host(x: jax.Array):
  # The outputs are scalars, hence replicated: any process's first shard is the whole value,
  # also when the array spans devices of other processes.
  return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def fingerprint(tree: Any) -> Fingerprint:
  """Checksums and non-finite leaves of `tree` (see the module docstring).

  Every process must call this with the same (global) arrays: it is one jitted program.

  Args:
    tree: a pytree of arrays (jax arrays, sharded or not, or numpy arrays).
  Returns:
    The tree's Fingerprint.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  paths = [jax.tree_util.keystr(p) for p, _ in flat]
  checksums, finite = _fingerprint_arrays([x for _, x in flat])
  return Fingerprint(
      checksums={p: int(_host(c)) for p, c in zip(paths, checksums)},
      non_finite=tuple(p for p, f in zip(paths, finite) if not bool(_host(f))))


def first_mismatch(saved: dict[str, int], restored: dict[str, int]) -> str | None:
  """The first leaf path (in `saved`'s order) whose checksum differs, or None when all agree."""
  for path, value in saved.items():
    if restored.get(path) != value:
      return path
  return None



def _as_dict_path(path: str) -> str:
  """A keystr path with attribute steps (".params") written as dict keys ("['params']"): how
  a state saved from dataclasses and named tuples reads back when restored as plain dicts."""
  out, i = [], 0
  while i < len(path):
    if path[i] == ".":
      j = i + 1
      while j < len(path) and (path[j].isalnum() or path[j] == "_"):
        j += 1
      out.append(f"['{path[i + 1:j]}']")
      i = j
    else:  # a [...] step, copied whole (its key may contain dots)
      j = path.index("]", i) + 1 if "]" in path[i:] else len(path)
      out.append(path[i:j])
      i = j
  return "".join(out)


def verify_restored(path: str, tree, saved) -> None:
  """Checks a tree restored as plain dicts (host numpy arrays) against a `checksums` record.

  The record's paths are those of the state as saved (".params['W']" for a TrainState); they
  are matched as dict keys ("['params']['W']"), and the arrays present in both are compared.

  Args:
    path: the step folder (for the message).
    tree: the restored state.
    saved: the step's `checksums` item.
  Raises:
    CorruptCheckpointError: the record is malformed or matches none of the arrays, or names
      the first array that differs.
  """
  if not isinstance(saved, dict) or saved.get("format") != FORMAT:
    raise CorruptCheckpointError(f"{path}/checksums is not a {FORMAT} record")
  got = fingerprint(tree).checksums
  want = {_as_dict_path(p): v for p, v in saved["leaves"].items()}
  common = {p: v for p, v in want.items() if p in got}
  if not common:
    raise CorruptCheckpointError(f"{path}/checksums names none of the restored arrays")
  bad = first_mismatch(common, got)
  if bad is not None:
    raise CorruptCheckpointError(f"{path}: {bad} does not match the checksum saved with it "
                                 "(the files changed on disk)")
