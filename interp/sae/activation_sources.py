"""Activation sources: activations at hook sites, served in chunks of rows on the mesh.

Vocabulary:
  site     a hook name (`interp.models.hooks`, TransformerLens style) whose activation is read,
           e.g. `blocks.6.hook_resid_post`. Only per-token hooks ([b p ...]); trailing axes are
           flattened, so `attn.hook_z` [b p h e] gives rows of width h*e.
  row      one token's activation: [d] for one site, [n_sites, d] for several (same d).
  chunk    a unit of a source, rows in source order: one model batch of token windows
           (`ModelActivations`), one shard of a disk cache
           (`interp.sae.activation_cache.CachedActivations`), or a whole array (`ArraySource`).
           `chunk(t)` is a global jax.Array with rows sharded over `data`, zero-padded to a
           multiple of the data axis (padding rows are never read).

A source has `chunk(t)`, `chunk_name(t)`, `describe()`, and `sites`, `d_in`, `row_shape`,
`dtype`, `rows_per_chunk`, `padded_rows`, `n_chunks` (None: unbounded). `interp.sae.store`
shuffles chunks into SAE batches.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp.models import hooks, sharded
from interp.models.config import PositionalType, TransformerConfig
from interp.parallel import mesh as mesh_lib
from interp.precision import FLOAT32, as_precision

_NOT_PER_TOKEN = ("attn.hook_attn_scores", "attn.hook_pattern")


class NonFiniteActivationError(FloatingPointError):
  """NaN or Inf activations; the message names the step (or token batch) and the site."""


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


def round_up_rows(rows: int, mesh: Mesh) -> int:
  """`rows` rounded up to a multiple of the mesh's data axis."""
  n = mesh.shape["data"]
  return -(-rows // n) * n


def to_host(x: jax.Array) -> np.ndarray:
  """A global array on every process's host."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def put_rows(host: np.ndarray, mesh: Mesh) -> jax.Array:
  """Rows of a host array (or memory map) as a global array over `data`, zero-padded.

  Each process reads only the rows its devices hold.
  """
  rows, padded = host.shape[0], round_up_rows(host.shape[0], mesh)

  def fetch(index):
    start, stop, _ = index[0].indices(padded)
    out = np.zeros((stop - start,) + host.shape[1:], host.dtype)
    if min(stop, rows) > start:
      out[:min(stop, rows) - start] = host[start:min(stop, rows)]
    return out[(slice(None),) + tuple(index[1:])]

  return jax.make_array_from_callback((padded,) + host.shape[1:], NamedSharding(mesh, P("data")),
                                      fetch)


class ModelActivations:
  """Activations of a model at hook sites over step-indexed token batches (one chunk per batch).

  Chunk t is the model run on the token windows `source.batch(seed, t, batch_size, length)`,
  every process computing its own rows; row order is (sequence, position), with the first
  position dropped when `drop_bos`.
  """

  def __init__(self, cfg: TransformerConfig, params, mesh: Mesh, sites, source, *,
               context_length: int, batch_size: int, seed: int = 0, drop_bos: bool | None = None,
               dtype=jnp.float32, param_shardings=None, model_name: str = "transformer",
               precision=None):
    """Args:
      cfg, params: the model; params placed on `mesh` (else they are placed here).
      mesh: the (data, model) mesh.
      sites: one hook name (rows [d]) or several of equal width (rows [n_sites, d]).
      source: token windows (`interp.data.sources` / `interp.data.tokenized`).
      context_length: tokens per window, BOS included.
      batch_size: windows per model batch (a multiple of the data axis).
      seed: token-window seed.
      drop_bos: leave out position 0; None drops it when the source prepends a BOS (Gemma).
      dtype: dtype of the stored activations (`--activation_dtype`): float32, or bfloat16 for
        half the bytes on device, on the host and in a disk cache.
      param_shardings: the params' shardings, when known.
      model_name: recorded in `describe` and disk caches (e.g. "gemma-3-270m").
      precision: the model forward's policy (`interp.precision`; None: float32). Independent of
        `dtype`: a float32 forward may store bfloat16 rows, rounded once at capture.
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
      raise ValueError(f"--context_length={context_length} exceeds the n_ctx={cfg.n_ctx} positions "
                       f"{model_name} learned; pass --context_length={cfg.n_ctx} or less")
    _check_vocab(source, cfg.vocab_size)
    self.row_shape = (self.d_in,) if len(self.sites) == 1 else (len(self.sites), self.d_in)
    self.rows_per_chunk = batch_size * (context_length - self.drop_bos)
    self.padded_rows = self.rows_per_chunk
    self.n_chunks = None  # unbounded
    self.params, shardings = _placed(cfg, params, mesh, param_shardings)
    leaves, treedef = jax.tree.flatten(shardings)
    self.precision = as_precision(precision)
    self._capture = _capture_program(cfg, mesh, self.sites, int(self.drop_bos), self.row_shape,
                                     self.dtype, treedef, tuple(leaves), self.precision)

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
def _capture_program(cfg, mesh, sites, drop, row_shape, dtype, treedef, sharding_leaves,
                     precision=FLOAT32):
  """jit (params, tokens) -> rows [b * (p - drop), *row_shape] over `data`, for one model, mesh
  and site set (memoised: every store of the same model and mesh shares the compiled forward)."""
  fwd = sharded.make_forward(cfg, mesh, treedef.unflatten(sharding_leaves), capture=sites,
                             precision=precision)

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

  def __init__(self, array, mesh: Mesh, name: str = "array", sites=None, dtype=None):
    """`dtype`: store the rows in this dtype (None: the array's own, float64 as float32)."""
    self.array = np.asarray(array)
    if dtype is not None:
      self.array = self.array.astype(np.dtype(dtype))
    elif self.array.dtype == np.float64:  # JAX's default precision
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
    self.padded_rows = round_up_rows(len(self.array), mesh)

  def chunk(self, t: int) -> jax.Array:
    del t
    return put_rows(self.array, self.mesh)

  def chunk_name(self, t: int) -> str:
    return self.name

  def describe(self) -> dict:
    return {"kind": "array", "model": None, "name": self.name, "sites": list(self.sites),
            "d_in": int(self.d_in), "dtype": self.dtype.name, "rows": int(len(self.array))}
