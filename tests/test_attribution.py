"""Token attributions (masking, Shapley, LIME, gradients) and head write norms, against
brute-force formulas, direct evaluation, and the `shap` / `lime` packages where installed."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.attribution import gradients, heads, lime, masking, shapley
from interp.models import transformer
from interp.models.config import TransformerConfig

# A LayerNorm model with biases and learned positions, and a Gemma-like one: grouped-query
# attention (4 query heads on 2 kv heads), RMSNorm post-norms, RoPE, QK-norm.
CFG = TransformerConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, d_head=8, n_ctx=16,
                        d_mlp=64, init_std=0.3)
GEMMA_LIKE = TransformerConfig(
    vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_head=8, n_ctx=16, d_mlp=64,
    mlp="gated", norm="rmsnorm", norm_offset=1.0, post_norms=True, qk_norm=True,
    positional="rope", attn_bias=False, mlp_bias=False, tied_embeddings=True, init_std=0.3)
TOKENS = jnp.array([1, 7, 3, 9, 4, 12, 5])
METRIC = masking.LogitDiff(good=2, bad=5)

# Reference computations run jitted: op-by-op dispatch would compile every primitive alone.
init_params = jax.jit(transformer.init_params, static_argnums=0)
forward = jax.jit(transformer.forward, static_argnums=0)
run_with_cache = jax.jit(transformer.run_with_cache, static_argnums=(0, 3))


def _randomise_norm_weights(params, key):
  """Post-norm weights start at zero (offset 1); make them matter."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  keys = iter(jax.random.split(key, len(flat)))
  def visit(path, x):
    name = jax.tree_util.keystr(path)
    return 0.5 * jax.random.normal(next(keys), x.shape) if "_post" in name else x
  return jax.tree_util.tree_map_with_path(visit, params)


@pytest.fixture(scope="module")
def models():
  params = init_params(CFG, jax.random.key(0))
  gemma = _randomise_norm_weights(init_params(GEMMA_LIKE, jax.random.key(1)),
                                  jax.random.key(2))
  return {"plain": (CFG, params), "gemma_like": (GEMMA_LIKE, gemma)}


def toy_value(p, seed=0):
  """A nonlinear value function on [n p] masks: linear terms, pair and triple interactions.
  NumPy, not jnp: the `shap` references call it many times with small batches."""
  rng = np.random.default_rng(seed)
  a, c = rng.normal(size=p), rng.normal(size=p)
  def value(masks):
    m = np.asarray(masks, np.float64)
    return (m @ a + 1.5 * m[:, 0] * m[:, 1] - 0.8 * m[:, 2] * m[:, 3] * m[:, 4]
            + np.sin(m @ c))
  return value


def brute_force_shapley(value, p):
  """phi_i = sum_S |S|!(p-|S|-1)!/p! (v(S+i) - v(S)), one value call per coalition."""
  v = lambda s: float(value(np.asarray([[j in s for j in range(p)]]))[0])
  phi = np.zeros(p)
  for i in range(p):
    rest = [j for j in range(p) if j != i]
    for r in range(p):
      for s in itertools.combinations(rest, r):
        w = math.factorial(r) * math.factorial(p - r - 1) / math.factorial(p)
        phi[i] += w * (v(set(s) | {i}) - v(set(s)))
  return phi


# ----- Masking-based attributions.

def test_exact_shapley_matches_brute_force_and_is_efficient():
  value = toy_value(5)
  phi = shapley.exact_shapley(value, 5)
  np.testing.assert_allclose(phi, brute_force_shapley(value, 5), atol=1e-5)
  ends = value(np.array([[True] * 5, [False] * 5]))
  assert abs(phi.sum() - (ends[0] - ends[1])) < 1e-5
  # Kept positions are not players: zero attribution, the rest are Shapley values of the game
  # with those positions fixed on.
  keep = np.array([True, False, False, False, True])
  fixed = shapley.exact_shapley(value, 5, keep)
  assert fixed[0] == 0 and fixed[4] == 0
  sub = lambda m: value(np.concatenate([np.ones((len(m), 1), bool), m,
                                        np.ones((len(m), 1), bool)], 1))
  np.testing.assert_allclose(fixed[1:4], brute_force_shapley(sub, 3), atol=1e-5)


def test_kernel_shap_converges_to_exact():
  value = toy_value(8, seed=1)
  exact = shapley.exact_shapley(value, 8)
  scale = np.abs(exact).max()
  err = {}
  for samples in (64, 512, 4096):
    est = [shapley.kernel_shap(value, 8, samples, jax.random.key(s)) for s in range(3)]
    np.testing.assert_allclose([e.sum() for e in est], exact.sum(), atol=1e-5)  # efficiency
    err[samples] = np.mean([np.abs(e - exact).max() for e in est])
  assert err[4096] < err[512] < err[64]
  assert err[4096] < 0.02 * scale, (err, scale)


def test_occlusion_is_leave_one_out():
  value = toy_value(6)
  keep = np.array([True, False, False, False, False, True])
  occ = masking.occlusion(value, 6, keep)
  full = float(value(np.ones((1, 6), bool))[0])
  for i in range(6):
    mask = np.ones((1, 6), bool)
    mask[0, i] = keep[i]
    assert abs(occ[i] - (full - float(value(mask)[0]))) < 1e-12


def test_lime_recovers_a_linear_value_function():
  coef = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0, 0.25, 2.0])
  value = lambda m: np.asarray(m, np.float64) @ coef + 0.7
  for sampling in ("count", "bernoulli"):
    fit = lime.lime(value, 8, 2000, jax.random.key(0), sampling=sampling, ridge=1e-3)
    np.testing.assert_allclose(fit.coef, coef, atol=1e-3)
    assert abs(fit.intercept - 0.7) < 1e-3 and fit.score > 0.9999
  keep = np.zeros(8, bool)
  keep[[0, 7]] = True
  fit = lime.lime(value, 8, 2000, jax.random.key(1), keep=keep, ridge=1e-3)
  np.testing.assert_allclose(fit.coef, np.where(keep, 0.0, coef), atol=1e-3)
  with pytest.raises(ValueError, match="sampling='uniform'"):
    lime.lime(value, 8, 10, jax.random.key(0), sampling="uniform")


def test_together_evaluates_each_distinct_mask_once_and_changes_nothing():
  """Occlusion, KernelSHAP and LIME through `masking.together`: one value call on the distinct
  masks (far fewer than the methods ask for apart), and the same attributions bit for bit."""
  base, p = toy_value(10, seed=2), 10
  keep = np.zeros(p, bool)
  keep[[0, 9]] = True
  calls = []

  def value(masks):
    calls.append(np.asarray(masks).shape[0])
    return base(masks)

  methods = (lambda v: masking.occlusion(v, p, keep),
             lambda v: shapley.kernel_shap(v, p, 256, jax.random.key(0), keep),
             lambda v: lime.lime(v, p, 256, jax.random.key(1), keep).coef)
  apart = [m(value) for m in methods]
  asked, calls[:] = sum(calls), []
  joint = masking.together(value, *methods)
  assert len(calls) == 1 and calls[0] < 0.7 * asked, (calls, asked)
  for a, b in zip(apart, joint):
    np.testing.assert_array_equal(a, b)


# ----- The `shap` and `lime` packages as references.

def test_shapley_matches_shap_package():
  shap = pytest.importorskip("shap")
  p = 8
  value = toy_value(p, seed=2)
  model = lambda x: value(np.asarray(x) > 0.5)
  background = np.zeros((1, p))
  ref = shap.explainers.Exact(model, background)(np.ones((1, p))).values[0]
  np.testing.assert_allclose(shapley.exact_shapley(value, p), ref, atol=1e-10)
  # With nsamples above 2^p - 2, shap's KernelExplainer enumerates every coalition: exact.
  kernel_ref = shap.KernelExplainer(model, background).shap_values(
      np.ones((1, p)), nsamples=2 ** p + 100, silent=True)[0]
  np.testing.assert_allclose(kernel_ref, ref, atol=1e-4)
  ours = shapley.kernel_shap(value, p, 4096, jax.random.key(0))
  assert np.abs(ours - ref).max() < 0.02 * np.abs(ref).max()


def test_lime_fit_matches_lime_package():
  lime_base = pytest.importorskip("lime.lime_base")
  value = toy_value(6, seed=3)
  z = lime.sample_coalitions(jax.random.key(0), 6, 500)
  v = value(z)
  ours = lime.lime_fit(z, v, kernel_width=0.25)
  # The lime text explainer: cosine distance * 100, kernel width 25, Ridge(alpha=1).
  kernel = lambda d: np.sqrt(np.exp(-(d ** 2) / 25.0 ** 2))
  d = lime.distances(z) * 100
  intercept, weights, score, _ = lime_base.LimeBase(kernel).explain_instance_with_data(
      z.astype(float), v[:, None], d, 0, 6, feature_selection="none")
  ref = np.zeros(6)
  for i, w in weights:
    ref[i] = w
  np.testing.assert_allclose(ours.coef, ref, atol=1e-8)
  assert abs(ours.intercept - intercept) < 1e-8 and abs(ours.score - score) < 1e-8


# ----- Masked LM values.

def test_masked_lm_value_equals_running_each_masked_sequence(models):
  cfg, params = models["plain"]
  p = len(TOKENS)
  keep = np.zeros(p, bool)
  keep[[0, p - 1]] = True
  value = masking.masked_lm_value(cfg, params, TOKENS, METRIC, baseline_token=0, keep=keep,
                                  chunk=4)
  masks = np.asarray(jax.random.bernoulli(jax.random.key(3), 0.5, (10, p)))
  got = np.asarray(value(masks))  # 10 masks pad to 12: three vmapped steps of 4
  for mask, g in zip(masks, got):
    seq = np.where(mask | keep, np.asarray(TOKENS), 0)
    logits, _ = forward(cfg, params, jnp.asarray(seq)[None])
    np.testing.assert_allclose(g, METRIC(logits[0]), rtol=1e-5, atol=1e-5)
  # Exact Shapley over the 5 maskable tokens: efficiency on the model.
  phi = shapley.exact_shapley(value, p, keep)
  ends = np.asarray(value(np.stack([np.ones(p, bool), keep])))
  assert abs(phi.sum() - (ends[0] - ends[1])) < 1e-4
  assert phi[0] == 0 and phi[-1] == 0 and np.abs(phi).max() > 1e-2


def test_masked_lm_value_compiles_once_per_padded_size(models):
  cfg, params = models["plain"]
  traces = []
  def metric(logits):  # runs only while tracing
    traces.append(1)
    return logits[-1, 3]
  value = masking.masked_lm_value(cfg, params, TOKENS, metric, baseline_token=0, chunk=8)
  value(np.ones((5, len(TOKENS)), bool))
  first = len(traces)
  value(np.ones((8, len(TOKENS)), bool))  # pads to the same 8 rows: no retrace
  value(np.zeros((3, len(TOKENS)), bool))
  assert len(traces) == first


# ----- Gradients.

def test_grad_x_input_of_a_linear_function():
  w = jax.random.normal(jax.random.key(0), (5, 3))
  x = jax.random.normal(jax.random.key(1), (5, 3))
  f = lambda e: jnp.sum(w * e) + 2.0
  np.testing.assert_allclose(gradients.grad_x_input(f, x), (w * x).sum(1), rtol=1e-6)
  # For a linear f, IG from zero is the same, with any rule and any number of steps.
  ig = gradients.integrated_gradients(f, x, steps=3, rule="trapezoid")
  np.testing.assert_allclose(ig, (w * x).sum(1), rtol=1e-5)


@pytest.mark.parametrize("name,rule,baseline_token", [("plain", "midpoint", None),
                                                      ("gemma_like", "trapezoid", 0)])
def test_integrated_gradients_are_complete_on_a_transformer(models, name, rule, baseline_token):
  cfg, params = models[name]
  keep = np.zeros(len(TOKENS), bool)
  keep[0] = True
  ig = gradients.lm_integrated_gradients(cfg, params, TOKENS, METRIC, baseline_token, keep,
                                         steps=128, rule=rule)
  f = jax.jit(gradients.lm_embedding_fn(cfg, params, TOKENS, METRIC))
  x = gradients.token_embeddings(cfg, params, TOKENS)
  base = gradients.lm_baseline(cfg, params, TOKENS, baseline_token, keep)
  # The embedding edit reproduces the unedited forward (two programs: float32 rounding apart,
  # 1.3e-5 relative as the suite compiles, tests/__init__.py).
  np.testing.assert_allclose(f(x), METRIC(forward(cfg, params, TOKENS[None])[0][0]),
                             rtol=5e-5)
  delta = float(f(x) - f(base))
  assert abs(float(ig.sum()) - delta) < 1e-3 * abs(delta), (float(ig.sum()), delta)
  assert float(ig[0]) == 0.0
  gxi = gradients.lm_grad_x_input(cfg, params, TOKENS, METRIC)
  np.testing.assert_allclose(gxi, (jax.grad(f)(x) * x).sum(1), rtol=1e-4, atol=1e-5)


def test_zero_baseline_breaks_completeness_without_learned_positions(models):
  """The documented trap: pre-norm + RoPE makes f(t x) jump at t ~ 0 (gradients module)."""
  cfg, params = models["gemma_like"]
  f = jax.jit(gradients.lm_embedding_fn(cfg, params, TOKENS, METRIC))
  x = gradients.token_embeddings(cfg, params, TOKENS)
  delta = float(f(x) - f(jnp.zeros_like(x)))
  # Over a third of the change happens in the first 0.1% of the path.
  assert abs(float(f(1e-3 * x) - f(jnp.zeros_like(x)))) > 0.3 * abs(delta)
  ig = gradients.lm_integrated_gradients(cfg, params, TOKENS, METRIC, steps=32)
  assert abs(float(ig.sum()) - delta) > 0.1 * abs(delta)


# ----- Head write norms.

def _explicit_writes(cfg, params, tokens):
  """Per layer: per-source write vectors [b h p s d] from the cache, after a frozen post-norm,
  and the cache."""
  names = []
  for l in range(cfg.n_layers):
    names += [f"blocks.{l}.attn.hook_{k}" for k in ("pattern", "v", "result")]
    names.append(f"blocks.{l}.hook_attn_out")
  _, cache = run_with_cache(cfg, params, tokens, tuple(names))
  out = []
  for l in range(cfg.n_layers):
    pre = f"blocks.{l}.attn.hook_"
    v = jnp.repeat(cache[pre + "v"], cfg.n_heads // cfg.n_kv_heads, axis=2)
    w_o = params[f"blocks_{l}"]["attn"]["W_O"]
    vec = jnp.einsum("bhps,bshe,hed->bhpsd", cache[pre + "pattern"], v, w_o)
    if cfg.post_norms:  # RMSNorm over the sum of heads, its divisor frozen
      total = cache[pre + "result"].sum(2)
      rms = jnp.sqrt(jnp.mean(total ** 2, -1) + cfg.norm_eps)
      w = cfg.norm_offset + params[f"blocks_{l}"]["ln1_post"]["w"]
      vec = vec * w / rms[:, None, :, None, None]
    out.append(vec)
  return out, cache


@pytest.mark.parametrize("name", ["plain", "gemma_like"])
def test_write_norms_equal_the_norms_of_explicit_per_source_writes(models, name):
  cfg, params = models[name]
  tokens = jax.random.randint(jax.random.key(4), (2, 6), 0, cfg.vocab_size)
  vecs, cache = _explicit_writes(cfg, params, tokens)
  norms = heads.write_norms(cfg, params, tokens)
  assert norms.shape == (cfg.n_layers, 2, cfg.n_heads, 6, 6)
  pats = heads.attention_patterns(cfg, params, tokens)
  for l, vec in enumerate(vecs):
    pre = f"blocks.{l}.attn.hook_"
    np.testing.assert_allclose(pats[l], cache[pre + "pattern"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norms[l], jnp.linalg.norm(vec, axis=-1), rtol=1e-4, atol=1e-6)
    if cfg.post_norms:  # the heads' writes after the post-norm sum to the attention output
      np.testing.assert_allclose(vec.sum((1, 3)), cache[f"blocks.{l}.hook_attn_out"],
                                 rtol=1e-4, atol=1e-5)
    else:  # summed over sources: the head's direct output, hook_result
      np.testing.assert_allclose(vec.sum(3).transpose(0, 2, 1, 3), cache[pre + "result"],
                                 rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["plain", "gemma_like"])
def test_head_evidence(models, name):
  cfg, params = models[name]
  tokens = jax.random.randint(jax.random.key(5), (2, 6), 0, cfg.vocab_size)
  pats = heads.attention_patterns(cfg, params, tokens)
  norms = heads.write_norms(cfg, params, tokens)
  one = jnp.arange(6) == 2
  ev = heads.head_evidence(cfg, params, tokens, sources=one)  # queries: the last position
  np.testing.assert_allclose(ev.attention, pats[:, :, :, 5, 2].mean(1), rtol=1e-5)
  np.testing.assert_allclose(ev.write_norm, norms[:, :, :, 5, 2].mean(1), rtol=1e-4)
  everything = heads.head_evidence(cfg, params, tokens, sources=jnp.ones(6, bool),
                                   queries=jnp.ones((2, 6), bool))
  np.testing.assert_allclose(everything.attention, 1.0, rtol=1e-5)
  np.testing.assert_allclose(everything.write_norm, everything.head_norm, rtol=1e-4)
  vecs, _ = _explicit_writes(cfg, params, tokens)
  for l, vec in enumerate(vecs):
    head_out = jnp.linalg.norm(vec.sum(3), axis=-1)  # [b h p]
    np.testing.assert_allclose(everything.head_norm[l], head_out.mean((0, 2)), rtol=1e-4)
  # A head's write from a set is at most the sum of its per-source writes (triangle inequality).
  two = (jnp.arange(6) == 1) | (jnp.arange(6) == 3)
  ev2 = heads.head_evidence(cfg, params, tokens, sources=two)
  bound = norms[:, :, :, 5][..., np.asarray(two)].sum(-1).mean(1)
  assert np.all(np.asarray(ev2.write_norm) <= np.asarray(bound) + 1e-5)
