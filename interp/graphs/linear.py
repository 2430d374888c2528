"""The local replacement model of one prompt: the model made affine by freezing its nonlinearities.

Vocabulary (shape letters as in `interp.models.config`; p = prompt length, L = n_layers):
  frozen     taken from the real forward pass on the prompt and held constant: every attention
             pattern, every norm's divisor (ln1, ln2, ln_final and Gemma's ln1_post over the
             summed head outputs; q/k norms for attention-score attribution only), and the
             transcoder features' activations.
  injection  what enters the residual stream from outside the affine model: `embed` [p d]
             (hook_embed, plus hook_pos_embed where positions are learned) and `mlp` [L p d]
             (each layer's real hook_mlp_out, minus a skip transcoder's skip path, which stays
             live because it is linear in the residual).
  readout    what targets read: `x_in` [L p d] (every layer's MLP input, through ln2 at its
             frozen divisor) and `final` [p d] (ln_final's output).
  error      [L p d] real hook_mlp_out minus the transcoder's output at that layer.
  held       leading positions whose MLP outputs are constants, not sources (`hold`): no
             feature or error nodes there; their whole injection joins the bias. circuit-tracer
             holds the BOS (its `zero_positions`): the first position's residual stream is the
             same for every prompt, so its MLP outputs are constants of the model.
  active     features with a nonzero activation: numpy arrays layer, pos, feature, act [F],
             ordered by (layer, pos, feature).

With the injections at their real values the readouts are the real forward's, so the replacement
model's logits equal the model's (up to float rounding); every readout is affine in the
injections, so gradients with respect to them give exact edge weights. Gemma's ln2_post divisor
never enters: the transcoder predicts hook_mlp_out, after that norm.

Precision: the functions here keep the dtype of the residual they are given (norms divide by
their frozen float32 divisor and round back, patterns are cast to the values' dtype), so
`linear_forward` runs in bfloat16 when its injections and parameters are bfloat16 (its matrix
products then accumulate as XLA's dot does: in float32 on CPU and on GPU tensor cores).
`capture` runs the real forward and the transcoder in the policy's compute dtype and returns
float32 arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from interp.circuits import lens
from interp.models import transformer
from interp.models.config import NormType, PositionalType, TransformerConfig
from interp.models.hooks import Hooks
from interp.precision import Precision, as_precision
from interp.sae import transcoder as tc


class Frozen(NamedTuple):
  """Constants of one prompt's forward pass (a pytree; leading L axis where per layer)."""
  pattern: jax.Array      # [L h p p]
  ln1: jax.Array          # [L p 1] divisors (ones for norm-free models)
  ln1_post: jax.Array     # [L p 1] (ones without post-norms)
  ln2: jax.Array          # [L p 1]
  ln_final: jax.Array     # [p 1]
  q_norm: jax.Array       # [L p h 1] (ones without qk_norm)
  k_norm: jax.Array       # [L p g 1]


class Replacement(NamedTuple):
  """One prompt's replacement model: frozen constants, injections, transcoder state."""
  frozen: Frozen
  embed: jax.Array        # [p d] injection
  mlp: jax.Array          # [L p d] injection
  x_in: jax.Array         # [L p d] real MLP inputs
  mlp_out: jax.Array      # [L p d] real hook_mlp_out
  error: jax.Array        # [L p d]
  pre: jax.Array          # [L p n] feature pre-activations
  acts: jax.Array         # [L p n] feature activations
  final: jax.Array        # [p d] real ln_final output
  logits: jax.Array       # [v] real logits at the last position
  bias_mlp: jax.Array     # [L p d] the `mlp` injection with every source zero: the decoder
  #                         bias, and at held positions the whole injection (`hold`)


def _names(cfg: TransformerConfig) -> tuple[str, ...]:
  names = ["hook_embed"] + (["hook_pos_embed"] if cfg.positional == PositionalType.LEARNED else [])
  norm = cfg.norm != NormType.NONE
  for l in range(cfg.n_layers):
    b = f"blocks.{l}."
    names += [b + "attn.hook_pattern", b + "attn.hook_z", b + "attn.hook_q", b + "attn.hook_k",
              b + "hook_mlp_out", b + ("ln2.hook_normalized" if norm else "hook_resid_mid")]
    names += [b + "ln1.hook_scale", b + "ln2.hook_scale"] if norm else []
  names += ["ln_final.hook_scale", "ln_final.hook_normalized"] if norm else [
      f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
  return tuple(names)


def _divisor(cfg: TransformerConfig, x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  if cfg.norm == NormType.LAYERNORM:
    x = x - x.mean(-1, keepdims=True)
  return jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + cfg.norm_eps)


def norm(cfg: TransformerConfig, x: jax.Array, scale: jax.Array, p: dict | None) -> jax.Array:
  """A norm at a frozen divisor `scale`: affine in x (identity for norm-free models)."""
  if cfg.norm == NormType.NONE or p is None:
    return x
  if cfg.norm == NormType.LAYERNORM:
    x = x - x.mean(-1, keepdims=True)
  y = x / scale * (cfg.norm_offset + p["w"])
  y = y + p["b"] if cfg.norm == NormType.LAYERNORM else y
  return y.astype(x.dtype)


def attention_ov(cfg: TransformerConfig, attn: dict, x: jax.Array, pattern: jax.Array):
  """One layer's attention output [p d] for normalised input x [p d] at a frozen pattern."""
  v = jnp.einsum("pd,dge->pge", x, attn["W_V"])
  if cfg.attn_bias:
    v = v + attn["b_V"]
  v = jnp.repeat(v, cfg.n_heads // cfg.n_kv_heads, axis=1)
  z = jnp.einsum("hps,she->phe", pattern.astype(v.dtype), v)
  out = jnp.einsum("phe,hed->pd", z, attn["W_O"])
  return out + attn["b_O"] if cfg.attn_bias else out


def skip_path(tc_cfg: tc.TranscoderConfig, tc_params: dict, layer: int, x_in: jax.Array):
  """A skip transcoder's linear path at `layer` (zero for other kinds), in model units."""
  if tc_cfg.kind != tc.Kind.SKIP:
    return jnp.zeros_like(x_in)
  x_n = x_in * tc_params["in_scale"][layer]
  return (x_n @ tc_params["W_skip"][layer] / tc_params["out_scale"][layer]).astype(x_in.dtype)


def linear_forward(cfg: TransformerConfig, params: dict, tc_cfg: tc.TranscoderConfig,
                   tc_params: dict, fz: Frozen, embed: jax.Array, mlp: jax.Array,
                   upto: int | None = None):
  """The replacement model's residual stream, affine in the injections.

  Args:
    cfg, params: the model; tc_cfg, tc_params: the transcoder (only a skip path is read).
    fz: the frozen constants; embed [p d], mlp [L p d]: the injections.
    upto: stop before layer `upto`'s attention and return its resid_pre [p d] instead.
  Returns:
    (x_in [L p d], final [p d]), or resid_pre [p d] of layer `upto`.
  """
  resid, x_ins = embed, []
  for l in range(cfg.n_layers):
    if l == upto:
      return resid
    blk = params[f"blocks_{l}"]
    out = attention_ov(cfg, blk["attn"], norm(cfg, resid, fz.ln1[l], blk.get("ln1")),
                       fz.pattern[l])
    if cfg.post_norms:
      out = norm(cfg, out, fz.ln1_post[l], blk["ln1_post"])
    resid = resid + out
    x_in = norm(cfg, resid, fz.ln2[l], blk.get("ln2"))
    x_ins.append(x_in)
    resid = resid + mlp[l] + skip_path(tc_cfg, tc_params, l, x_in)
  return jnp.stack(x_ins), norm(cfg, resid, fz.ln_final, params.get("ln_final"))


def readout_logits(cfg: TransformerConfig, params: dict, final_last: jax.Array) -> jax.Array:
  """Logits [v] (bias and soft-cap included) of one normalised residual [d]."""
  return lens.unembed(cfg, params, final_last)


def capture(cfg: TransformerConfig, params: dict, tc_cfg: tc.TranscoderConfig, tc_params: dict,
            tokens, precision: Precision | str | None = None) -> Replacement:
  """Runs the real model on one prompt and builds its replacement model.

  Args:
    cfg, params: the model; tc_cfg, tc_params: the transcoder (scales folded or not).
    tokens: int [p], one prompt.
    precision: the policy of the model's and the transcoder's forward (None: float32).
  Returns:
    The `Replacement` (all float32 arrays).
  """
  if tc_cfg.n_layers != cfg.n_layers or tc_cfg.d_model != cfg.d_model:
    raise ValueError(f"transcoder of {tc_cfg.n_layers} layers x d_model {tc_cfg.d_model} for a "
                     f"model of {cfg.n_layers} x {cfg.d_model}")
  return _capture(cfg, tc_cfg, params, tc_params, jnp.asarray(tokens, jnp.int32),
                  as_precision(precision))


def _transcoder_forward(tc_cfg, tc_params, x_t, precision: Precision):
  """(pre, acts, prediction) of the transcoder on x_t [p L d], computed in the compute dtype
  (its parameters and input cast here: the transcoder module takes no policy of its own) and
  returned in float32."""
  tcp, x = precision.cast_compute(tc_params), precision.cast_compute(x_t)
  pre = tc.encode_pre(tc_cfg, tcp, x)
  acts = tc.activate(tc_cfg, tcp, pre)
  predicted = tc.decode(tc_cfg, tcp, acts, x)
  return tuple(a.astype(jnp.float32) for a in (pre, acts, predicted))


def _capture_impl(cfg, tc_cfg, params, tc_params, tokens, precision):
  L, p = cfg.n_layers, tokens.shape[0]
  names = _names(cfg)
  logits, c = transformer.forward(cfg, params, tokens[None], Hooks(capture=names),
                                  logits_at=jnp.array([[p - 1]]), precision=precision)
  c = {k: v[0].astype(jnp.float32) for k, v in c.items()}
  ones = jnp.ones((L, p, 1), jnp.float32)
  normed = cfg.norm != NormType.NONE
  stack = lambda suffix: jnp.stack([c[f"blocks.{l}.{suffix}"] for l in range(L)])
  ln1_post, q_norm, k_norm = ones, ones[:, :, None], ones[:, :, None]
  if cfg.post_norms:
    raw = [jnp.einsum("phe,hed->pd", c[f"blocks.{l}.attn.hook_z"],
                      params[f"blocks_{l}"]["attn"]["W_O"])
           + (params[f"blocks_{l}"]["attn"]["b_O"] if cfg.attn_bias else 0.0) for l in range(L)]
    ln1_post = jnp.stack([_divisor(cfg, r) for r in raw])
  if cfg.qk_norm:
    q_norm, k_norm = _divisor(cfg, stack("attn.hook_q")), _divisor(cfg, stack("attn.hook_k"))
  fz = Frozen(pattern=stack("attn.hook_pattern"),
              ln1=stack("ln1.hook_scale") if normed else ones,
              ln1_post=ln1_post, ln2=stack("ln2.hook_scale") if normed else ones,
              ln_final=c["ln_final.hook_scale"] if normed else ones[0],
              q_norm=q_norm, k_norm=k_norm)
  x_in = stack("ln2.hook_normalized" if normed else "hook_resid_mid")
  mlp_out = stack("hook_mlp_out")
  embed = c["hook_embed"] + c.get("hook_pos_embed", 0.0)
  x_t = jnp.swapaxes(x_in, 0, 1)                                   # [p L d]
  pre, acts, predicted = _transcoder_forward(tc_cfg, tc_params, x_t, precision)
  predicted = jnp.swapaxes(predicted, 0, 1)
  skip = jnp.stack([skip_path(tc_cfg, tc_params, l, x_in[l]) for l in range(L)])
  final = c["ln_final.hook_normalized"] if normed else c[f"blocks.{L - 1}.hook_resid_post"]
  b_dec = tc_params["b_dec"] / tc_params["out_scale"][:, None]
  return Replacement(frozen=fz, embed=embed, mlp=mlp_out - skip, x_in=x_in, mlp_out=mlp_out,
                     error=mlp_out - predicted, pre=jnp.swapaxes(pre, 0, 1),
                     acts=jnp.swapaxes(acts, 0, 1), final=final, logits=logits[0, 0],
                     bias_mlp=jnp.broadcast_to(b_dec[:, None], mlp_out.shape))


_capture = jax.jit(_capture_impl, static_argnums=(0, 1, 5))


def hold(rep: Replacement, n: int) -> Replacement:
  """`rep` with the MLP outputs of its first `n` positions held constant: no active features
  and zero error there, their injection moved into `bias_mlp` (the injections, and so the
  logits, are unchanged)."""
  if n <= 0:
    return rep
  at = (jnp.arange(rep.mlp.shape[1]) < n)[None, :, None]
  return rep._replace(acts=jnp.where(at, 0.0, rep.acts), error=jnp.where(at, 0.0, rep.error),
                      bias_mlp=jnp.where(at, rep.mlp, rep.bias_mlp))


def active_features(rep: Replacement) -> dict[str, np.ndarray]:
  """The active features as numpy arrays layer, pos, feature (int32) and act (float32) [F]."""
  acts = np.asarray(rep.acts)
  layer, pos, feat = np.nonzero(acts)
  return {"layer": layer.astype(np.int32), "pos": pos.astype(np.int32),
          "feature": feat.astype(np.int32), "act": acts[layer, pos, feat].astype(np.float32)}
