"""Transcoders: sparse dictionaries that replace a model's MLPs (read its input, predict its output).

Vocabulary (beyond `interp.sae.config`):
  L          number of layers with a transcoder (every MLP layer 0 .. n_layers - 1).
  n          latents per layer (`d_latent`); the latent axis is sharded over `model` (`latent`).
  x_in       [..., L, d] each layer's MLP input: `blocks.{l}.ln2.hook_normalized` (or
             `hook_resid_mid` for models without norms).
  x_out      [..., L, d] each layer's MLP output as added to the residual stream:
             `blocks.{l}.hook_mlp_out` (after Gemma's post-norm).
  pre        [..., L, n] pre-activations (x_in * in_scale) @ W_enc + b_enc, affine in x_in.
  acts       [..., L, n] latent activations after the activation rule, >= 0.

Kinds:
  plt        per-layer transcoder: layer l's latents read x_in[l] and write x_out[l] only.
  skip       a PLT plus a learned linear skip path x_in[l] @ W_skip[l] (Paulo et al. 2025).
  clt        cross-layer transcoder (Anthropic, "Circuit Tracing", 2025): layer s's latents read
             x_in[s] and write to every layer t >= s, out[t] = sum_{s<=t} acts[s] @ W_dec[s,:,t].

Parameters (one plain dict):
  W_enc [L, d, n], b_enc [L, n], b_dec [L, d]; jump_threshold [L, n] (jumprelu);
  W_dec [L, n, d] (plt, skip) or [L_src, n, L_tgt, d] (clt); W_skip [L, d, d] (skip);
  buffers in_scale, out_scale [L]: constants making each layer's inputs and targets have mean
  squared coordinate 1, so one learning rate suits every layer. `fold_scales` multiplies them
  into the weights (and sets them to 1): afterwards pre = x_in @ W_enc + b_enc and
  out = acts @ W_dec + b_dec literally, in model units (what `train_transcoder` returns).

The CLT decoder is stored dense: entries with target < source are zero, masked in `decode`, so
their gradient is exactly zero and Adam never moves them. That costs L^2 n d floats (twice the
L(L+1)/2 n d that are used, plus the same again for each Adam moment): 18 layers x 16k latents
x d 640 is 3.4 G floats, fine sharded over `model`, wasteful beyond that.

Loss: the sum over layers of each layer's squared error divided by its target's variance (a
sum of per-layer FVUs, so every layer counts the same), plus the sparsity term: none for topk
(k latents per layer and token); for jumprelu Anthropic's CLT penalty
l0_coeff * sum_{l,i} tanh(tanh_scale * a_{l,i} * ||W_dec_{l,i}||), where ||W_dec_{l,i}|| is the
norm of the latent's decoder concatenated over every layer it writes to, so writing to more
layers costs more; the threshold (learned as itself, kept >= `MIN_THRESHOLD`: see
`interp.sae.dictionary` for why not as a logarithm) learns through the JumpReLU
straight-through estimator.

Precision (`interp.precision`): `encode_pre`, `encode`, `decode`, their per-layer forms and
`loss` take a policy (default float32: the float32 program, number for number). Under bfloat16
the encoder, decoder and skip products take bfloat16 operands summed in float32
(`interp.sae.activation_rules.einsum`) and return float32, so pre-activations (what top-k and
thresholds compare), predictions, the penalty, the loss, metrics and parameters are float32.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp

from interp.choices import choice
from interp.models.config import NormType, TransformerConfig
from interp.precision import Precision, as_precision
from interp.sae import activation_rules
from interp.sae.activation_rules import einsum, matmul
from interp.sae.dictionary import MIN_THRESHOLD


class Kind(str, enum.Enum):
  PLT = "plt"
  SKIP = "skip"
  CLT = "clt"


class TranscoderActivation(str, enum.Enum):
  JUMPRELU = "jumprelu"
  TOPK = "topk"


@dataclasses.dataclass(frozen=True)
class TranscoderConfig:
  """Attributes:
    kind: plt, skip or clt (see module doc).
    n_layers, d_model: the model's layer count and residual width.
    d_latent: latents per layer (a CLT and a PLT of equal d_latent have equally many latents).
    activation: jumprelu or topk.
    k: latents kept per layer and token (topk).
    l0_coeff: weight of the tanh sparsity penalty (jumprelu), in per-layer FVU units.
    tanh_scale: c in tanh(c * a * ||W_dec||); Anthropic's CLT uses a saturating penalty.
    jumprelu_bandwidth: rectangle-kernel width of the straight-through estimator.
    threshold_init: initial JumpReLU threshold (normalised units).
    init_decoder_norm: norm of each decoder row (per target layer) at init.
  """

  kind: Kind = Kind.PLT
  n_layers: int = 1
  d_model: int = 64
  d_latent: int = 256
  activation: TranscoderActivation = TranscoderActivation.TOPK
  k: int = 16
  l0_coeff: float = 0.01
  tanh_scale: float = 4.0
  jumprelu_bandwidth: float = 0.05
  threshold_init: float = 0.01
  init_decoder_norm: float = 0.1

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)
    set_("kind", choice(Kind, self.kind, "--kind"))
    set_("activation", choice(TranscoderActivation, self.activation, "--activation"))
    for name in ("n_layers", "d_model", "d_latent"):
      if getattr(self, name) <= 0:
        raise ValueError(f"--{name}={getattr(self, name)} must be positive")
    if self.activation == TranscoderActivation.TOPK and not 0 < self.k <= self.d_latent:
      raise ValueError(f"--k={self.k} must be between 1 and --d_latent={self.d_latent}")

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in out.items()}

  @classmethod
  def from_dict(cls, d: dict) -> "TranscoderConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


PARAM_AXES = {
    "W_enc": ("layers", "embed", "latent"), "b_enc": ("layers", "latent"),
    "jump_threshold": ("layers", "latent"), "b_dec": ("layers", "embed"),
    "W_skip": ("layers", "embed", None), "in_scale": ("layers",), "out_scale": ("layers",),
}
_W_DEC_AXES = {Kind.CLT: ("layers", "latent", "target_layers", "embed")}
BUFFERS = ("in_scale", "out_scale")


def param_axes(cfg: TranscoderConfig, params: dict) -> dict:
  """Logical axes of every parameter (`latent` maps to the `model` mesh axis)."""
  dec = _W_DEC_AXES.get(cfg.kind, ("layers", "latent", "embed"))
  return {k: (dec if k == "W_dec" else PARAM_AXES[k]) for k in params}


def split(params: dict) -> tuple[dict, dict]:
  """(trainable, buffers)."""
  return ({k: v for k, v in params.items() if k not in BUFFERS},
          {k: v for k, v in params.items() if k in BUFFERS})


def sites(model_cfg: TransformerConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(input hook names, output hook names), one per layer."""
  if not model_cfg.has_mlp:
    raise ValueError("transcoders replace MLPs; this model has none (mlp=none)")
  read = "ln2.hook_normalized" if model_cfg.norm != NormType.NONE else "hook_resid_mid"
  layers = range(model_cfg.n_layers)
  return (tuple(f"blocks.{l}.{read}" for l in layers),
          tuple(f"blocks.{l}.hook_mlp_out" for l in layers))


def clt_mask(n_layers: int) -> jax.Array:
  """[L_src, L_tgt] 1 where a source layer may write to a target layer (tgt >= src)."""
  return jnp.triu(jnp.ones((n_layers, n_layers), jnp.float32))


def _layer_scale(x):
  """[L] constants c_l with E||c_l x_l||^2 = d for a sample x [N, L, d]."""
  x = jnp.asarray(x, jnp.float32)
  return jnp.sqrt(x.shape[-1] / jnp.maximum(jnp.mean(jnp.sum(x ** 2, -1), 0), 1e-12))


def init(cfg: TranscoderConfig, key: jax.Array, sample_in=None, sample_out=None) -> dict:
  """Fresh parameters. With samples [N, L, d] of inputs and targets, the scales are estimated
  and b_dec starts at the targets' mean (normalised units)."""
  L, d, n = cfg.n_layers, cfg.d_model, cfg.d_latent
  k_enc, k_dec = jax.random.split(key)
  shape = (L, n, L, d) if cfg.kind == Kind.CLT else (L, n, d)
  w_dec = jax.random.normal(k_dec, shape, jnp.float32)
  w_dec = cfg.init_decoder_norm * w_dec / jnp.linalg.norm(w_dec, axis=-1, keepdims=True)
  if cfg.kind == Kind.CLT:
    w_dec = w_dec * clt_mask(L)[:, None, :, None]
  # Encoder columns of unit norm: pre-activations of unit scale on inputs of unit coordinate scale.
  w_enc = jax.random.normal(k_enc, (L, d, n), jnp.float32) / jnp.sqrt(d)
  ones = jnp.ones((L,), jnp.float32)
  in_scale = ones if sample_in is None else _layer_scale(sample_in)
  out_scale = ones if sample_out is None else _layer_scale(sample_out)
  b_dec = jnp.zeros((L, d), jnp.float32)
  if sample_out is not None:
    b_dec = jnp.mean(jnp.asarray(sample_out, jnp.float32), 0) * out_scale[:, None]
  params = {"W_enc": w_enc, "b_enc": jnp.zeros((L, n), jnp.float32), "W_dec": w_dec,
            "b_dec": b_dec, "in_scale": in_scale, "out_scale": out_scale}
  if cfg.activation == TranscoderActivation.JUMPRELU:
    params["jump_threshold"] = jnp.full((L, n), cfg.threshold_init, jnp.float32)
  if cfg.kind == Kind.SKIP:
    params["W_skip"] = jnp.zeros((L, d, d), jnp.float32)
  return params


def constrain(cfg: TranscoderConfig, params: dict) -> dict:
  """Keeps JumpReLU thresholds at least `MIN_THRESHOLD` after an update (they are learned as
  themselves, not as logarithms: see `interp.sae.dictionary`); other rules pass through."""
  if cfg.activation != TranscoderActivation.JUMPRELU:
    return params
  return dict(params, jump_threshold=jnp.maximum(params["jump_threshold"], MIN_THRESHOLD))


def fold_scales(cfg: TranscoderConfig, params: dict) -> dict:
  """The same transcoder with in_scale/out_scale multiplied into the weights (and set to 1)."""
  s, o = params["in_scale"], params["out_scale"]
  out = dict(params, W_enc=params["W_enc"] * s[:, None, None], b_dec=params["b_dec"] / o[:, None],
             in_scale=jnp.ones_like(s), out_scale=jnp.ones_like(o))
  if cfg.kind == Kind.CLT:
    out["W_dec"] = params["W_dec"] / o[None, None, :, None]
  else:
    out["W_dec"] = params["W_dec"] / o[:, None, None]
  if cfg.kind == Kind.SKIP:
    out["W_skip"] = params["W_skip"] * (s / o)[:, None, None]
  return out


# ---------------------------------------------------------------------------------------------
# Encode, activate, decode (raw model units in and out)


def encode_pre(cfg: TranscoderConfig, params: dict, x_in: jax.Array,
               precision: Precision | str | None = None) -> jax.Array:
  """Pre-activations [..., L, n] (float32) of inputs [..., L, d]: affine in x_in; the product
  under `precision` (default float32)."""
  del cfg
  x_n = x_in * params["in_scale"][:, None]
  return (einsum(as_precision(precision), "...ld,ldn->...ln", x_n, params["W_enc"])
          + params["b_enc"])


def _rule(cfg: TranscoderConfig, pre: jax.Array, theta) -> jax.Array:
  """The activation rule on pre-activations [..., n] (theta [n] for jumprelu)."""
  if cfg.activation == TranscoderActivation.JUMPRELU:
    return activation_rules.jumprelu(pre, theta, cfg.jumprelu_bandwidth)
  # Per-layer top k as a dense mask: at our widths the gather XLA makes of a sharded latent
  # axis is cheap; `interp.sae.sparse_sharded` is the route for very wide dictionaries.
  # The cut is the min of the k values, not their last slice: XLA:CPU rewrites a slice of
  # top_k's values into a full sort (0.93 s against 0.036 s at [512, 18, 1024], k 16).
  cut = jax.lax.stop_gradient(jnp.min(jax.lax.top_k(pre, cfg.k)[0], -1, keepdims=True))
  return jnp.where(pre >= cut, jax.nn.relu(pre), 0.0)


def activate(cfg: TranscoderConfig, params: dict, pre: jax.Array) -> jax.Array:
  """Latent activations [..., L, n] from pre-activations (per layer, per token)."""
  if cfg.activation == TranscoderActivation.JUMPRELU:
    # activation_rules.jumprelu's straight-through backward sums the threshold gradient over one
    # trailing latent axis, so layers and latents go in flattened.
    lead = pre.shape[:-2]
    theta = params["jump_threshold"].reshape(-1)
    return _rule(cfg, pre.reshape(*lead, -1), theta).reshape(pre.shape)
  return _rule(cfg, pre, None)


def encode(cfg: TranscoderConfig, params: dict, x_in: jax.Array,
           precision: Precision | str | None = None) -> jax.Array:
  """Latent activations [..., L, n] of inputs [..., L, d] (products under `precision`)."""
  return activate(cfg, params, encode_pre(cfg, params, x_in, precision))


def encode_layer(cfg: TranscoderConfig, params: dict, x: jax.Array, layer: int,
                 precision: Precision | str | None = None) -> jax.Array:
  """Layer `layer`'s latent activations [..., n] of its input x [..., d] alone."""
  prec = as_precision(precision)
  pre = (matmul(prec, x * params["in_scale"][layer], params["W_enc"][layer])
         + params["b_enc"][layer])
  theta = (params["jump_threshold"][layer]
           if cfg.activation == TranscoderActivation.JUMPRELU else None)
  return _rule(cfg, pre, theta)


def _decoder(cfg: TranscoderConfig, params: dict) -> jax.Array:
  w = params["W_dec"]
  return w * clt_mask(cfg.n_layers)[:, None, :, None] if cfg.kind == Kind.CLT else w


def _decode_n(cfg, params, acts, x_in, prec: Precision):
  """Normalised-unit output [..., L, d] (float32; products under `prec`)."""
  w = _decoder(cfg, params)
  if cfg.kind == Kind.CLT:
    out = einsum(prec, "...sn,sntd->...td", acts, w)
  else:
    out = einsum(prec, "...ln,lnd->...ld", acts, w)
  out = out + params["b_dec"]
  if cfg.kind == Kind.SKIP:
    if x_in is None:
      raise ValueError("a skip transcoder's decode needs x_in")
    x_n = x_in * params["in_scale"][:, None]
    out = out + einsum(prec, "...ld,lde->...le", x_n, params["W_skip"])
  return out


def decode(cfg: TranscoderConfig, params: dict, acts: jax.Array, x_in=None,
           precision: Precision | str | None = None) -> jax.Array:
  """Predicted MLP outputs [..., L, d] (float32) from acts [..., L, n] (and x_in [..., L, d]
  for skip); the products under `precision` (default float32)."""
  return (_decode_n(cfg, params, acts, x_in, as_precision(precision))
          / params["out_scale"][:, None])


def decode_layer(cfg: TranscoderConfig, params: dict, acts: jax.Array, layer: int,
                 x_in_layer=None, precision: Precision | str | None = None) -> jax.Array:
  """Layer `layer`'s predicted output [..., d] from acts [..., L', n] of layers 0 .. L'-1
  (L' > layer; later layers are not read) and, for skip, that layer's input [..., d]: what a
  replaced forward needs at each hook_mlp_out; products under `precision`."""
  prec = as_precision(precision)
  if cfg.kind == Kind.CLT:
    out = einsum(prec, "...sn,snd->...d", acts[..., :layer + 1, :],
                 params["W_dec"][:layer + 1, :, layer])
  else:
    out = matmul(prec, acts[..., layer, :], params["W_dec"][layer])
  out = out + params["b_dec"][layer]
  if cfg.kind == Kind.SKIP:
    out = out + matmul(prec, x_in_layer * params["in_scale"][layer], params["W_skip"][layer])
  return out / params["out_scale"][layer]


# ---------------------------------------------------------------------------------------------
# Training loss


def decoder_norms(cfg: TranscoderConfig, params: dict) -> jax.Array:
  """[L, n] the norm of each latent's decoder, concatenated over the layers it writes to."""
  w = _decoder(cfg, params)
  axes = (-2, -1) if cfg.kind == Kind.CLT else (-1,)
  return jnp.sqrt(jnp.sum(w ** 2, axis=axes))


def loss(cfg: TranscoderConfig, params: dict, x_in: jax.Array, x_out: jax.Array,
         precision: Precision | str | None = None):
  """The training loss (float32) on a batch x_in, x_out [B, L, d] (raw units); the products
  under `precision` (default float32).

  Returns:
    (loss, metrics): metrics are scalars (fvu summed over layers, sparsity, l0 per layer) and
    per-layer vectors fvu_layer [L], l0_layer [L].
  """
  prec = as_precision(precision)
  pre = encode_pre(cfg, params, x_in, prec)
  acts = activate(cfg, params, pre)
  y = x_out * params["out_scale"][:, None]
  y_hat = _decode_n(cfg, params, acts, x_in, prec)
  err = jnp.sum((y - y_hat) ** 2, axis=(0, 2))                         # [L]
  var = jnp.sum((y - y.mean(0)) ** 2, axis=(0, 2))
  fvu = err / jnp.maximum(var, 1e-12)
  sparsity = jnp.float32(0.0)
  if cfg.activation == TranscoderActivation.JUMPRELU:
    weighted = jnp.tanh(cfg.tanh_scale * acts * decoder_norms(cfg, params))
    sparsity = cfg.l0_coeff * jnp.mean(jnp.sum(weighted, axis=(-2, -1)))
  l0 = jnp.mean(jnp.sum(acts > 0, -1).astype(jnp.float32), 0)          # [L]
  total = jnp.sum(fvu) + sparsity
  return total, {"fvu": jnp.sum(fvu), "sparsity": sparsity, "l0": jnp.mean(l0),
                 "fvu_layer": fvu, "l0_layer": l0}
