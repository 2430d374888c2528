"""Activation rules of the dictionaries: the sparsifying nonlinearities and their gradients.

  topk_encode_centered  the k largest ReLU'd pre-activations per token, with a hand-written
                        backward pass (below); `topk_encode` for already-centred inputs
  relu_compact          ReLU's positive codes of a whole batch as one packed list, with the
                        same kind of backward pass (`SAEConfig.sparse_cap`)
  jumprelu              pre * H(pre - theta), straight-through to theta
  step_fn               H(pre - theta), the L0 count of JumpReLU, straight-through to theta
  batch_topk            the k * batch largest pre-activations of a whole batch (BatchTopK),
                        selected with `kth_largest`
  matmul, einsum        the dictionaries' matrix products under a precision policy
                        (`interp.precision`): float32 exactly as written, or compute-dtype
                        operands summed in float32 and returned in float32, so pre-activations
                        (what thresholds and top-k compare) and reconstructions (what the losses
                        read) are float32 whatever the compute dtype

TopK's encoder has a hand-written backward pass: autodiff of `lax.top_k` scatters the k
gradients per token into a dense [batch, d_sae] array and then pays two dense matmuls for the
encoder-weight and input gradients. Here both are formed from the k selected latents only
(a scatter-add of k rows per token), so only the forward encoder matmul is dense; for k large
against d_sae (AuxK) it scatters into a dense array instead (`SPARSE_BACKWARD_MAX_RATIO`).
JumpReLU's threshold gets its gradient from the rectangle-kernel estimator of width
`bandwidth` (Rajamanoharan et al., 2024). `interp.sae.dictionary` and
`interp.sae.transcoder` apply these rules.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from interp.precision import FLOAT32, Precision


def matmul(prec: Precision, a, b):
  """`a @ b` under `prec`: the plain float32 product when nothing is cast (so every float32
  number is the one it always was), else both operands in the compute dtype, summed in float32,
  returned in float32.

  What the backward pass keeps: `a` (activations) in the compute dtype, `b` (the weights) as
  given. The cast of `b` happens inside a rematerialised function, so the backward recasts the
  float32 parameters it already holds instead of keeping a compute-dtype copy of every weight
  from the forward pass: for a dictionary whose weights dwarf its activations (34M latents)
  that copy would cost more than bfloat16 saves. Pass `b` already cast to keep it cast.
  """
  if prec.is_float32:
    return a @ b
  return jax.checkpoint(lambda a, b: prec.matmul(a, prec.cast_compute(b), output=True))(
      prec.cast_compute(a), b)


def einsum(prec: Precision, spec: str, a, b):
  """`jnp.einsum(spec, a, b)` under `prec`, as `matmul` (`b` the weights)."""
  if prec.is_float32:
    return jnp.einsum(spec, a, b)
  return jax.checkpoint(lambda a, b: prec.einsum(spec, a, prec.cast_compute(b), output=True))(
      prec.cast_compute(a), b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def topk_encode_centered(x_n, b_dec, w_enc, b_enc, k, prec: Precision = FLOAT32):
  """(values, indices) of the k largest ReLU'd pre-activations (x_n - b_dec) @ w_enc + b_enc.

  The dense encoder product runs under `prec` (`matmul`); the pre-activations it selects from
  are float32. The backward pass touches only the k selected latents per token (float32, as
  the parameters are): their encoder columns and
  biases get a scatter-add, b_dec gets -(w_enc @ g_b_enc) (a matrix-vector product), and the
  per-token input gradient (a [B, k, d_in] gather) is formed only when x_n itself is
  differentiated; otherwise XLA drops it. With k above d_sae / `SPARSE_BACKWARD_MAX_RATIO`
  (AuxK's d_in / 2 dead latents) the [B, k, d_in] rows cost more than two dense products, so
  the backward scatters the gradients into a dense [B, d_sae] array and multiplies instead.
  """
  values, indices = jax.lax.top_k(matmul(prec, x_n - b_dec, w_enc) + b_enc, k)
  return jax.nn.relu(values), indices


def _topk_fwd(x_n, b_dec, w_enc, b_enc, k, prec):
  values, indices = topk_encode_centered(x_n, b_dec, w_enc, b_enc, k, prec)
  return (values, indices), (x_n, b_dec, w_enc, values, indices)


# Measured on 2 CPU cores (x_n not differentiated; with it the dense side wins by more):
# B 1,024, d_in 640, d_sae 5,120: k 32 sparse 0.036 s, dense 0.027 s; k 320 sparse 0.281 s,
# dense 0.032 s. B 4,096, d_in 512, d_sae 8,192, k 32: sparse 0.100 s, dense 0.190 s.
SPARSE_BACKWARD_MAX_RATIO = 64


def _topk_bwd(k, prec, res, g):
  del prec
  x_n, b_dec, w_enc, values, indices = res
  g_pre = jnp.where(values > 0, g[0], 0.0)                           # [B, k]
  d_sae, d_in = w_enc.shape[1], w_enc.shape[0]
  if k * SPARSE_BACKWARD_MAX_RATIO > d_sae:
    rows = jnp.arange(g_pre.shape[0])[:, None]
    dense = jnp.zeros((g_pre.shape[0], d_sae), g_pre.dtype).at[rows, indices].set(g_pre)
    g_b = dense.sum(0)
    return dense @ w_enc.T, -(w_enc @ g_b), (x_n - b_dec).T @ dense, g_b
  flat = indices.reshape(-1)
  g_b = jnp.zeros((d_sae,), g_pre.dtype).at[flat].add(g_pre.reshape(-1))
  rows = (g_pre[..., None] * (x_n - b_dec)[..., None, :]).reshape(-1, d_in)  # [B * k, d_in]
  g_w = jnp.zeros((d_sae, d_in), rows.dtype).at[flat].add(rows).T
  g_x = jnp.einsum("bk,bkd->bd", g_pre, jnp.take(w_enc.T, indices, axis=0))
  return g_x, -(w_enc @ g_b), g_w, g_b


topk_encode_centered.defvjp(_topk_fwd, _topk_bwd)


def topk_encode(x_c, w_enc, b_enc, k, prec: Precision = FLOAT32):
  """`topk_encode_centered` of already-centred inputs x_c (no pre-encoder bias)."""
  return topk_encode_centered(x_c, jnp.zeros_like(x_c[0]), w_enc, b_enc, k, prec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def relu_compact(x_n, b_dec, w_enc, b_enc, per_token: int, capacity: int,
                 prec: Precision = FLOAT32):
  """ReLU's positive codes of (x_n - b_dec) @ w_enc + b_enc [B, d_sae] as one list for the batch.

  Each token's `per_token` largest pre-activations are taken (`lax.top_k`) and the positive ones
  packed in token order into `capacity` slots: (values [C], rows [C], cols [C], full). Unused
  slots hold 0 at row B - 1, column 0, so `rows` never decreases (`segment_sum` may take it as
  sorted). `full` is true when a token's last kept value is positive (it may have had more) or
  the batch had more positive codes than `capacity`: then the list is not all of them.

  The work after the dense encoder product is proportional to the batch's positive codes, not
  to B * per_token: a token with 5 codes and one with 40 share the slots. The backward pass
  (float32, as the parameters are) scatters the codes' gradients into the encoder columns and
  biases they came from, as `topk_encode_centered`'s does.
  """
  pre = matmul(prec, x_n - b_dec, w_enc) + b_enc
  values, indices = jax.lax.top_k(pre, per_token)
  keep = (values > 0).reshape(-1)
  slot = jnp.cumsum(keep, dtype=jnp.int32) - 1
  # A token's smallest kept value as a min, not values[:, -1]: XLA:CPU turned that slice of
  # top_k's output into 5.7 s of work (0.3 s for the whole function otherwise, B 4,096, k 64).
  full = (values.min(-1) > 0).any() | (jnp.sum(keep, dtype=jnp.int32) > capacity)
  slot = jnp.where(keep, slot, capacity)  # out of range: dropped
  batch = x_n.shape[0]
  token = jnp.repeat(jnp.arange(batch, dtype=jnp.int32), per_token)

  def pack(x, fill):
    return jnp.full((capacity,), fill, x.dtype).at[slot].set(x, mode="drop")
  return (pack(values.reshape(-1), 0.0), pack(token, batch - 1),
          pack(indices.reshape(-1).astype(jnp.int32), 0), full)


def _compact_fwd(x_n, b_dec, w_enc, b_enc, per_token, capacity, prec):
  out = relu_compact(x_n, b_dec, w_enc, b_enc, per_token, capacity, prec)
  return out, (x_n, b_dec, w_enc, out[0], out[1], out[2])


def _compact_bwd(per_token, capacity, prec, res, g):
  del per_token, capacity, prec
  x_n, b_dec, w_enc, values, rows, cols = res
  g_v = jnp.where(values > 0, g[0], 0.0)                                     # [C]
  d_in, d_sae = w_enc.shape
  g_b = jnp.zeros((d_sae,), g_v.dtype).at[cols].add(g_v)
  x_c = jnp.take(x_n - b_dec, rows, axis=0)                                  # [C, d_in]
  g_w = jnp.zeros((d_sae, d_in), g_v.dtype).at[cols].add(g_v[:, None] * x_c).T
  g_x = jax.ops.segment_sum(g_v[:, None] * jnp.take(w_enc.T, cols, axis=0), rows,
                            x_n.shape[0], indices_are_sorted=True)
  return g_x, -(w_enc @ g_b), g_w, g_b


relu_compact.defvjp(_compact_fwd, _compact_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(pre, theta, bandwidth):
  """pre * H(pre - theta); d/dtheta by the straight-through rectangle-kernel estimator."""
  return jnp.where(pre > theta, pre, 0.0)


def _rect(u):
  return (jnp.abs(u) < 0.5).astype(u.dtype)


def _jumprelu_fwd(pre, theta, bandwidth):
  return jumprelu(pre, theta, bandwidth), (pre, theta)


def _jumprelu_bwd(bandwidth, res, g):
  pre, theta = res
  g_theta = -(theta / bandwidth) * _rect((pre - theta) / bandwidth) * g
  return jnp.where(pre > theta, g, 0.0), g_theta.reshape(-1, theta.shape[-1]).sum(0)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def step_fn(pre, theta, bandwidth):
  """H(pre - theta): no gradient to `pre`, the rectangle-kernel estimator to `theta`."""
  return (pre > theta).astype(pre.dtype)


def _step_fwd(pre, theta, bandwidth):
  return step_fn(pre, theta, bandwidth), (pre, theta)


def _step_bwd(bandwidth, res, g):
  pre, theta = res
  g_theta = -(1.0 / bandwidth) * _rect((pre - theta) / bandwidth) * g
  return jnp.zeros_like(pre), g_theta.reshape(-1, theta.shape[-1]).sum(0)


step_fn.defvjp(_step_fwd, _step_bwd)


def kth_largest(values: jax.Array, k: int) -> jax.Array:
  """The k-th largest of non-negative `values` (any shape), exactly.

  Bisection on the float32 bit pattern (monotonic for non-negative floats): 31 rounds of
  compare-and-count. Unlike `lax.top_k` over the flattened batch, each round is elementwise
  plus one sum, so it is cheap on CPU and shards over `data` and `model` with one all-reduce.
  """
  bits = jax.lax.bitcast_convert_type(values.astype(jnp.float32), jnp.int32)

  def body(_, bounds):
    lo, hi = bounds  # invariant: count(bits >= lo) >= k > count(bits >= hi)
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(bits >= mid) >= k
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

  lo, _ = jax.lax.fori_loop(0, 31, body, (jnp.int32(0), jnp.int32(2**31 - 1)))
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


def batch_topk(pre: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Keeps the k * batch largest ReLU'd pre-activations of the whole batch.

  Returns:
    (acts [batch, d_sae], the smallest kept positive value: this batch's threshold).
  """
  relu = jax.nn.relu(pre)
  cut = jax.lax.stop_gradient(kth_largest(jax.lax.stop_gradient(relu), k * pre.shape[0]))
  keep = (relu >= cut) & (relu > 0)
  acts = jnp.where(keep, relu, 0.0)
  smallest = jnp.min(jnp.where(keep, jax.lax.stop_gradient(relu), jnp.inf))
  return acts, jnp.where(jnp.isfinite(smallest), smallest, 0.0)
