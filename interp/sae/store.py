"""Activation store: activations at hook sites -> a shuffled buffer on the mesh -> SAE batches.

Vocabulary:
  site     a hook name (`interp.models.hooks`, TransformerLens style) whose activation is read,
           e.g. `blocks.6.hook_resid_post`. Only per-token hooks ([b p ...]); trailing axes are
           flattened, so `attn.hook_z` [b p h e] gives rows of width h*e.
  row      one token's activation: [d] for one site, [n_sites, d] for several (same d).
  chunk    a unit of a source, rows in source order: one model batch of token windows
           (`ModelActivations`), one shard of a disk cache (`CachedActivations`), or a whole
           array (`ArraySource`). `chunk(t)` is a global jax.Array with rows sharded over `data`,
           zero-padded to a multiple of the data axis (padding rows are never read).
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
epoch). Disk caches: `cache_activations` writes fixed-size `.npy` shards and `meta.json`
atomically and resumes; `CachedStore` streams them back with the same `batch(step)` contract.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp import jsonio
from interp.data import sources
from interp.models import hooks, sharded
from interp.models.config import PositionalType, TransformerConfig
from interp.parallel import mesh as mesh_lib

META = "meta.json"
CACHE_FORMAT = "interp.activation_cache/1"
_SHUFFLE, _EPOCH = 1, 2  # spawn keys: independent streams from the token windows' (seed, step)
_NOT_PER_TOKEN = ("attn.hook_attn_scores", "attn.hook_pattern")


class NonFiniteActivationError(FloatingPointError):
  """NaN or Inf activations; the message names the step (or token batch) and the site."""


class CacheError(ValueError):
  """A disk cache that is corrupt, truncated, incomplete, or holds other activations."""


def check_sites(cfg: TransformerConfig, sites) -> tuple[tuple[str, ...], int]:
  """Validates hook sites for a store. Returns (sites, width d).

  Raises:
    ValueError: naming `--hook` and the closest valid names for a site the model lacks; for a
      site without one activation per token; for sites of different widths.
  """
  sites = (sites,) if isinstance(sites, str) else tuple(sites)
  if not sites:
    raise ValueError("--hook: give at least one hook site, e.g. blocks.0.hook_resid_post")
  hooks.check_names(cfg, sites, "--hook")
  shapes = hooks.hook_shapes(cfg, 1, 2)
  widths = {}
  for site in sites:
    if site.endswith(_NOT_PER_TOKEN):
      raise ValueError(f"--hook={site}: attention scores and patterns are [b h p s], not one "
                       f"activation per token; read attn.hook_z or hook_attn_out instead")
    widths[site] = math.prod(shapes[site][2:])
  if len(set(widths.values())) > 1:
    raise ValueError(f"--hook: sites of different widths cannot share one store: {widths}")
  return sites, widths[sites[0]]


def _padded(rows: int, mesh: Mesh) -> int:
  n = mesh.shape["data"]
  return -(-rows // n) * n


def _host(x: jax.Array) -> np.ndarray:
  """A global array on every process's host."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def put_rows(host: np.ndarray, mesh: Mesh) -> jax.Array:
  """Rows of a host array (or memory map) as a global array over `data`, zero-padded.

  Each process reads only the rows its devices hold.
  """
  rows, padded = host.shape[0], _padded(host.shape[0], mesh)

  def fetch(index):
    start, stop, _ = index[0].indices(padded)
    out = np.zeros((stop - start,) + host.shape[1:], host.dtype)
    if min(stop, rows) > start:
      out[:min(stop, rows) - start] = host[start:min(stop, rows)]
    return out[(slice(None),) + tuple(index[1:])]

  return jax.make_array_from_callback((padded,) + host.shape[1:], NamedSharding(mesh, P("data")),
                                      fetch)


def _dtype_name(dtype) -> str:
  return np.dtype(dtype).name


# ----- Sources: chunk(t) -> global [padded rows, *row_shape] over `data`.

class ModelActivations:
  """Activations of a model at hook sites over step-indexed token batches (one chunk per batch).

  Chunk t is the model run on the token windows `source.batch(seed, t, batch_size, length)`,
  every process computing its own rows; row order is (sequence, position), with the first
  position dropped when `drop_bos`.
  """

  def __init__(self, cfg: TransformerConfig, params, mesh: Mesh, sites, source, *,
               context_length: int, batch_size: int, seed: int = 0, drop_bos: bool | None = None,
               dtype=jnp.float32, param_shardings=None, model_name: str = "transformer"):
    """Args:
      cfg, params: the model; params placed on `mesh` (else they are placed here).
      mesh: the (data, model) mesh.
      sites: one hook name (rows [d]) or several of equal width (rows [n_sites, d]).
      source: token windows (`interp.data.sources` / `interp.data.tokenized`).
      context_length: tokens per window, BOS included.
      batch_size: windows per model batch (a multiple of the data axis).
      seed: token-window seed.
      drop_bos: leave out position 0; None drops it when the source prepends a BOS (Gemma).
      dtype: dtype of the stored activations.
      param_shardings: the params' shardings, when known.
      model_name: recorded in `describe` and disk caches (e.g. "gemma-3-270m").
    """
    self.sites, self.d_in = check_sites(cfg, sites)
    self.mesh, self.source, self.seed, self.cfg = mesh, source, seed, cfg
    self.context_length, self.batch_size, self.model_name = context_length, batch_size, model_name
    self.drop_bos = (getattr(source, "bos_id", None) is not None) if drop_bos is None else drop_bos
    self.dtype = np.dtype(dtype)
    if batch_size <= 0 or batch_size % mesh.shape["data"]:
      raise ValueError(f"--model_batch_size={batch_size} is not divisible by the mesh's data axis "
                       f"({mesh.shape['data']}); use a multiple of it")
    mesh_lib.process_rows(batch_size)
    if context_length < 1 + self.drop_bos:
      raise ValueError(f"--context_length={context_length} leaves no tokens")
    if cfg.positional == PositionalType.LEARNED and context_length > cfg.n_ctx:
      raise ValueError(f"--context_length={context_length} exceeds the model's n_ctx={cfg.n_ctx}")
    _check_vocab(source, cfg.vocab_size)
    self.row_shape = (self.d_in,) if len(self.sites) == 1 else (len(self.sites), self.d_in)
    self.rows_per_chunk = batch_size * (context_length - self.drop_bos)
    self.padded_rows = self.rows_per_chunk
    self.n_chunks = None  # unbounded
    self.params, shardings = _placed(cfg, params, mesh, param_shardings)
    leaves, treedef = jax.tree.flatten(shardings)
    self._capture = _capture_program(cfg, mesh, self.sites, int(self.drop_bos), self.row_shape,
                                     self.dtype, treedef, tuple(leaves))

  def tokens(self, t: int) -> jax.Array:
    """The global [batch_size, context_length] token windows of chunk t, sharded over `data`."""
    local = self.source.batch(self.seed, t, self.batch_size, self.context_length,
                              mesh_lib.process_rows(self.batch_size))
    return mesh_lib.global_batch(self.mesh, local, "--model_batch_size")

  def chunk(self, t: int) -> jax.Array:
    return self._capture(self.params, self.tokens(t))

  def chunk_name(self, t: int) -> str:
    return f"token batch {t}"

  def describe(self) -> dict:
    return {"kind": "model", "model": self.model_name, "model_config": self.cfg.to_dict(),
            "sites": list(self.sites), "d_in": self.d_in, "dtype": self.dtype.name,
            "context_length": self.context_length, "model_batch_size": self.batch_size,
            "drop_bos": self.drop_bos, "seed": self.seed,
            "tokens_per_batch": self.rows_per_chunk, "source": self.source.describe()}


@functools.lru_cache(maxsize=8)
def _capture_program(cfg, mesh, sites, drop, row_shape, dtype, treedef, sharding_leaves):
  """jit (params, tokens) -> rows [b * (p - drop), *row_shape] over `data`, for one model, mesh
  and site set (memoised: every store of the same model and mesh shares the compiled forward)."""
  fwd = sharded.make_forward(cfg, mesh, treedef.unflatten(sharding_leaves), capture=sites)

  def capture(params, tokens):
    # Only the cache leaves this function, so XLA drops the unembedding and later layers.
    _, cache = fwd(params, tokens)
    acts = [cache[s].reshape(tokens.shape[:2] + (-1,))[:, drop:] for s in sites]
    x = acts[0] if len(acts) == 1 else jnp.stack(acts, axis=2)
    return x.reshape((-1,) + row_shape).astype(dtype)

  return jax.jit(capture, out_shardings=NamedSharding(mesh, P("data")))


def _check_vocab(source, vocab_size: int) -> None:
  tokens = getattr(source, "tokens", None)
  if tokens is not None and len(tokens):
    top = int(tokens.max())
  else:
    top = getattr(source, "vocab_size", 0) - 1
  if top >= vocab_size:
    raise ValueError(f"data {source.describe().get('source')!r} has token id {top}, outside the "
                     f"model's vocabulary (vocab_size={vocab_size}); use the model's tokenizer "
                     f"(interp.data.tokenized)")


def _placed(cfg, params, mesh, param_shardings):
  """(params, shardings): as given when they already live on `mesh`, else placed there."""
  if param_shardings is not None:
    return params, param_shardings
  leaves = jax.tree.leaves(params)
  if all(isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding)
         and x.sharding.mesh == mesh for x in leaves):
    return params, jax.tree.map(lambda x: x.sharding, params)
  return sharded.place(cfg, params, mesh)


class ArraySource:
  """An in-memory array of activations [n, d] or [n, n_sites, d] as a single chunk."""

  def __init__(self, array, mesh: Mesh, name: str = "array", sites=None):
    self.array = np.asarray(array)
    if self.array.dtype == np.float64:  # JAX's default precision
      self.array = self.array.astype(np.float32)
    if self.array.ndim not in (2, 3) or not len(self.array):
      raise ValueError(f"{name}: expected activations [n, d] or [n, n_sites, d], got shape "
                       f"{self.array.shape}")
    self.mesh, self.name = mesh, name
    n_sites = 1 if self.array.ndim == 2 else self.array.shape[1]
    self.sites = tuple(sites) if sites else ((name,) if n_sites == 1 else
                                             tuple(f"{name}[{i}]" for i in range(n_sites)))
    self.d_in, self.row_shape = self.array.shape[-1], self.array.shape[1:]
    self.dtype = self.array.dtype
    self.rows_per_chunk, self.n_chunks = len(self.array), 1
    self.padded_rows = _padded(len(self.array), mesh)

  def chunk(self, t: int) -> jax.Array:
    del t
    return put_rows(self.array, self.mesh)

  def chunk_name(self, t: int) -> str:
    return self.name

  def describe(self) -> dict:
    return {"kind": "array", "model": None, "name": self.name, "sites": list(self.sites),
            "d_in": int(self.d_in), "dtype": self.dtype.name, "rows": int(len(self.array))}


# ----- The shuffled buffer.

class ActivationStore:
  """SAE batches from a source through a shuffled buffer sharded over `data`.

  Interface the trainers use: `batch(step)`, `d_in`, `describe()`, `sample(n)`.
  """

  def __init__(self, source, batch_size: int, *, buffer_chunks: int = 1, seed: int = 0):
    """Args:
      source: a chunked source (`ModelActivations`, `ArraySource`, `CachedActivations`).
      batch_size: rows per SAE batch (a multiple of the data axis).
      buffer_chunks: chunks per refill (model batches, or cache shards).
      seed: the shuffle (and epoch order) seed.
    """
    self.source, self.mesh, self.seed, self.batch_size = source, source.mesh, seed, batch_size
    sources.check_batch_size(batch_size, self.mesh)
    if buffer_chunks <= 0:
      raise ValueError(f"--buffer_batches={buffer_chunks} must be positive")
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
                                len(source.row_shape))

  @property
  def d_in(self) -> int:
    return int(self.source.d_in)

  @property
  def sites(self) -> tuple[str, ...]:
    return tuple(self.source.sites)

  def refill_of(self, step: int) -> int:
    return step // self.batches_per_refill

  def chunks_of(self, refill: int) -> list[int]:
    """The source chunks refill r shuffles together."""
    bc = self.buffer_chunks
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
    """SAE batch `step`: [batch_size, *row_shape], rows sharded over `data`.

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
    return np.concatenate([_host(self.batch(s)) for s in range(steps)])[:n]

  def describe(self) -> dict:
    source = self.source.describe()
    return {"model": source.get("model"), "sites": list(self.sites), "d_in": self.d_in,
            "dtype": np.dtype(self.source.dtype).name, "batch_size": self.batch_size,
            "buffer_chunks": self.buffer_chunks, "rows_per_refill": self.rows_per_refill,
            "batches_per_refill": self.batches_per_refill,
            "unused_rows_per_refill": self.unused_per_refill,
            "refills_per_epoch": self.refills_per_epoch, "seed": self.seed, "source": source}


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
def _make_gather(mesh: Mesh, rows: int, padded: int, row_ndim: int):
  """jit (buffer [c, padded, ...] over data, idx [b]) -> buffer rows idx [b, ...] over data."""
  local = padded // mesh.shape["data"]

  def gather(buf, idx):
    chunk = idx // rows
    i = idx % rows - jax.lax.axis_index("data") * local
    mine = (i >= 0) & (i < local)
    picked = buf[chunk, jnp.clip(i, 0, local - 1)]
    picked = jnp.where(mine.reshape((-1,) + (1,) * row_ndim), picked, jnp.zeros((), buf.dtype))
    return jax.lax.psum_scatter(picked, "data", scatter_dimension=0, tiled=True)

  return jax.jit(jax.shard_map(gather, mesh=mesh, in_specs=(P(None, "data"), P()),
                               out_specs=P("data")))


class ModelStore(ActivationStore):
  """The activation store of a model: `ModelActivations` through the shuffled buffer."""

  def __init__(self, cfg: TransformerConfig, params, mesh: Mesh, sites, source, *,
               batch_size: int, context_length: int = 128, model_batch_size: int = 8,
               buffer_batches: int = 16, seed: int = 0, drop_bos: bool | None = None,
               dtype=jnp.float32, param_shardings=None, model_name: str = "transformer"):
    """Refill r runs token batches r*buffer_batches ... (r+1)*buffer_batches - 1 of
    `model_batch_size` windows each (see `ModelActivations` for the other arguments)."""
    super().__init__(
        ModelActivations(cfg, params, mesh, sites, source, context_length=context_length,
                         batch_size=model_batch_size, seed=seed, drop_bos=drop_bos, dtype=dtype,
                         param_shardings=param_shardings, model_name=model_name),
        batch_size, buffer_chunks=buffer_batches, seed=seed)


class ArrayStore(ActivationStore):
  """Activations held in memory (synthetic data, tests), one epoch per refill."""

  def __init__(self, array, batch_size: int, mesh: Mesh, seed: int = 0, *, name: str = "array",
               sites=None):
    super().__init__(ArraySource(array, mesh, name, sites), batch_size, seed=seed)


# ----- Disk cache.

def _shard_path(directory: str, index: int) -> str:
  return os.path.join(directory, f"shard_{index:06d}.npy")


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def _disk_view(x: np.ndarray) -> np.ndarray:
  """bfloat16 has no .npy type code: stored as its uint16 bits (meta.json keeps the dtype)."""
  return x.view(np.uint16) if x.dtype == jnp.bfloat16 else x


def read_meta(directory: str) -> dict:
  """The cache's meta.json. Raises CacheError naming the file when it is missing or unreadable."""
  path = os.path.join(directory, META)
  try:
    with open(path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise CacheError(f"{path} not found: {directory} is not an activation cache (write one with "
                     f"interp.sae.store.cache_activations)") from None
  except (OSError, ValueError) as e:
    raise CacheError(f"{path} is unreadable ({e}); delete the cache and rewrite it") from None
  if meta.get("format") != CACHE_FORMAT:
    raise CacheError(f"{path}: format {meta.get('format')!r}, expected {CACHE_FORMAT!r}")
  return meta


def _host_rows(source, start: int, stop: int, memo: dict) -> np.ndarray:
  """Rows [start, stop) of the source's stream (its chunks in order), checked finite."""
  rows = source.rows_per_chunk
  parts = []
  for t in range(start // rows, (stop - 1) // rows + 1):
    if t not in memo:
      memo.clear()
      x = _host(source.chunk(t))[:rows]
      bad = ~np.isfinite(x.reshape(rows, len(source.sites), -1))
      if bad.any():
        site = int(np.argmax(bad.any(axis=(0, 2))))
        raise NonFiniteActivationError(
            f"non-finite activations at {source.chunk_name(t)}, site {source.sites[site]} "
            f"({int(bad[:, site].sum())} of {bad[:, site].size} values)")
      memo[t] = x
    parts.append(memo[t])
  x = np.concatenate(parts) if len(parts) > 1 else parts[0]
  offset = (start // rows) * rows
  return x[start - offset:stop - offset]


def cache_activations(store_or_source, out_dir: str, n_tokens: int, *,
                      tokens_per_shard: int = 65_536) -> dict:
  """Writes a source's activations (unshuffled, stream order) to `out_dir` in .npy shards.

  Shard k holds rows [k * tokens_per_shard, (k + 1) * tokens_per_shard) of the stream: for a
  model, token batches 0, 1, ... in order. Each shard is written to a .tmp file and renamed, and
  meta.json (also atomic) lists each finished shard with its size and SHA-256, so a killed run
  leaves only whole shards; running the same call again skips them and writes the rest. Only
  process 0 writes; every process computes (the directory must be shared).

  Args:
    store_or_source: an `ActivationStore` (its source is used) or a source.
    out_dir: the cache directory.
    n_tokens: activations to write, rounded up to whole shards.
    tokens_per_shard: rows per shard.

  Returns:
    The meta.json contents.

  Raises:
    CacheError: when out_dir holds a cache of other activations (naming the differing field).
    NonFiniteActivationError: naming the token batch and site.
  """
  source = getattr(store_or_source, "source", store_or_source)
  if tokens_per_shard <= 0 or n_tokens <= 0:
    raise ValueError(f"n_tokens={n_tokens} and tokens_per_shard={tokens_per_shard} must be "
                     f"positive")
  n_shards = -(-n_tokens // tokens_per_shard)
  available = None if source.n_chunks is None else source.n_chunks * source.rows_per_chunk
  if available is not None and n_shards * tokens_per_shard > available:
    raise ValueError(f"n_tokens={n_tokens} ({n_shards} shards of {tokens_per_shard}) exceeds "
                     f"the {available} activations the source holds")
  described = source.describe()
  header = {"format": CACHE_FORMAT, "model": described.get("model"), "sites": list(source.sites),
            "d_in": int(source.d_in), "row_shape": [int(s) for s in source.row_shape],
            "dtype": np.dtype(source.dtype).name, "tokens_per_shard": tokens_per_shard,
            "source": described}
  header = json.loads(json.dumps(header))  # tuples -> lists, as they read back
  meta_path = os.path.join(out_dir, META)
  done = {}
  if os.path.exists(meta_path):
    old = read_meta(out_dir)
    for key, value in header.items():
      if old.get(key) != value:
        raise CacheError(f"{meta_path} holds other activations: {key} is {old.get(key)!r} there, "
                         f"{value!r} here; use another directory or the original settings")
    done = {e["index"]: e for e in old["shards"]
            if os.path.isfile(os.path.join(out_dir, e["file"]))
            and os.path.getsize(os.path.join(out_dir, e["file"])) == e["bytes"]}
  primary = jax.process_index() == 0
  if jax.process_count() > 1:  # everyone has read meta.json before process 0 changes anything
    multihost_utils.sync_global_devices("cache_activations: meta read")
  if primary:
    os.makedirs(out_dir, exist_ok=True)
    for leftover in glob.glob(os.path.join(out_dir, "shard_*.npy.tmp")):
      os.remove(leftover)  # an interrupted write
  meta = dict(header, n_shards=max([n_shards] + [k + 1 for k in done]), shards=[])
  memo: dict = {}
  for k in range(n_shards):
    if k in done:
      continue
    rows = _host_rows(source, k * tokens_per_shard, (k + 1) * tokens_per_shard, memo)
    if not primary:
      continue
    path = _shard_path(out_dir, k)
    with open(path + ".tmp", "wb") as f:
      np.save(f, _disk_view(np.ascontiguousarray(rows)))
      f.flush()
      os.fsync(f.fileno())
    done[k] = {"index": k, "file": os.path.basename(path), "rows": tokens_per_shard,
               "bytes": os.path.getsize(path + ".tmp"), "sha256": _sha256(path + ".tmp")}
    os.replace(path + ".tmp", path)
    jsonio.write_json_atomic(meta_path, dict(meta, shards=[done[i] for i in sorted(done)]),
                            indent=1, sort_keys=True)
  meta["shards"] = [done[i] for i in sorted(done)]
  if primary:
    jsonio.write_json_atomic(meta_path, meta, indent=1, sort_keys=True)
  if jax.process_count() > 1:  # nobody reads the cache before process 0 has finished it
    multihost_utils.sync_global_devices("cache_activations: written")
  return meta


class CachedActivations:
  """A disk cache as a source: chunk k is shard k, read from a memory map (each process reads
  only its rows); each shard's size, header and SHA-256 are checked the first time it is read."""

  def __init__(self, directory: str, mesh: Mesh, *, expect: dict | None = None,
               verify: bool = True):
    """Args:
      directory: written by `cache_activations`.
      mesh: the mesh to place rows on.
      expect: fields the cache must have, among model, sites, d_in, dtype, row_shape.
      verify: check each shard's SHA-256 on first read.

    Raises:
      CacheError: naming meta.json for a missing, unreadable, incomplete or mismatched cache.
    """
    self.directory, self.mesh, self.verify = directory, mesh, verify
    self.meta = meta = read_meta(directory)
    meta_path = os.path.join(directory, META)
    for key, value in (expect or {}).items():
      if key not in ("model", "sites", "d_in", "dtype", "row_shape"):
        raise ValueError(f"expect: unknown field {key!r}; valid: model, sites, d_in, dtype, "
                         f"row_shape")
      value = [value] if key == "sites" and isinstance(value, str) else value
      value = json.loads(json.dumps(_dtype_name(value) if key == "dtype" else value))
      if meta.get(key) != value:
        raise CacheError(f"{meta_path}: the cache has {key}={meta.get(key)!r}, expected "
                         f"{value!r} (it holds {meta['model']!r} at sites {meta['sites']}, "
                         f"d_in={meta['d_in']}, dtype={meta['dtype']})")
    indices = [e["index"] for e in meta["shards"]]
    if indices != list(range(meta["n_shards"])):
      raise CacheError(f"{meta_path}: the cache is incomplete ({len(indices)} of "
                       f"{meta['n_shards']} shards); rerun cache_activations to finish it")
    self.sites, self.d_in = tuple(meta["sites"]), meta["d_in"]
    self.row_shape, self.dtype = tuple(meta["row_shape"]), np.dtype(meta["dtype"])
    self.rows_per_chunk, self.n_chunks = meta["tokens_per_shard"], meta["n_shards"]
    self.padded_rows = _padded(self.rows_per_chunk, mesh)
    self._verified: set[int] = set()

  def shard(self, k: int) -> np.ndarray:
    """Shard k as a read-only memory map, checked against meta.json."""
    entry = self.meta["shards"][k]
    path = os.path.join(self.directory, entry["file"])
    expected = (f"{entry['bytes']} bytes: {entry['rows']} rows x {list(self.row_shape)} "
                f"{self.dtype.name}")
    if not os.path.isfile(path):
      raise CacheError(f"{path} is missing (meta.json lists it, {expected}); rerun "
                       f"cache_activations to rewrite it")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
      raise CacheError(f"{path} is truncated or corrupt: {size} bytes, expected {expected}; "
                       f"delete it and rerun cache_activations")
    if self.verify and k not in self._verified:
      digest = _sha256(path)
      if digest != entry["sha256"]:
        raise CacheError(f"{path} is corrupt: SHA-256 {digest[:16]}..., meta.json expects "
                         f"{entry['sha256'][:16]}... ({expected}); delete it and rerun "
                         f"cache_activations")
      self._verified.add(k)
    try:
      x = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
      raise CacheError(f"{path} is not a readable .npy shard ({e}); expected {expected}") from None
    disk_dtype = _disk_view(np.zeros(0, self.dtype)).dtype
    if x.shape != (entry["rows"],) + self.row_shape or x.dtype != disk_dtype:
      raise CacheError(f"{path} holds {x.dtype} {list(x.shape)}, but meta.json expects "
                       f"{disk_dtype} {[entry['rows']] + list(self.row_shape)}")
    return x.view(self.dtype) if x.dtype != self.dtype else x

  def chunk(self, k: int) -> jax.Array:
    return put_rows(self.shard(k), self.mesh)

  def chunk_name(self, k: int) -> str:
    return f"shard {k} ({self.meta['shards'][k]['file']})"

  def describe(self) -> dict:
    return {"kind": "cache", "model": self.meta["model"],
            "directory": os.path.abspath(self.directory), "sites": list(self.sites),
            "d_in": self.d_in, "dtype": self.dtype.name, "shards": self.n_chunks,
            "tokens": self.n_chunks * self.rows_per_chunk, "cached_from": self.meta["source"]}


class CachedStore(ActivationStore):
  """A disk cache streamed back through the shuffled buffer (`buffer_shards` shards a refill)."""

  def __init__(self, directory: str, batch_size: int, mesh: Mesh, seed: int = 0, *,
               buffer_shards: int = 4, expect: dict | None = None, verify: bool = True):
    super().__init__(CachedActivations(directory, mesh, expect=expect, verify=verify),
                     batch_size, buffer_chunks=buffer_shards, seed=seed)
