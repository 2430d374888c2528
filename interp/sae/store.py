"""Activation store: chunks of a source -> a shuffled buffer on the mesh -> SAE batches.

Vocabulary (sites, rows and chunks: `interp.sae.activation_sources`):
  refill   the r-th filling of the buffer: `buffer_chunks` chunks (for a model: token batches
           r*B ... (r+1)*B - 1), shuffled by a permutation drawn from (seed, r) on the host.
  step     an SAE batch index. Step s reads refill r = s // batches_per_refill and the rows
           perm_r[(s % bpr) * batch_size : ...]. `batch(step)` is a pure function of s: a run
           resumed at step s rebuilds refill r and gets the identical batch. Rows left over when
           batch_size does not divide a refill are not used.

The buffer is [buffer_chunks, rows, ...] with rows sharded over `data`: each device holds only
its slice of every chunk, so a buffer of N activations costs N/n_data rows per device. A batch
is gathered by `shard_map`: every device picks the rows of the batch it holds (zeros elsewhere)
and a reduce-scatter over `data` hands each device its slice of the batch. Each value is summed
with zeros only, so batches are the same numbers on any mesh (the permutation never depends on
it); only the model's forward pass itself may round differently across meshes.

Finite sources (a cache, an array) are read in epochs: epoch e visits the chunks in an order
drawn from (seed, e), `buffer_chunks` at a time (chunks beyond a multiple of it sit out that
epoch). Disk caches (`interp.sae.activation_cache`) come back through `CachedStore` with the
same `batch(step)` contract.

Two dtypes (`--activation_dtype`, `interp.precision`):
  stored   what the source yields and the buffer and disk cache hold (`source.dtype`): float32,
           or bfloat16 for half the device, host and disk bytes.
  served   what `batch(step)` returns to the dictionary (`serve_dtype`, float32 by default):
           bfloat16 widens to float32 exactly, so a bfloat16 store only rounds once, at capture.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp.data import sources
from interp.models.config import TransformerConfig
from interp.sae.activation_cache import CachedActivations
from interp.sae.activation_sources import (ArraySource, ModelActivations,
                                           NonFiniteActivationError, to_host)

_SHUFFLE, _EPOCH = 1, 2  # spawn keys: independent streams from the token windows' (seed, step)


class ActivationStore:
  """SAE batches from a source through a shuffled buffer sharded over `data`.

  Interface the trainers use: `batch(step)`, `d_in`, `describe()`, `sample(n)`.
  """

  def __init__(self, source, batch_size: int, *, buffer_chunks: int = 1, seed: int = 0,
               serve_dtype=jnp.float32, reuse: int = 1):
    """Args:
      source: a chunked source (`ModelActivations`, `ArraySource`, `CachedActivations`).
      batch_size: rows per SAE batch (a multiple of the data axis).
      buffer_chunks: chunks per refill (model batches, or cache shards).
      seed: the shuffle (and epoch order) seed.
      serve_dtype: the dtype of the batches (the dictionary's compute dtype, or float32).
      reuse: refills that share one load of chunks, each with its own shuffle: every row is
        served `reuse` times and the source (a model's forward) runs 1/reuse as often. For
        a short run whose harvest costs as much as its steps (the figure suite's transcoders).
    """
    self.source, self.mesh, self.seed, self.batch_size = source, source.mesh, seed, batch_size
    self.serve_dtype = np.dtype(serve_dtype)
    sources.check_batch_size(batch_size, self.mesh)
    if buffer_chunks <= 0:
      raise ValueError(f"--buffer_batches={buffer_chunks} must be positive")
    if not (isinstance(reuse, int) and reuse >= 1):
      raise ValueError(f"--buffer_reuse={reuse!r} must be an integer >= 1")
    self.reuse = reuse
    finite = source.n_chunks is not None
    self.buffer_chunks = min(buffer_chunks, source.n_chunks) if finite else buffer_chunks
    self.rows_per_refill = self.buffer_chunks * source.rows_per_chunk
    if self.rows_per_refill < batch_size:
      raise ValueError(f"--batch_size={batch_size} exceeds the buffer's {self.rows_per_refill} "
                       f"activations ({self.buffer_chunks} x {source.rows_per_chunk}); raise "
                       f"--buffer_batches or lower --batch_size")
    self.batches_per_refill = self.rows_per_refill // batch_size
    self.unused_per_refill = self.rows_per_refill % batch_size
    if self.unused_per_refill > self.rows_per_refill // 10:
      logging.warning("activation store: %d of the %d activations of each refill are never served "
                      "(--batch_size=%d does not divide them); choose sizes that divide",
                      self.unused_per_refill, self.rows_per_refill, batch_size)
    self.refills_per_epoch = source.n_chunks // self.buffer_chunks if finite else None
    self._refill, self._perm, self._buffer, self._loaded = None, None, None, None
    self._gather = _make_gather(self.mesh, source.rows_per_chunk, source.padded_rows,
                                len(source.row_shape), self.serve_dtype)

  @property
  def d_in(self) -> int:
    return int(self.source.d_in)

  @property
  def sites(self) -> tuple[str, ...]:
    return tuple(self.source.sites)

  @property
  def buffer_bytes(self) -> int:
    """Bytes the shuffle buffer holds over all devices (0 before the first batch)."""
    return 0 if self._buffer is None else int(self._buffer.nbytes)

  def refill_of(self, step: int) -> int:
    return step // self.batches_per_refill

  def chunks_of(self, refill: int) -> list[int]:
    """The source chunks refill r shuffles together (the same for `reuse` refills in a row)."""
    bc, refill = self.buffer_chunks, refill // self.reuse
    if self.refills_per_epoch is None:
      return list(range(refill * bc, (refill + 1) * bc))
    epoch, q = divmod(refill, self.refills_per_epoch)
    order = np.random.default_rng(np.random.SeedSequence([self.seed, epoch], spawn_key=(_EPOCH,))
                                  ).permutation(self.source.n_chunks)
    return [int(c) for c in order[q * bc:(q + 1) * bc]]

  def permutation(self, refill: int) -> np.ndarray:
    """Refill r's shuffle: row k of the shuffled buffer is row perm[k] of its chunks in order."""
    rng = np.random.default_rng(np.random.SeedSequence([self.seed, refill], spawn_key=(_SHUFFLE,)))
    return rng.permutation(self.rows_per_refill).astype(np.int32)

  def batch(self, step: int) -> jax.Array:
    """SAE batch `step`: [batch_size, *row_shape] in `serve_dtype`, rows sharded over `data`.

    Raises:
      NonFiniteActivationError: naming the step and site, when the refill holds NaN or Inf.
    """
    if step < 0:
      raise ValueError(f"step must be non-negative, got {step}")
    refill, i = divmod(step, self.batches_per_refill)
    if refill != self._refill:
      self._fill(refill, step)
    idx = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
    return self._gather(self._buffer, idx)

  def _fill(self, refill: int, step: int) -> None:
    wanted = self.chunks_of(refill)
    # An in-memory array (one chunk) only needs a new permutation each epoch.
    chunks, counts = ([] if wanted == self._loaded else wanted), []
    self._refill, self._loaded = None, None
    if self._buffer is None:
      shape = (self.buffer_chunks, self.source.padded_rows) + tuple(self.source.row_shape)
      self._buffer = _zeros(self.mesh, shape, np.dtype(self.source.dtype))
    for j, t in enumerate(chunks):
      x = self.source.chunk(t)
      counts.append(_count_nonfinite(x, len(self.sites)))
      self._buffer = _put_chunk(self._buffer, x, jnp.int32(j))
    for t, count in zip(chunks, counts):
      count = np.asarray(count)
      if count.any():
        site = int(np.argmax(count > 0))
        total = self.source.rows_per_chunk * math.prod(self.source.row_shape) // len(count)
        raise NonFiniteActivationError(
            f"non-finite activations at step {step}, site {self.sites[site]} ({count[site]} of "
            f"{total} values) in {self.source.chunk_name(t)} of refill {refill}")
    self._perm, self._refill, self._loaded = self.permutation(refill), refill, wanted

  def sample(self, n: int) -> np.ndarray:
    """The first n rows the store serves (batches 0, 1, ...), on the host."""
    steps = -(-n // self.batch_size)
    return np.concatenate([to_host(self.batch(s)) for s in range(steps)])[:n]

  def describe(self) -> dict:
    source = self.source.describe()
    return {"model": source.get("model"), "sites": list(self.sites), "d_in": self.d_in,
            "dtype": np.dtype(self.source.dtype).name, "batch_size": self.batch_size,
            "buffer_chunks": self.buffer_chunks, "rows_per_refill": self.rows_per_refill,
            "batches_per_refill": self.batches_per_refill,
            "unused_rows_per_refill": self.unused_per_refill,
            "refills_per_epoch": self.refills_per_epoch, "seed": self.seed, "source": source,
            # Only when set, so run folders written before it existed still resume.
            **({"reuse": self.reuse} if self.reuse != 1 else {})}


# Programs shared by every store of the same shapes (a sweep or evaluation builds many stores).

@functools.partial(jax.jit, donate_argnums=0)
def _put_chunk(buffer, x, j):
  return jax.lax.dynamic_update_index_in_dim(buffer, x, j, 0)


@functools.partial(jax.jit, static_argnums=1)
def _count_nonfinite(x, n_sites: int):
  """Non-finite values per site in a chunk: int32 [n_sites]."""
  return jnp.sum(~jnp.isfinite(x.reshape(x.shape[0], n_sites, -1)), axis=(0, 2), dtype=jnp.int32)


def _zeros(mesh: Mesh, shape, dtype) -> jax.Array:
  """The buffer: [chunks, rows, ...], rows over `data`."""
  return _zeros_program(mesh, tuple(shape), dtype)()


@functools.lru_cache(maxsize=16)
def _zeros_program(mesh, shape, dtype):
  return jax.jit(lambda: jnp.zeros(shape, dtype),
                 out_shardings=NamedSharding(mesh, P(None, "data")))


@functools.lru_cache(maxsize=16)
def _make_gather(mesh: Mesh, rows: int, padded: int, row_ndim: int, dtype):
  """jit (buffer [c, padded, ...] over data, idx [b]) -> buffer rows idx [b, ...] over data,
  as `dtype` (the reduce-scatter adds zeros only, so it runs in the stored dtype exactly)."""
  local = padded // mesh.shape["data"]

  def gather(buf, idx):
    chunk = idx // rows
    i = idx % rows - jax.lax.axis_index("data") * local
    mine = (i >= 0) & (i < local)
    picked = buf[chunk, jnp.clip(i, 0, local - 1)]
    picked = jnp.where(mine.reshape((-1,) + (1,) * row_ndim), picked, jnp.zeros((), buf.dtype))
    out = jax.lax.psum_scatter(picked, "data", scatter_dimension=0, tiled=True)
    return out.astype(dtype)

  return jax.jit(jax.shard_map(gather, mesh=mesh, in_specs=(P(None, "data"), P()),
                               out_specs=P("data")))


class ModelStore(ActivationStore):
  """The activation store of a model: `ModelActivations` through the shuffled buffer."""

  def __init__(self, cfg: TransformerConfig, params, mesh: Mesh, sites, source, *,
               batch_size: int, context_length: int = 128, model_batch_size: int = 8,
               buffer_batches: int = 16, seed: int = 0, drop_bos: bool | None = None,
               dtype=jnp.float32, param_shardings=None, model_name: str = "transformer",
               precision=None, serve_dtype=jnp.float32, reuse: int = 1):
    """Refill r runs token batches q*buffer_batches ... (q+1)*buffer_batches - 1 of
    `model_batch_size` windows each, q = r // reuse (see `ModelActivations` for the other
    arguments; `dtype` is the stored dtype, `serve_dtype` the batches')."""
    super().__init__(
        ModelActivations(cfg, params, mesh, sites, source, context_length=context_length,
                         batch_size=model_batch_size, seed=seed, drop_bos=drop_bos, dtype=dtype,
                         param_shardings=param_shardings, model_name=model_name,
                         precision=precision),
        batch_size, buffer_chunks=buffer_batches, seed=seed, serve_dtype=serve_dtype,
        reuse=reuse)


class ArrayStore(ActivationStore):
  """Activations held in memory (synthetic data, tests), one epoch per refill."""

  def __init__(self, array, batch_size: int, mesh: Mesh, seed: int = 0, *, name: str = "array",
               sites=None, dtype=None, serve_dtype=jnp.float32):
    super().__init__(ArraySource(array, mesh, name, sites, dtype), batch_size, seed=seed,
                     serve_dtype=serve_dtype)


class CachedStore(ActivationStore):
  """A disk cache streamed back through the shuffled buffer (`buffer_shards` shards a refill)."""

  def __init__(self, directory: str, batch_size: int, mesh: Mesh, seed: int = 0, *,
               buffer_shards: int = 4, expect: dict | None = None, verify: bool = True,
               serve_dtype=jnp.float32):
    super().__init__(CachedActivations(directory, mesh, expect=expect, verify=verify),
                     batch_size, buffer_chunks=buffer_shards, seed=seed, serve_dtype=serve_dtype)
