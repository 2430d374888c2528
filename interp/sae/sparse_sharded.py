"""TopK encoding and sparse decoding when the latents are sharded over a mesh axis.

Under plain `jit`, XLA's partitioner meets `lax.top_k` over a sharded latent axis by gathering
the whole [batch, d_sae] pre-activations onto every device, and a row gather from the sharded
decoder (or the scatter of its gradient) by replicating the [d_sae, d_in] matrix: 840 GB per
device for a 34M-latent dictionary. Here both are written per shard with `shard_map`:

  encode  each shard takes the top k of its own latents (the sparse-backward `topk_encode`),
          and the top k of the k * n candidates (n shards) is kept: the same k latents as a
          global top k, with only k * n values per token ever gathered.
  decode  each shard adds the rows of the selected latents it holds; one psum over the latent
          axis sums the shards' partial reconstructions.

Autodiff goes through `shard_map`: gradients reach only the selected latents' rows on the shard
that holds them. Without an active mesh (inside `interp.parallel.sharding.activation_rules`)
or with an unsharded latent axis, the single-device functions run unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from interp.parallel import sharding as shd
from interp.precision import FLOAT32, Precision
from interp.sae.activation_rules import einsum


def _vary(x, axis):
  if hasattr(jax.lax, "pcast"):  # jax >= 0.8 spelling
    return jax.lax.pcast(x, axis, to="varying")
  return jax.lax.pvary(x, axis)


def _latent_mesh():
  """(mesh, latent mesh axis, batch mesh axis) when latents are sharded, else None."""
  active = shd.active()
  if active is None:
    return None
  mesh, rules = active
  table = dict(rules)
  axis = table.get("latent")
  if axis is None or mesh.shape[axis] == 1:
    return None
  return mesh, axis, table.get("batch")


def latents_sharded() -> bool:
  """Whether the enclosing activation rules shard the latent axis over more than one device."""
  return _latent_mesh() is not None


def topk(x_n: jax.Array, b_dec: jax.Array, w_enc: jax.Array, b_enc: jax.Array, k: int,
         local_topk):
  """(values, indices) [B, k] of the k largest ReLU'd pre-activations of (x_n - b_dec),
  shard-local work only.

  Args:
    local_topk: the single-device (x_n, b_dec, w_enc, b_enc, k) -> (values, indices).
  """
  where = _latent_mesh()
  if where is None or x_n.shape[0] % where[0].shape.get(where[2], 1):
    return local_topk(x_n, b_dec, w_enc, b_enc, k)
  mesh, axis, batch = where
  per_shard = w_enc.shape[1] // mesh.shape[axis]

  def local(x, c, w, b):
    # The custom backward returns per-shard partial gradients: x and b_dec (replicated over the
    # latent axis) get a partial from every latent shard, w, b and b_dec one from every batch
    # shard. Marking them as varying makes the transpose sum those partials (a psum).
    x, c = _vary(x, axis), _vary(c, axis)
    if batch is not None:
      w, b, c = _vary(w, batch), _vary(b, batch), _vary(c, batch)
    values, idx = local_topk(x, c, w, b, min(k, per_shard))
    return values, idx + jax.lax.axis_index(axis) * per_shard

  # Each shard's k candidates side by side: [B, n_shards * k], sharded over the latent axis; the
  # final top k over them is small (XLA gathers k * n_shards values per token, not d_sae).
  values, idx = jax.shard_map(
      local, mesh=mesh, in_specs=(P(batch, None), P(None), P(None, axis), P(axis)),
      out_specs=(P(batch, axis), P(batch, axis)))(x_n, b_dec, w_enc, b_enc)
  top, pos = jax.lax.top_k(values, k)
  return top, jnp.take_along_axis(idx, pos, axis=1)


def decode(values: jax.Array, indices: jax.Array, w_dec: jax.Array,
           prec: Precision = FLOAT32) -> jax.Array:
  """sum_j values[b, j] * w_dec[indices[b, j]] for [B, k] codes: [B, d_in] (float32; the
  products under `prec`, `interp.sae.activation_rules.einsum`)."""
  where = _latent_mesh()
  if where is None or values.ndim != 2 or values.shape[0] % where[0].shape.get(where[2], 1):
    # The gathered rows are activation-sized ([B, k, d_in]): kept cast, as activations are.
    rows = prec.cast_compute(jnp.take(w_dec, indices, axis=0))
    return einsum(prec, "...k,...kd->...d", values, rows)
  mesh, axis, batch = where

  def local(v, i, w):
    n = w.shape[0]
    i = i - jax.lax.axis_index(axis) * n
    mine = (i >= 0) & (i < n)
    rows = prec.cast_compute(jnp.take(w, jnp.clip(i, 0, n - 1), axis=0))
    return jax.lax.psum(einsum(prec, "bk,bkd->bd", jnp.where(mine, v, 0.0), rows), axis)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(batch, None), P(batch, None), P(axis, None)),
                       out_specs=P(batch, None))(values, indices, w_dec)
