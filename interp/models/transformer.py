"""Decoder-only transformer as Flax Linen modules, with a hook point at every named activation.

Parameters are a plain nested dict (TransformerLens-style names, see `PARAM_AXES`):

  embed/W_E [v d]       pos_embed/W_pos [ctx d]      unembed/W_U [d v], b_U [v] (untied only)
  blocks_{L}/ln1/w,b    blocks_{L}/ln1_post/w        blocks_{L}/ln2/w,b    blocks_{L}/ln2_post/w
  blocks_{L}/attn/W_Q [d h e]  W_K, W_V [d g e]  W_O [h e d]  b_Q [h e]  b_K, b_V [g e]  b_O [d]
  blocks_{L}/attn/q_norm/w, k_norm/w [e] (Gemma 3)   blocks_{L}/attn/smear [g] (smeared keys)
  blocks_{L}/mlp/W_in [d m] b_in [m] W_gate [d m] (gated) W_out [m d] b_out [d]
  ln_final/w,b

Use `init_params` and `forward`; the modules are an implementation detail.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from interp.models.config import (Activation, MLPType, NormType, PositionalType,
                                  TransformerConfig)
from interp.models.hooks import HookContext, Hooks, as_names, hook_shapes
from interp.parallel.sharding import constrain
from interp.precision import FLOAT32, Precision, as_precision

# Logical axes of every parameter, keyed by its leaf name.
PARAM_AXES = {
    "W_E": ("vocab", "embed"), "W_pos": ("ctx", "embed"), "W_U": ("embed", "vocab"),
    "b_U": ("vocab",),
    "W_Q": ("embed", "heads", "head_dim"), "W_K": ("embed", "kv_heads", "head_dim"),
    "W_V": ("embed", "kv_heads", "head_dim"), "W_O": ("heads", "head_dim", "embed"),
    "b_Q": ("heads", "head_dim"), "b_K": ("kv_heads", "head_dim"),
    "b_V": ("kv_heads", "head_dim"), "b_O": ("embed",), "smear": ("kv_heads",),
    "W_in": ("embed", "mlp"), "W_gate": ("embed", "mlp"), "b_in": ("mlp",),
    "W_out": ("mlp", "embed"), "b_out": ("embed",),
    "w": ("norm",), "b": ("norm",),
}

B, P, D, E = "batch", "seq", "embed", "head_dim"


def _act(kind: Activation, x):
  """The nonlinearity, computed in float32 (GELU's tanh and erf lose digits in bfloat16)."""
  xf = x.astype(jnp.float32)
  if kind == Activation.RELU:
    y = jax.nn.relu(xf)
  else:
    y = jax.nn.gelu(xf, approximate=(kind == Activation.GELU_TANH))
  return y.astype(x.dtype)


class Norm(nn.Module):
  """LayerNorm or RMSNorm over the last axis; `hook` prefixes its hook_scale/hook_normalized."""

  cfg: TransformerConfig
  hook: str | None = None

  @nn.compact
  def __call__(self, x, hk: HookContext):
    cfg = self.cfg
    dim = x.shape[-1]
    xf = x.astype(jnp.float32)
    if cfg.norm == NormType.LAYERNORM:
      xf = xf - xf.mean(-1, keepdims=True)
    scale = jnp.sqrt(jnp.mean(xf * xf, -1, keepdims=True) + cfg.norm_eps)
    if self.hook:
      scale = hk(self.hook + ".hook_scale", scale)
    y = xf / scale
    w_init = nn.initializers.zeros if cfg.norm_offset else nn.initializers.ones
    y = y * (cfg.norm_offset + self.param("w", w_init, (dim,)))
    if cfg.norm == NormType.LAYERNORM:
      y = y + self.param("b", nn.initializers.zeros, (dim,))
    y = y.astype(x.dtype)
    return hk(self.hook + ".hook_normalized", y) if self.hook else y


def rope(x, base: float, pos_axis: int = 1):
  """Rotary embedding (rotate-half convention of transformers' Llama/Gemma) on [b p n e], or on
  any layout whose last axis is the head dimension and `pos_axis` the position."""
  e = x.shape[-1]
  inv = 1.0 / (base ** (jnp.arange(0, e, 2, dtype=jnp.float32) / e))
  ang = jnp.arange(x.shape[pos_axis], dtype=jnp.float32)[:, None] * inv[None, :]
  shape = [1] * x.ndim
  shape[pos_axis], shape[-1] = x.shape[pos_axis], e
  ang = jnp.concatenate([ang, ang], -1).reshape(shape)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], -1)
  return (x * jnp.cos(ang) + rotated * jnp.sin(ang)).astype(x.dtype)


def attention_mask(cfg: TransformerConfig, layer: int, qpos, kpos):
  """Which keys each query reads: causal, and within the sliding window on local layers.

  qpos [..., q] and kpos [s] are positions; returns bool [..., q, s]."""
  mask = kpos <= qpos[..., None]
  if cfg.is_local(layer):
    mask = mask & (qpos[..., None] - kpos < cfg.sliding_window)
  return mask


def softcap_logits(cfg: TransformerConfig, logits):
  """Gemma's tanh soft-capping of the final logits (unchanged when the config has none)."""
  if cfg.final_logit_softcap:
    logits = cfg.final_logit_softcap * jnp.tanh(logits / cfg.final_logit_softcap)
  return logits


class Attention(nn.Module):
  cfg: TransformerConfig
  layer: int
  prec: Precision = FLOAT32

  @nn.compact
  def __call__(self, x, hk: HookContext):
    cfg, pre = self.cfg, f"blocks.{self.layer}.attn."
    d, h, g, e = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    init = nn.initializers.normal(cfg.init_std)
    zeros = nn.initializers.zeros

    def proj(name, n):
      y = self.prec.einsum("bpd,dne->bpne", x, self.param("W_" + name, init, (d, n, e)))
      if cfg.attn_bias:
        y = y + self.param("b_" + name, zeros, (n, e))
      return y

    q = hk(pre + "hook_q", constrain(proj("Q", h), (B, P, "heads", E)))
    k = hk(pre + "hook_k", proj("K", g))
    v = hk(pre + "hook_v", proj("V", g))
    if cfg.qk_norm:
      q = Norm(cfg, name="q_norm")(q, hk)
      k = Norm(cfg, name="k_norm")(k, hk)
    if cfg.smear_keys:
      a = jax.nn.sigmoid(self.param("smear", zeros, (g,)))[None, None, :, None]
      k = a * k + (1 - a) * jnp.concatenate([k[:, :1], k[:, :-1]], axis=1)
    if cfg.positional == PositionalType.ROPE:
      base = cfg.rope_local_base if cfg.is_local(self.layer) else cfg.rope_base
      q = hk(pre + "hook_rot_q", rope(q, base))
      k = hk(pre + "hook_rot_k", rope(k, base))
    if g != h:  # grouped-query attention: each KV head serves h // g query heads
      k, v = jnp.repeat(k, h // g, axis=2), jnp.repeat(v, h // g, axis=2)

    n = x.shape[1]
    # Scores stay float32 from the accumulator: the softmax reads them unrounded.
    scores = self.prec.einsum("bphe,bshe->bhps", q * cfg.query_scale, k, output=True)
    pos = jnp.arange(n)
    scores = jnp.where(attention_mask(cfg, self.layer, pos, pos), scores,
                       jnp.finfo(scores.dtype).min)
    scores = hk(pre + "hook_attn_scores", constrain(scores, (B, "heads", P, "seq_kv")))
    pattern = hk(pre + "hook_pattern", jax.nn.softmax(scores, axis=-1).astype(x.dtype))
    z = hk(pre + "hook_z", self.prec.einsum("bhps,bshe->bphe", pattern, v))
    w_o = self.param("W_O", init, (h, e, d))
    if hk.wants(pre + "hook_result"):
      out = hk(pre + "hook_result", self.prec.einsum("bphe,hed->bphd", z, w_o)).sum(2)
    else:
      out = self.prec.einsum("bphe,hed->bpd", z, w_o)
    if cfg.attn_bias:
      out = out + self.param("b_O", zeros, (d,))
    return out


class MLP(nn.Module):
  cfg: TransformerConfig
  layer: int
  prec: Precision = FLOAT32

  @nn.compact
  def __call__(self, x, hk: HookContext):
    cfg, pre = self.cfg, f"blocks.{self.layer}.mlp."
    d, m = cfg.d_model, cfg.d_mlp
    init = nn.initializers.normal(cfg.init_std)
    mm = self.prec.matmul
    pre_act = mm(x, self.param("W_in", init, (d, m)))
    if cfg.mlp_bias:
      pre_act = pre_act + self.param("b_in", nn.initializers.zeros, (m,))
    if cfg.mlp == MLPType.GATED:
      linear = hk(pre + "hook_pre_linear", constrain(pre_act, (B, P, "mlp")))
      gate = hk(pre + "hook_pre", mm(x, self.param("W_gate", init, (d, m))))
      post = _act(cfg.act, gate) * linear
    else:
      post = _act(cfg.act, hk(pre + "hook_pre", constrain(pre_act, (B, P, "mlp"))))
    post = hk(pre + "hook_post", post)
    out = mm(post, self.param("W_out", init, (m, d)))
    if cfg.mlp_bias:
      out = out + self.param("b_out", nn.initializers.zeros, (d,))
    return out


class Block(nn.Module):
  cfg: TransformerConfig
  layer: int
  prec: Precision = FLOAT32

  @nn.compact
  def __call__(self, resid, hk: HookContext):
    cfg, pre = self.cfg, f"blocks.{self.layer}."
    norm = cfg.norm != NormType.NONE
    resid = hk(pre + "hook_resid_pre", resid)
    x = Norm(cfg, pre + "ln1", name="ln1")(resid, hk) if norm else resid
    attn_out = Attention(cfg, self.layer, self.prec, name="attn")(x, hk)
    if cfg.post_norms:
      attn_out = Norm(cfg, pre + "ln1_post", name="ln1_post")(attn_out, hk)
    resid = resid + hk(pre + "hook_attn_out", attn_out)
    if cfg.has_mlp:
      resid = hk(pre + "hook_resid_mid", resid)
      x = Norm(cfg, pre + "ln2", name="ln2")(resid, hk) if norm else resid
      mlp_out = MLP(cfg, self.layer, self.prec, name="mlp")(x, hk)
      if cfg.post_norms:
        mlp_out = Norm(cfg, pre + "ln2_post", name="ln2_post")(mlp_out, hk)
      resid = resid + hk(pre + "hook_mlp_out", mlp_out)
    # Constrained before the hook, so the next block's hook_resid_pre sees this very array and
    # the cache can share it rather than store a second copy.
    return hk(pre + "hook_resid_post", constrain(resid, (B, P, D)))


class Embed(nn.Module):
  cfg: TransformerConfig
  prec: Precision = FLOAT32

  def setup(self):
    self.W_E = self.param("W_E", nn.initializers.normal(self.cfg.init_std),
                          (self.cfg.vocab_size, self.cfg.d_model))

  def __call__(self, tokens):
    return jnp.take(self.W_E, tokens, axis=0)

  def attend(self, x):
    return self.prec.matmul(x, self.W_E.T, output=True)


class Transformer(nn.Module):
  cfg: TransformerConfig
  prec: Precision = FLOAT32

  @nn.compact
  def __call__(self, tokens, hk: HookContext, logits_at=None):
    cfg = self.cfg
    embed = Embed(cfg, self.prec, name="embed")
    x = embed(tokens)
    if cfg.embed_scale:
      x = x * jnp.asarray(cfg.d_model ** 0.5, x.dtype)
    x = hk("hook_embed", constrain(x, (B, P, D)))
    if cfg.positional == PositionalType.LEARNED:
      w_pos = PosEmbed(cfg, name="pos_embed")()
      x = x + hk("hook_pos_embed", jnp.broadcast_to(w_pos[: tokens.shape[1]], x.shape))
    for layer in range(cfg.n_layers):
      x = Block(cfg, layer, self.prec, name=f"blocks_{layer}")(x, hk)
    if cfg.norm != NormType.NONE:
      x = Norm(cfg, "ln_final", name="ln_final")(x, hk)
    if logits_at is not None:  # unembed only the positions asked for: [b k d]
      x = jnp.take_along_axis(x, logits_at[:, :, None], axis=1)
    if cfg.tied_embeddings:
      logits = embed.attend(x)
    else:
      logits = Unembed(cfg, self.prec, name="unembed")(x)
    # The float32 accumulator, never rounded to bf16.
    logits = softcap_logits(cfg, logits.astype(jnp.float32))
    return constrain(logits, (B, P, "vocab"))


class PosEmbed(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self):
    return self.param("W_pos", nn.initializers.normal(self.cfg.init_std),
                      (self.cfg.n_ctx, self.cfg.d_model))


class Unembed(nn.Module):
  cfg: TransformerConfig
  prec: Precision = FLOAT32

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    w_u = self.param("W_U", nn.initializers.normal(cfg.init_std), (cfg.d_model, cfg.vocab_size))
    out = self.prec.matmul(x, w_u, output=True)
    if cfg.unembed_bias:
      out = out + self.param("b_U", nn.initializers.zeros, (cfg.vocab_size,)).astype(out.dtype)
    return out


def init_params(cfg: TransformerConfig, key: jax.Array) -> dict:
  """Randomly initialised parameters (a plain nested dict of arrays)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Transformer(cfg).init(key, tokens, HookContext(None))["params"]


def count_params(cfg: TransformerConfig) -> int:
  """Parameter count implied by the config (embeddings included), from shapes only."""
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def param_axes(params) -> dict:
  """The logical axes of every parameter, as a pytree shaped like `params`."""
  def axes(path, leaf):
    name = path[-1].key
    if name not in PARAM_AXES:
      raise KeyError(f"parameter {jax.tree_util.keystr(path)} has no logical axes in PARAM_AXES")
    result = PARAM_AXES[name]
    if len(result) != len(leaf.shape):
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} has shape {leaf.shape}, "
                       f"but its logical axes are {result}")
    return result
  return jax.tree_util.tree_map_with_path(axes, params)


# Parameters the compute cast leaves in float32: norm gains and biases (applied in float32)
# and the unembedding bias (added to float32 logits). Each is a vector, so keeping it costs
# nothing, and rounding a gain stored near 0 (Gemma's) to bfloat16 would be a needless error.
KEEP_FLOAT32 = ("w", "b", "b_U")


def cast_params(params, precision: Precision):
  """The parameters as the forward pass reads them: matrices (and the other vectors) in the
  compute dtype, `KEEP_FLOAT32` leaves as stored. Identity for a float32 policy."""
  if precision.is_float32:
    return params
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x if path[-1].key in KEEP_FLOAT32 else precision.cast_compute(x), params)


def forward(cfg: TransformerConfig, params, tokens, hooks: Hooks | None = None, logits_at=None,
            precision: Precision | str | None = None):
  """Runs the model: returns (logits [b p v] float32, cache {hook name: activation}).

  Hook names are checked here, at trace time, so an unknown name fails before anything runs.
  `logits_at` (int [b k]) unembeds only those positions, giving logits [b k v]: with Gemma's
  262k-token vocabulary the unembedding dominates a short prompt's cost, and circuit metrics
  read one or two positions.

  `precision` (`interp.precision`; default float32) sets the compute dtype: parameters are
  cast to it here, inside the caller's jit, so the stored (master) parameters are untouched;
  the residual stream and the cache have that dtype; attention scores, the softmax, norms and
  the logits are float32 whatever it is.
  """
  prec = as_precision(precision)
  hooks = hooks or Hooks()
  hooks.validate(cfg)
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [batch, seq] integers, got shape {tokens.shape}")
  if cfg.positional == PositionalType.LEARNED and tokens.shape[1] > cfg.n_ctx:
    raise ValueError(f"sequence length {tokens.shape[1]} exceeds n_ctx={cfg.n_ctx}")
  check_token_range(cfg, tokens)
  if logits_at is not None:
    logits_at = jnp.asarray(logits_at, jnp.int32)
    if logits_at.ndim != 2 or logits_at.shape[0] != tokens.shape[0]:
      raise ValueError(f"logits_at must be [batch, k] positions for tokens {tokens.shape}, "
                       f"got shape {logits_at.shape}")
  hk = HookContext(hooks)
  logits = Transformer(cfg, prec).apply({"params": cast_params(params, prec)}, tokens, hk,
                                        logits_at)
  return logits, hk.cache


def check_token_range(cfg: TransformerConfig, tokens) -> None:
  """Refuses concrete token ids outside [0, vocab_size): an embedding lookup clamps them
  silently. Traced tokens (inside `jit`) are checked where they entered, on the host."""
  if isinstance(tokens, jax.core.Tracer):
    return
  if isinstance(tokens, jax.Array) and not tokens.is_fully_addressable:
    return  # another process's rows: each process checks its own where they enter
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
  # On the host: a concrete array closed over inside `jit` must not become traced reductions.
  ids = np.asarray(tokens)
  if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
    raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}) for this model's "
                     f"vocabulary; got ids from {ids.min()} to {ids.max()}")


def run_with_cache(cfg: TransformerConfig, params, tokens, names, edits=None,
                   precision: Precision | str | None = None, positions=None,
                   capture_dtype=None):
  """Shorthand for `forward` with `Hooks(capture=names, edits=edits)` (and `precision`).

  `positions` (ints) keeps only those sequence positions in the cache and `capture_dtype`
  stores it narrower (`Hooks.capture_positions`, `Hooks.capture_dtype`). Names that alias one
  tensor share one array. Buffer reuse across calls needs a jit boundary it owns, so it lives
  in `interp.models.sharded.make_forward`; traced inside a caller's jit, XLA plans these
  buffers itself.
  """
  hooks = Hooks(capture=as_names(names), edits=dict(edits or {}), capture_positions=positions,
                capture_dtype=capture_dtype)
  return forward(cfg, params, tokens, hooks, precision=precision)


def hook_grads(cfg: TransformerConfig, params, tokens, names, metric, edits=None,
               logits_at=None, precision: Precision | str | None = None):
  """Gradient of `metric(logits)` (a scalar) with respect to the activations at `names`.

  Adds a zero tensor at each hook and differentiates with respect to it, so the returned
  gradients are exactly d metric / d activation (what attribution patching needs).
  `logits_at` and `precision` are passed to `forward` (metric then sees logits [b k v]).
  Returns (metric value, cache of the activations, {name: gradient}).
  """
  names = as_names(names)
  shapes = hook_shapes(cfg, tokens.shape[0], tokens.shape[1])
  Hooks(capture=names).validate(cfg)
  zeros = {n: jnp.zeros(shapes[n], jnp.float32) for n in names}
  base_edits = dict(edits or {})

  def f(deltas):
    new_edits = dict(base_edits)
    for n, dlt in deltas.items():
      prev = base_edits.get(n)
      new_edits[n] = (lambda x, dlt=dlt, prev=prev: (prev(x) if prev else x) + dlt.astype(x.dtype))
    logits, cache = forward(cfg, params, tokens, Hooks(capture=names, edits=new_edits),
                            logits_at, precision)
    return metric(logits), cache

  (value, cache), grads = jax.value_and_grad(f, has_aux=True)(zeros)
  return value, cache, grads
