"""The lenses (`interp.circuits.lens`) under the bfloat16 policy against float32: direct logit
attribution, the residual decomposition that still adds up in float32, and the logit lens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from interp.circuits import lens
from interp.models import config, transformer

# Gemma-like (RMSNorm, post-norms: heads enter through a frozen scale) and GPT-2-like
# (LayerNorm, learned positions, an unembedding bias), each small enough to compile in a second.
GEMMA = config.gemma3_270m(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                           d_head=16, d_mlp=128, sliding_window=None, n_ctx=16)
GPT2 = config.gpt2("small", vocab_size=64, n_ctx=16, d_model=64, n_layers=2, n_heads=4,
                   d_head=16, d_mlp=128, tied_embeddings=False, unembed_bias=True)
# bfloat16 keeps 8 significant bits: each rounding is off by up to 2^-9 (0.2%) of the value.
# Measured on CPU (jax 0.10.2), Gemma-like: head contributions move by at most 0.0041 and
# "logit" sits 0.0082 from the bfloat16 model's own logit, with components up to 2.53 (0.16% and
# 0.32%: one or two roundings of the largest term). 1% of the largest component is ~5 roundings,
# 3x the larger measured gap.
REL_TOL = 0.01
# The model's bfloat16 residual stream is rounded after each of its 5 additions (embedding, then
# attention and MLP per layer), the float32 sum of the components never: measured 0.049 apart
# on a stream up to 6.7 (0.7%); 5 roundings of 2^-9 of the largest value plus the components'
# own is ~2%.
RESID_TOL = 0.02

_forward = jax.jit(transformer.forward, static_argnums=(0, 5))


def _params(cfg, seed=1, scale=0.1):
  """Random parameters drawn with numpy (norm gains off 0 / 1, attention far from uniform)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def test_direct_logit_attribution_in_bf16_matches_float32_and_still_adds_up():
  cfg, params = GEMMA, _params(GEMMA)
  tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, cfg.vocab_size)
  targets = jnp.concatenate([tokens[:, 1:], tokens[:, -1:]], axis=1)
  f32 = lens.direct_logit_attribution(cfg, params, tokens, precision="float32")
  bf16 = lens.direct_logit_attribution(cfg, params, tokens, precision="bfloat16")
  default = lens.direct_logit_attribution(cfg, params, tokens)
  for k in f32:  # the float32 policy is the unchanged program
    np.testing.assert_array_equal(np.asarray(default[k]), np.asarray(f32[k]))
  scale = float(jnp.abs(f32["components"]).max())
  gap = float(jnp.abs(bf16["heads"] - f32["heads"]).max())
  logits16 = _forward(cfg, params, tokens, None, None, "bfloat16")[0]
  model16 = jnp.take_along_axis(logits16, targets[..., None], -1)[..., 0]
  to_model = float(jnp.abs(bf16["logit"] - model16).max())
  heads16 = np.asarray(bf16["heads"]).reshape(-1, 18)  # [l*h, b*p]
  heads32 = np.asarray(f32["heads"]).reshape(-1, 18)
  taus = [stats.kendalltau(heads16[:, i], heads32[:, i]).statistic for i in range(18)]
  print(f"\nDLA bf16 vs float32: heads max |diff| {gap:.4f}, bf16 logit vs bf16 model "
        f"{to_model:.4f} (components up to {scale:.2f}); Kendall tau of the 8 heads per "
        f"position: min {min(taus):.3f} mean {np.mean(taus):.3f}")
  assert all(v.dtype == jnp.float32 for v in bf16.values())
  assert 0 < gap <= REL_TOL * scale  # > 0: the bfloat16 forward was really used
  assert to_model <= REL_TOL * scale
  # Contributions and bias add up to "logit" in float32: no bfloat16 partial sums.
  np.testing.assert_allclose(bf16["components"].sum(0) + bf16["bias"], bf16["logit"],
                             rtol=0, atol=1e-6 * scale)
  # Same ranking of the heads wherever they are apart (measured: every tau >= 0.93).
  assert min(taus) >= 0.85
  comps, cache = lens.residual_decomposition(cfg, params, tokens, precision="bfloat16")
  final = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
  assert comps.dtype == jnp.float32 and final.dtype == jnp.bfloat16
  np.testing.assert_allclose(comps.sum(0), final.astype(jnp.float32), rtol=0,
                             atol=RESID_TOL * float(jnp.abs(final).max()))


def test_logit_lens_in_bf16_last_layer_is_the_bf16_model():
  cfg, params = GPT2, _params(GPT2, seed=3)
  tokens = jax.random.randint(jax.random.key(5), (2, 7), 0, cfg.vocab_size)
  f32 = lens.logit_lens(cfg, params, tokens)
  bf16 = lens.logit_lens(cfg, params, tokens, precision="bfloat16")
  logits16 = _forward(cfg, params, tokens, None, None, "bfloat16")[0]
  last = float(jnp.abs(bf16[-1] - jax.nn.log_softmax(logits16)).max())
  gap = float(jnp.abs(bf16 - f32).max())
  spread = float(jnp.abs(f32).max())
  print(f"\nlogit lens bf16: last layer vs bf16 model {last:.5f}, vs float32 lens {gap:.5f} "
        f"(log-probs down to {-spread:.2f})")
  assert bf16.dtype == jnp.float32 and bf16.shape == f32.shape == (3, 2, 7, 64)
  # Measured 0.0015 from float32 and 0.0008 from the model (log-probs down to -4.6): bfloat16
  # rounds these logits (under 1) by up to 0.002 each.
  assert 0 < gap <= REL_TOL * spread and last <= REL_TOL * spread
  targets = lens.logit_lens(cfg, params, tokens, tokens, precision="bfloat16")
  np.testing.assert_allclose(targets, jnp.take_along_axis(bf16, tokens[None, ..., None],
                                                          -1)[..., 0], atol=1e-6)
