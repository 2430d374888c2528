"""Disk caches of activations: fixed-size `.npy` shards and a `meta.json` that lists them.

`cache_activations` writes a source's rows in stream order (shard k holds rows
[k * tokens_per_shard, (k + 1) * tokens_per_shard)), every file atomically, and resumes a killed
run; `CachedActivations` reads the shards back as a source (chunk k = shard k), checking each
shard's size, header and SHA-256 against meta.json. `interp.sae.store.CachedStore` serves them
as shuffled SAE batches.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from interp import jsonio
from interp.sae.activation_sources import (NonFiniteActivationError, put_rows, round_up_rows,
                                           to_host)

META = "meta.json"
CACHE_FORMAT = "interp.activation_cache/1"


class CacheError(ValueError):
  """A disk cache that is corrupt, truncated, incomplete, or holds other activations."""


def _dtype_name(dtype) -> str:
  return np.dtype(dtype).name


def shard_path(directory: str, index: int) -> str:
  """Where shard `index` of the cache in `directory` lives."""
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
                     f"interp.sae.activation_cache.cache_activations)") from None
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
      x = to_host(source.chunk(t))[:rows]
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
    path = shard_path(out_dir, k)
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
    self.padded_rows = round_up_rows(self.rows_per_chunk, mesh)
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
