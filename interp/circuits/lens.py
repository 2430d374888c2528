"""Logit lens, the residual stream as a sum of direct paths, and direct logit attribution.

The final residual stream is exactly a sum of components: the token (and position) embedding,
every head's output (`hook_result`, through Gemma's post-attention norm with its scale taken
from the clean run), each layer's attention bias, and every MLP's output. Through the final norm
with its scale frozen from the clean run (`ln_final.hook_scale`), the logits are linear in the
components, so each one's contribution to a target token's logit is a number, and the
contributions plus the norm/unembedding biases add up to that logit (before any soft-capping).

Precision (`interp.precision`): `logit_lens`, `residual_decomposition`,
`direct_logit_attribution` and `unembed` take `precision=` (default float32, the unchanged
program). Under bfloat16 the forward that fills the cache runs in the compute dtype,
the unembedding products read bfloat16 operands and sum in float32 (as the model's own
unembedding does), and everything a reader adds up stays float32: the components are widened
before they are summed or normalised, so the decomposition still adds up to the final residual
stream and the contributions plus biases to "logit" in float32, with no bfloat16 partial sums.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from interp.circuits import weights
from interp.models import transformer
from interp.models.config import NormType, PositionalType, TransformerConfig
from interp.precision import Precision, as_precision


def final_norm(cfg: TransformerConfig, params, x, scale=None) -> jax.Array:
  """The final norm (identity for norm-free models); `scale` [.. p 1] freezes its divisor."""
  if cfg.norm == NormType.NONE:
    return x
  x = x.astype(jnp.float32)
  if cfg.norm == NormType.LAYERNORM:
    x = x - x.mean(-1, keepdims=True)
  if scale is None:
    scale = jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + cfg.norm_eps)
  y = x / scale * (cfg.norm_offset + params["ln_final"]["w"])
  if cfg.norm == NormType.LAYERNORM:
    y = y + params["ln_final"]["b"]
  return y


def unembed(cfg: TransformerConfig, params, x,
            precision: Precision | str | None = None) -> jax.Array:
  """Logits from normalised residuals x [... d] (bias and soft-capping included).

  Under a non-float32 `precision` x and W_U are rounded to the compute dtype and the product
  sums in float32, as the model's unembedding does; the logits are float32.
  """
  prec = as_precision(precision)
  w_u = weights.unembedding(cfg, params, fold_norms=False)
  if prec.is_float32:
    logits = x @ w_u
  else:
    logits = prec.matmul(prec.cast_compute(x), prec.cast_compute(w_u), output=True)
  if cfg.unembed_bias:
    logits = logits + params["unembed"]["b_U"]
  return transformer.softcap_logits(cfg, logits)


def resid_names(cfg: TransformerConfig) -> list[str]:
  """Residual stream before every block, then after the last: the logit lens's n_layers + 1."""
  return ([f"blocks.{i}.hook_resid_pre" for i in range(cfg.n_layers)]
          + [f"blocks.{cfg.n_layers - 1}.hook_resid_post"])


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def logit_lens(cfg: TransformerConfig, params, tokens, targets=None,
               precision: Precision | str | None = None) -> jax.Array:
  """Each layer's residual stream read out through the final norm and unembedding.

  Args:
    tokens: [b p]; targets: [b p] token ids, or None for the whole vocabulary.
    precision: the forward's and the unembedding's compute dtype (module docstring; default
      float32); the norm, softmax and log-probabilities are float32.
  Returns:
    log-probabilities [l+1 b p v]; with `targets` [b p] only theirs, [l+1 b p] (one layer's
    vocab-wide logits at a time, so this is the form to use on large vocabularies).
  """
  names = resid_names(cfg)
  _, cache = transformer.run_with_cache(cfg, params, tokens, names, precision=precision)

  def read(resid):
    logits = unembed(cfg, params, final_norm(cfg, params, resid), precision)
    logp = jax.nn.log_softmax(logits, axis=-1)
    if targets is None:
      return logp
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]

  return jax.lax.map(read, jnp.stack([cache[n] for n in names]))


def _component_names(cfg: TransformerConfig) -> list[str]:
  names = ["hook_embed"]
  if cfg.positional == PositionalType.LEARNED:
    names.append("hook_pos_embed")
  for i in range(cfg.n_layers):
    names.append(f"blocks.{i}.attn.hook_result")
    if cfg.has_mlp:
      names.append(f"blocks.{i}.hook_mlp_out")
  if cfg.norm != NormType.NONE:
    names.append("ln_final.hook_scale")
  return names + [f"blocks.{cfg.n_layers - 1}.hook_resid_post"]


def component_labels(cfg: TransformerConfig) -> list[str]:
  """Names of the direct paths, in `residual_decomposition` order: "embed", "pos_embed"
  (learned positions), then per layer "L{l}H{h}" for each head, "L{l}.attn_bias" (models with
  attention biases) and "L{l}.mlp" (models with MLPs)."""
  labels = ["embed"] + (["pos_embed"] if cfg.positional == PositionalType.LEARNED else [])
  for i in range(cfg.n_layers):
    labels += [f"L{i}H{h}" for h in range(cfg.n_heads)]
    labels += [f"L{i}.attn_bias"] if cfg.attn_bias else []
    labels += [f"L{i}.mlp"] if cfg.has_mlp else []
  return labels


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def residual_decomposition(cfg: TransformerConfig, params, tokens,
                           precision: Precision | str | None = None):
  """The final residual stream as a sum of direct paths.

  Args:
    tokens: [b p].
    precision: the forward's compute dtype (default float32). The components are widened to
      float32 before anything sums them (a post-norm's heads included).
  Returns:
    (components [n b p d] float32 in `component_labels` order, cache): the components sum to
    `blocks.{last}.hook_resid_post` (in cache, with `ln_final.hook_scale` for normed models;
    in the compute dtype, so under bfloat16 the float32 sum is the more exact of the two).
  """
  _, cache = transformer.run_with_cache(cfg, params, tokens, _component_names(cfg),
                                        precision=precision)
  comps = [cache["hook_embed"]]
  if cfg.positional == PositionalType.LEARNED:
    comps.append(cache["hook_pos_embed"])
  for i in range(cfg.n_layers):
    # float32 before the head sum (a no-op for the float32 policy).
    result = cache[f"blocks.{i}.attn.hook_result"].astype(jnp.float32)  # [b p h d]
    attn = params[f"blocks_{i}"]["attn"]
    bias = attn["b_O"] if cfg.attn_bias else jnp.zeros((cfg.d_model,), result.dtype)
    if cfg.post_norms:  # RMSNorm(sum_h result_h + b_O): linear in the heads at the clean scale
      pre = result.sum(2) + bias
      scale = jnp.sqrt(jnp.mean(pre.astype(jnp.float32) ** 2, -1, keepdims=True) + cfg.norm_eps)
      gain = cfg.norm_offset + params[f"blocks_{i}"]["ln1_post"]["w"]
      result, bias = result * (gain / scale)[:, :, None], bias * gain / scale
    comps += [result[:, :, h] for h in range(cfg.n_heads)]
    if cfg.attn_bias:
      comps.append(jnp.broadcast_to(bias, result.shape[:2] + (cfg.d_model,)))
    if cfg.has_mlp:
      comps.append(cache[f"blocks.{i}.hook_mlp_out"])
  return jnp.stack([c.astype(jnp.float32) for c in comps]), cache


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def direct_logit_attribution(cfg: TransformerConfig, params, tokens, targets=None,
                             precision: Precision | str | None = None):
  """Each direct path's contribution to the logit of `targets` (default: the next token).

  Args:
    tokens: [b p]; targets: [b p] token ids (default tokens shifted left; the last position
      then scores its own token).
    precision: the forward's compute dtype (default float32). Under bfloat16 each
      component's product with its target's unembedding column reads bfloat16 operands and
      sums in float32; every contribution, the bias and "logit" are float32.
  Returns:
    dict with "heads" [l h b p], "embed" [b p], "pos_embed" [b p] (learned positions),
    "attn_bias" [l b p] (models with attention biases), "mlp" [l b p] (models with MLPs),
    "bias" [b p] (final norm bias and b_U), "logit" [b p] (the model's pre-softcap logit) and
    "components" [n b p] (every path, in `component_labels` order). Contributions plus "bias"
    sum to "logit".
  """
  if targets is None:
    targets = jnp.concatenate([tokens[:, 1:], tokens[:, -1:]], axis=1)
  prec = as_precision(precision)
  comps, cache = residual_decomposition(cfg, params, tokens, prec)
  labels = component_labels(cfg)
  w_u = weights.unembedding(cfg, params, fold_norms=True)[:, targets]  # [d b p]
  if cfg.norm == NormType.LAYERNORM:
    comps = comps - comps.mean(-1, keepdims=True)
  if cfg.norm != NormType.NONE:
    comps = comps / cache["ln_final.hook_scale"][None]
  if prec.is_float32:
    contrib = jnp.einsum("nbpd,dbp->nbp", comps, w_u)
  else:
    contrib = prec.einsum("nbpd,dbp->nbp", prec.cast_compute(comps), prec.cast_compute(w_u),
                          output=True)
  bias = jnp.zeros(targets.shape, jnp.float32)
  if cfg.norm == NormType.LAYERNORM:
    bias = bias + jnp.einsum("d,dbp->bp", params["ln_final"]["b"],
                             weights.unembedding(cfg, params, fold_norms=False)[:, targets])
  if cfg.unembed_bias:
    bias = bias + params["unembed"]["b_U"][targets]
  out = {"components": contrib, "bias": bias, "logit": contrib.sum(0) + bias}
  index = {name: i for i, name in enumerate(labels)}
  out["embed"] = contrib[index["embed"]]
  if "pos_embed" in index:
    out["pos_embed"] = contrib[index["pos_embed"]]
  out["heads"] = jnp.stack([jnp.stack([contrib[index[f"L{i}H{h}"]] for h in range(cfg.n_heads)])
                            for i in range(cfg.n_layers)])
  if cfg.attn_bias:
    out["attn_bias"] = jnp.stack([contrib[index[f"L{i}.attn_bias"]] for i in range(cfg.n_layers)])
  if cfg.has_mlp:
    out["mlp"] = jnp.stack([contrib[index[f"L{i}.mlp"]] for i in range(cfg.n_layers)])
  return out
