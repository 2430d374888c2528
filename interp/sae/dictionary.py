"""One dictionary abstraction: init, encode, decode and the training loss of every rule.

Parameters are one plain dict (names follow SAELens, so its files map one-to-one):
  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]      (all rules)
  jump_threshold [d_sae]                                                      (jumprelu)
  b_gate, r_mag, b_mag [d_sae] (gated; the gate uses W_enc, and there is no b_enc)
and buffers, carried in the same dict but never given to the optimizer:
  norm_scale []      the input scale (1 when `normalize_input` is off)
  threshold []       the BatchTopK inference threshold (EMA during training)
  fired_ago [d_sae]  steps since each latent last fired (dead-latent bookkeeping)

Everything inside works on normalised inputs x_n = x * norm_scale; `encode` takes raw inputs and
`decode` returns raw outputs, so a caller never sees the scale.

JumpReLU's threshold is learned as itself, not as its logarithm (Rajamanoharan et al.'s
`log_threshold`). Adam moves a parameter by about lr per step whatever the gradient's size, so
a log-threshold moves theta by lr * theta per step: from the 0.01 start, 1e-5 per step at
lr 1e-3, while b_enc and the encoder move the pre-activations by ~1e-3 per step. The thresholds
could then never catch up (at most x e^2 in 2,000 steps, to ~0.07, where planted 4-sparse data
needs ~1.3); the pre-activations outran them and L0 grew to ~200 whatever `l0_coeff` was. Learned
directly, theta moves at the pre-activations' own rate and the L0 penalty sets where it stops.
Thresholds are kept >= `MIN_THRESHOLD` after each update (`constrain`).

The activation rules themselves (TopK with its sparse backward pass, JumpReLU, BatchTopK) are in
`interp.sae.activation_rules`.

Precision (`interp.precision`): `encode`, `decode`, `reconstruct` and `loss` take a policy
(default float32: the float32 program, number for number). Under bfloat16 the encoder and
decoder products (dense, sparse, AuxK's) take bfloat16 operands and sum in float32
(`activation_rules.matmul`); their outputs, the pre-activations that ReLU, thresholds and top-k
compare and the reconstructions the losses read, are float32, as are the penalties, the losses,
the metrics and the parameters (cast only inside the product; gradients arrive float32).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from interp.precision import FLOAT32, Precision, as_precision
from interp.sae import sparse_sharded
from interp.sae.activation_rules import (batch_topk, jumprelu, matmul, relu_compact, step_fn,
                                         topk_encode_centered)
from interp.sae.config import Activation, DeadMitigation, DecoderNorm, SAEConfig

PARAM_AXES = {
    "W_enc": ("embed", "latent"), "b_enc": ("latent",), "W_dec": ("latent", "embed"),
    "b_dec": ("embed",), "jump_threshold": ("latent",), "b_gate": ("latent",),
    "r_mag": ("latent",), "b_mag": ("latent",),
    "norm_scale": (), "threshold": (), "fired_ago": ("latent",),
}
BUFFERS = ("norm_scale", "threshold", "fired_ago")
# The smallest JumpReLU threshold: at zero or below, JumpReLU would pass negative pre-activations.
MIN_THRESHOLD = 1e-6


class Sparse(NamedTuple):
  """Per-token sparse codes: values [..., k] >= 0 at latent indices [..., k]."""
  values: jax.Array
  indices: jax.Array


class Packed(NamedTuple):
  """A batch's codes as one list (`activation_rules.relu_compact`): values [C] >= 0 of token
  rows [C] at latent cols [C]; unused slots hold 0. batch: the tokens [B]."""
  values: jax.Array
  rows: jax.Array
  cols: jax.Array
  batch: int


def trainable_names(cfg: SAEConfig) -> tuple[str, ...]:
  if cfg.activation == Activation.GATED:
    return ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag")
  extra = ("jump_threshold",) if cfg.activation == Activation.JUMPRELU else ()
  return ("W_enc", "b_enc", "W_dec", "b_dec") + extra


def split(params: dict) -> tuple[dict, dict]:
  """(trainable, buffers)."""
  return ({k: v for k, v in params.items() if k not in BUFFERS},
          {k: v for k, v in params.items() if k in BUFFERS})


def param_axes(params: dict) -> dict:
  return {k: PARAM_AXES[k] for k in params}


# ---------------------------------------------------------------------------------------------
# Initialisation


def geometric_median(points: jax.Array, iters: int = 50, eps: float = 1e-8) -> jax.Array:
  """Weiszfeld's algorithm: the point minimising the summed Euclidean distance to `points`."""
  points = jnp.asarray(points, jnp.float32)

  def body(_, y):
    w = 1.0 / jnp.maximum(jnp.linalg.norm(points - y, axis=-1), eps)
    return (w[:, None] * points).sum(0) / w.sum()

  return jax.lax.fori_loop(0, iters, body, points.mean(0))


def input_scale(sample: jax.Array) -> jax.Array:
  """The constant c with E||c x||^2 = d_in (mean squared coordinate 1)."""
  sample = jnp.asarray(sample, jnp.float32)
  return jnp.sqrt(sample.shape[-1] / jnp.mean(jnp.sum(sample ** 2, -1)))


def init(cfg: SAEConfig, key: jax.Array, sample: jax.Array | None = None) -> dict:
  """Fresh parameters and buffers.

  Decoder rows are random directions of norm `init_decoder_norm`, the encoder is their
  transpose, and with a `sample` [n, d_in] of activations the input scale is estimated and the
  pre-encoder bias starts at the sample's geometric median.
  """
  w = jax.random.normal(key, (cfg.d_sae, cfg.d_in), jnp.float32)
  w = cfg.init_decoder_norm * w / jnp.linalg.norm(w, axis=-1, keepdims=True)
  scale = jnp.float32(1.0)
  b_dec = jnp.zeros((cfg.d_in,), jnp.float32)
  if sample is not None:
    if sample.shape[-1] != cfg.d_in:
      raise ValueError(f"activation sample has width {sample.shape[-1]}, the dictionary reads "
                       f"--d_in={cfg.d_in}")
    if cfg.normalize_input:
      scale = input_scale(sample)
    b_dec = geometric_median(jnp.asarray(sample, jnp.float32) * scale)
  zeros = jnp.zeros((cfg.d_sae,), jnp.float32)
  params = {"W_enc": w.T, "W_dec": w, "b_dec": b_dec}
  if cfg.activation == Activation.GATED:
    params.update(b_gate=zeros, r_mag=zeros, b_mag=zeros)
  else:
    params["b_enc"] = zeros
  if cfg.activation == Activation.JUMPRELU:
    params["jump_threshold"] = jnp.full((cfg.d_sae,), cfg.threshold_init, jnp.float32)
  params.update(norm_scale=scale, threshold=jnp.float32(0.0),
                fired_ago=jnp.zeros((cfg.d_sae,), jnp.int32))
  return params


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def _center(params, x_n):
  return x_n - params["b_dec"]


def _topk_rule(prec: Precision):
  """The single-device TopK encoder (`sparse_sharded.topk`'s `local_topk`) under `prec`."""
  return lambda x, c, w, b, k: topk_encode_centered(x, c, w, b, k, prec)


def _centred_matmul(x_n, b_dec, w, prec: Precision = FLOAT32):
  """(x_n - b_dec) @ w written as x_n @ w - b_dec @ w (float32; products under `prec`).

  Equal up to rounding, but autodiff then gives b_dec its gradient as a matrix-vector product
  (-w @ sum_b g) instead of a dense [batch, d_sae] @ w.T for the input gradient that is only
  summed: one of the step's six dense matmuls, when x_n (data) is not differentiated.
  """
  return matmul(prec, x_n, w) - matmul(prec, b_dec, w)


def _gated_paths(params, x_n, prec: Precision):
  pi_gate = _centred_matmul(x_n, params["b_dec"], params["W_enc"], prec) + params["b_gate"]
  w_mag = params["W_enc"] * jnp.exp(params["r_mag"])
  mag = _centred_matmul(x_n, params["b_dec"], w_mag, prec) + params["b_mag"]
  return pi_gate, jax.nn.relu(mag)


def _encode_n(cfg: SAEConfig, params: dict, x_n: jax.Array, training: bool,
              prec: Precision = FLOAT32, sparse: bool = False):
  """Codes of normalised inputs: Sparse for topk, else dense [..., d_sae]; plus extras. relu
  with `sparse` (`cfg.sparse_cap`): the batch's positive codes as Packed (`relu_compact`), or
  with the latents sharded each token's sparse_cap largest as Sparse; extra["full"] says the
  codes may be incomplete (a token reached the cap, or the packed slots filled up)."""
  x_c = _center(params, x_n)
  a = cfg.activation
  if a == Activation.RELU and sparse and x_n.ndim == 2 and not sparse_sharded.latents_sharded():
    capacity = x_n.shape[0] * max(cfg.sparse_cap // 2, 1)
    v, r, c, full = relu_compact(x_n, params["b_dec"], params["W_enc"], params["b_enc"],
                                 cfg.sparse_cap, capacity, prec)
    return Packed(v, r, c, x_n.shape[0]), {"full": full}
  if a == Activation.TOPK or (a == Activation.RELU and sparse):
    lead, k = x_c.shape[:-1], (cfg.k if a == Activation.TOPK else cfg.sparse_cap)
    v, i = sparse_sharded.topk(x_n.reshape(-1, cfg.d_in), params["b_dec"], params["W_enc"],
                               params["b_enc"], k, _topk_rule(prec))
    codes = Sparse(v.reshape(*lead, k), i.reshape(*lead, k))
    # min, not [..., -1]: see `activation_rules.relu_compact`
    return codes, ({} if a == Activation.TOPK else {"full": codes.values.min(-1) > 0})
  if a == Activation.GATED:
    pi_gate, mag = _gated_paths(params, x_n, prec)
    return (pi_gate > 0) * mag, {"pi_gate": pi_gate}
  pre = _centred_matmul(x_n, params["b_dec"], params["W_enc"], prec) + params["b_enc"]
  if a == Activation.RELU:
    return jax.nn.relu(pre), {}
  if a == Activation.JUMPRELU:
    theta = params["jump_threshold"]
    return jumprelu(pre, theta, cfg.bandwidth), {"pre": pre, "theta": theta}
  if training:  # batchtopk
    flat = pre.reshape(-1, cfg.d_sae)
    acts, cut = batch_topk(flat, cfg.k)
    return acts.reshape(pre.shape), {"cut": cut}
  return jnp.where(pre > params["threshold"], jax.nn.relu(pre), 0.0), {}


def densify(codes, d_sae: int) -> jax.Array:
  """Dense [..., d_sae] activations from Sparse or dense codes."""
  if not isinstance(codes, Sparse):
    return codes
  lead = codes.values.shape[:-1]
  flat_v = codes.values.reshape(-1, codes.values.shape[-1])
  flat_i = codes.indices.reshape(-1, codes.indices.shape[-1])
  rows = jnp.arange(flat_v.shape[0])[:, None]
  dense = jnp.zeros((flat_v.shape[0], d_sae), flat_v.dtype).at[rows, flat_i].set(flat_v)
  return dense.reshape(*lead, d_sae)


def _decode_n(params: dict, codes, upto: int | None = None,
              prec: Precision = FLOAT32) -> jax.Array:
  """Normalised reconstruction b_dec + sum_i acts_i W_dec[i] (latents < `upto` only), float32
  (the product under `prec`)."""
  w = params["W_dec"]
  if isinstance(codes, Packed):  # float32 rows, summed per token (rows never decrease)
    values = codes.values if upto is None else jnp.where(codes.cols < upto, codes.values, 0.)
    return jax.ops.segment_sum(values[:, None] * jnp.take(w, codes.cols, axis=0), codes.rows,
                               codes.batch, indices_are_sorted=True) + params["b_dec"]
  if isinstance(codes, Sparse):
    values = codes.values if upto is None else jnp.where(codes.indices < upto, codes.values, 0.)
    lead = values.shape[:-1]
    flat = sparse_sharded.decode(values.reshape(-1, values.shape[-1]),
                                 codes.indices.reshape(-1, values.shape[-1]), w, prec)
    return flat.reshape(*lead, w.shape[-1]) + params["b_dec"]
  if upto is not None:
    return matmul(prec, codes[..., :upto], w[:upto]) + params["b_dec"]
  return matmul(prec, codes, w) + params["b_dec"]


def encode(cfg: SAEConfig, params: dict, x: jax.Array,
           precision: Precision | str | None = None) -> jax.Array:
  """Dense latent activations [..., d_sae] of raw inputs x [..., d_in] (inference rule), float32;
  the encoder product under `precision` (default float32)."""
  codes, _ = _encode_n(cfg, params, x * params["norm_scale"], training=False,
                       prec=as_precision(precision))
  return densify(codes, cfg.d_sae)


def decode(cfg: SAEConfig, params: dict, acts: jax.Array,
           precision: Precision | str | None = None) -> jax.Array:
  """Raw-unit reconstruction (float32) from dense activations [..., d_sae]; the decoder product
  under `precision` (default float32)."""
  del cfg
  return _decode_n(params, acts, prec=as_precision(precision)) / params["norm_scale"]


def reconstruct(cfg: SAEConfig, params: dict, x: jax.Array,
                precision: Precision | str | None = None) -> jax.Array:
  """decode(encode(x)), using the sparse path for topk; products under `precision`."""
  prec = as_precision(precision)
  codes, _ = _encode_n(cfg, params, x * params["norm_scale"], training=False, prec=prec)
  return _decode_n(params, codes, prec=prec) / params["norm_scale"]


# ---------------------------------------------------------------------------------------------
# Training loss


def _sq_err(x, x_hat):
  return jnp.mean(jnp.sum((x - x_hat) ** 2, -1))


def _fired(cfg: SAEConfig, codes) -> jax.Array:
  if isinstance(codes, Packed):
    return jnp.zeros((cfg.d_sae,), jnp.int32).at[codes.cols].max(
        (codes.values > 0).astype(jnp.int32)) > 0
  if isinstance(codes, Sparse):
    hit = (codes.values > 0).reshape(-1).astype(jnp.int32)
    return jnp.zeros((cfg.d_sae,), jnp.int32).at[codes.indices.reshape(-1)].max(hit) > 0
  return jnp.any(codes.reshape(-1, cfg.d_sae) > 0, axis=0)


def _l0(codes) -> jax.Array:
  if isinstance(codes, Packed):
    return jnp.sum(codes.values > 0).astype(jnp.float32) / codes.batch
  values = codes.values if isinstance(codes, Sparse) else codes
  return jnp.mean(jnp.sum(values > 0, -1).astype(jnp.float32))


def _aux_k_loss(cfg: SAEConfig, params: dict, x_c: jax.Array, residual: jax.Array,
                dead: jax.Array, prec: Precision = FLOAT32) -> jax.Array:
  """AuxK (Gao et al.): reconstruct the main residual with the aux_k largest dead latents.

  Computed only while some latent is dead, so healthy runs pay nothing for it. Its value and
  gradients are both formed inside the taken branch and handed to autodiff by a custom VJP:
  differentiating through `lax.cond` itself would save the untaken branch's residuals
  (zero-filled, [batch, aux_k, d_in]) on every step. Selection is shard-local
  (`sparse_sharded.topk`); the decode is one dense [batch, d_sae] @ W_dec matmul on one device
  and the shard-local row decode when latents are sharded.
  """
  def inner(w_enc, b_enc, w_dec, x_c):
    b_dead = jnp.where(dead, b_enc, -jnp.inf)  # live latents: never selected, no gradient
    zero = jnp.zeros_like(x_c[0])
    values, indices = sparse_sharded.topk(x_c, zero, w_enc, b_dead, cfg.effective_aux_k,
                                          _topk_rule(prec))
    if sparse_sharded.latents_sharded():
      e_hat = sparse_sharded.decode(values, indices, w_dec, prec)
    else:
      rows = jnp.arange(values.shape[0])[:, None]
      acts = jnp.zeros((values.shape[0], cfg.d_sae), values.dtype).at[rows, indices].set(values)
      e_hat = matmul(prec, acts, w_dec)
    err = _sq_err(residual, e_hat)
    var = jnp.mean(jnp.sum((residual - residual.mean(0)) ** 2, -1))
    return jnp.nan_to_num(err / jnp.maximum(var, 1e-12))

  args = (params["W_enc"], params["b_enc"], params["W_dec"], x_c)

  def value_and_grads(*args):
    return jax.lax.cond(jnp.any(dead), lambda: jax.value_and_grad(inner, argnums=(0, 1, 2, 3))(
        *args), lambda: (jnp.float32(0.0), tuple(jnp.zeros_like(a) for a in args)))

  @jax.custom_vjp
  def aux(*args):
    return value_and_grads(*args)[0]

  def fwd(*args):
    return value_and_grads(*args)

  def bwd(grads, g):
    return tuple(t * g for t in grads)

  aux.defvjp(fwd, bwd)
  return aux(*args)


def _l1(prec: Precision, codes: jax.Array, weights) -> jax.Array:
  """Per-token sum_i codes_i * weights_i in float32. Under a compute dtype the weighted sum is a
  product (`matmul`), so its backward keeps the compute-dtype codes, not a float32 copy."""
  if prec.is_float32 or not isinstance(weights, jax.Array):
    return jnp.sum(codes.astype(jnp.float32) * weights, -1)
  return matmul(prec, codes, weights)


def loss(cfg: SAEConfig, trainable: dict, buffers: dict, x: jax.Array,
         precision: Precision | str | None = None, sparse: bool = False):
  """The training loss on raw inputs x [batch, d_in], float32; the encoder and decoder products
  under `precision` (default float32; see the module docstring).

  `sparse` (relu with `cfg.sparse_cap`): the positive codes only (`_encode_n`), and metrics
  gain `sparse_overflow`, true when they may be incomplete (then this loss is not the dense
  one; `train.make_step` redoes the step densely).

  Returns:
    (loss, (metrics, new_buffers)): metrics are scalars (mse, fvu, l0, sparsity, aux, dead);
    new_buffers carry the updated dead-latent counters and the BatchTopK threshold.
  """
  prec = as_precision(precision)
  params = {**trainable, **buffers}
  x_n = x * buffers["norm_scale"]
  x_c = _center(params, x_n)
  codes, extra = _encode_n(cfg, params, x_n, training=True, prec=prec, sparse=sparse)
  if not isinstance(codes, (Sparse, Packed)):
    # Dense codes in the compute dtype, once: the decoder reads them so, the L1 term too, and
    # the backward pass keeps this one [batch, d_sae] copy instead of a float32 one beside it.
    codes = prec.cast_compute(codes)
  x_hat = _decode_n(params, codes, prec=prec)
  mse = _sq_err(x_n, x_hat)
  if cfg.matryoshka:
    recon = sum(_sq_err(x_n, _decode_n(params, codes, upto=m, prec=prec))
                for m in cfg.matryoshka)
    recon = (recon + mse) / (len(cfg.matryoshka) + 1)
  else:
    recon = mse
  weights = (jnp.linalg.norm(params["W_dec"], axis=-1)
             if cfg.decoder_norm == DecoderNorm.WEIGHTED else 1.0)
  sparsity = aux = jnp.float32(0.0)
  a = cfg.activation
  if a == Activation.RELU and isinstance(codes, (Sparse, Packed)):  # each kept code x weight
    latents, tokens = ((codes.cols, codes.batch) if isinstance(codes, Packed)
                       else (codes.indices, codes.values[..., 0].size))
    w = jnp.take(weights, latents) if isinstance(weights, jax.Array) else weights
    sparsity = cfg.l1_coeff * jnp.sum(codes.values * w) / tokens
  elif a == Activation.RELU:
    sparsity = cfg.l1_coeff * jnp.mean(_l1(prec, codes, weights))
  elif a == Activation.GATED:
    gate = jax.nn.relu(extra["pi_gate"])
    sparsity = cfg.l1_coeff * jnp.mean(jnp.sum(gate * weights, -1))
    frozen = {"W_dec": jax.lax.stop_gradient(params["W_dec"]),
              "b_dec": jax.lax.stop_gradient(params["b_dec"])}
    aux = _sq_err(x_n, _decode_n(frozen, gate, prec=prec))
  elif a == Activation.JUMPRELU:
    l0 = step_fn(extra["pre"], extra["theta"], cfg.bandwidth)
    sparsity = cfg.l0_coeff * jnp.mean(jnp.sum(l0, -1))

  dead = buffers["fired_ago"] >= cfg.dead_steps
  if cfg.dead_mitigation == DeadMitigation.AUXK:
    residual = jax.lax.stop_gradient(x_n - x_hat)
    # Gao et al. (openai/sparse_autoencoder train.py) weigh the normalised AuxK error against
    # the *normalised* MSE: loss = mse / Var(x) + aux_coeff * nmse_aux. `recon` here is the
    # summed squared error, Var(x) times larger (~d_in on normalised inputs), so the AuxK term
    # is brought to its units with the batch's E||x - mean||^2; without it AuxK was d_in times
    # weaker than in the paper (dead latents were not revived within hundreds of steps).
    scale = jax.lax.stop_gradient(jnp.mean(jnp.sum((x_n - x_n.mean(0)) ** 2, -1)))
    aux = cfg.aux_coeff * scale * _aux_k_loss(cfg, params, x_c, residual, dead, prec)

  fired = _fired(cfg, codes)
  new_buffers = dict(buffers, fired_ago=jnp.where(fired, 0, buffers["fired_ago"] + 1))
  if a == Activation.BATCHTOPK:
    old = buffers["threshold"]
    cut = jax.lax.stop_gradient(extra["cut"])
    new_buffers["threshold"] = jnp.where(old == 0, cut,
                                         (1 - cfg.threshold_lr) * old + cfg.threshold_lr * cut)
  total = recon + sparsity + aux
  var = jnp.sum((x_n - x_n.mean(0)) ** 2)
  metrics = {"mse": mse, "fvu": jnp.sum((x_n - x_hat) ** 2) / jnp.maximum(var, 1e-12),
             "l0": _l0(codes), "sparsity": sparsity, "aux": aux,
             "dead": jnp.mean(dead.astype(jnp.float32))}
  if "full" in extra:
    metrics["sparse_overflow"] = jnp.any(extra["full"])
  return total, (metrics, new_buffers)


# ---------------------------------------------------------------------------------------------
# Constraints after each update: unit decoder rows, positive JumpReLU thresholds


def constrained(cfg: SAEConfig) -> bool:
  return cfg.decoder_norm == DecoderNorm.UNIT


def project_grads(cfg: SAEConfig, grads: dict, params: dict) -> dict:
  """Removes the gradient component parallel to each (unit) decoder row."""
  if not constrained(cfg):
    return grads
  w = params["W_dec"]
  g = grads["W_dec"]
  return dict(grads, W_dec=g - jnp.sum(g * w, -1, keepdims=True) * w)


def renormalise(cfg: SAEConfig, params: dict) -> dict:
  """Decoder rows back to unit norm (`decoder_norm=unit`) and JumpReLU thresholds back to at
  least `MIN_THRESHOLD`, after an update."""
  if "jump_threshold" in params:
    params = dict(params, jump_threshold=jnp.maximum(params["jump_threshold"], MIN_THRESHOLD))
  if not constrained(cfg):
    return params
  w = params["W_dec"]
  return dict(params, W_dec=w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-8))
