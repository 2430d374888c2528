"""interp.circuits on tiny random models, each checked against a direct slow computation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.circuits import ablate, icl, lens, scores, weights

from interp.data import sources
from interp.induction import segments as data
from interp.models import config, hooks, transformer

TOY = config.attn_only(2, 16, 4, 12, 20)
NORMED = config.gemma3_270m(vocab_size=24, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2,
                            d_head=4, d_mlp=24, sliding_window=None, n_ctx=12)
GPT2ISH = config.gpt2("small", vocab_size=24, n_ctx=12, d_model=16, n_layers=2, n_heads=2,
                      d_head=8, d_mlp=32, tied_embeddings=False, unembed_bias=True)


def _params(cfg, seed=0, scale=0.3):
  """Random parameters of the model's shapes, drawn with numpy (no per-shape compilation).

  Larger than init so attention is far from uniform; norm weights land off 1 / 0.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def toy():
  params = _params(TOY)
  tokens = data.repeated_tokens(jax.random.key(3), 3, 6, TOY.vocab_size)  # [3, 12]
  return params, tokens


# ----- head scores

def test_scores_match_python_loops(toy):
  params, tokens = toy
  got = scores.head_scores(TOY, params, tokens)
  patterns = np.asarray(jax.jit(functools.partial(scores.stacked_patterns, TOY))(params, tokens))
  toks = np.asarray(tokens)
  b, p = toks.shape
  seg = p // 2
  prev = np.zeros((2, 4))
  ind = np.zeros((2, 4))
  dup = np.zeros((2, 4))
  for layer in range(2):
    for h in range(4):
      prev[layer, h] = np.mean([patterns[layer, i, h, q, q - 1] for i in range(b)
                                for q in range(1, p)])
      # Repeated random tokens without replacement: in the second copy the token after the
      # previous occurrence of the current token is q - seg + 1, and the duplicate is q - seg.
      ind[layer, h] = np.mean([patterns[layer, i, h, q, q - seg + 1] for i in range(b)
                               for q in range(seg, p)])
      dup[layer, h] = np.mean([patterns[layer, i, h, q, q - seg] for i in range(b)
                               for q in range(seg, p)])
  np.testing.assert_allclose(got["previous_token"], prev, atol=1e-5)
  np.testing.assert_allclose(got["prefix_matching"], ind, atol=1e-5)
  np.testing.assert_allclose(got["duplicate_token"], dup, atol=1e-5)


def _parses_as_pairs(row, lengths) -> bool:
  if len(row) == 0:
    return True
  for n in lengths:
    first, second = row[:n], row[n:2 * n]
    if len(set(first)) == len(first) and second == first[:len(second)]:
      if _parses_as_pairs(row[2 * n:], lengths):
        return True
  return False


def test_repeated_tokens_and_pairs_source():
  toks = np.asarray(data.repeated_tokens(jax.random.key(0), 4, 7, 30, low=10, bos=1))
  assert toks.shape == (4, 15) and (toks[:, 0] == 1).all()
  np.testing.assert_array_equal(toks[:, 1:8], toks[:, 8:])
  assert all(len(set(row[1:8])) == 7 for row in toks) and toks[:, 1:].min() >= 10
  src = sources.make_source("pairs:3-5", 16)
  batch = src.batch(seed=1, step=2, batch_size=4, length=33)
  np.testing.assert_array_equal(batch, src.batch(1, 2, 4, 33))
  np.testing.assert_array_equal(batch[2:], src.batch(1, 2, 4, 33, rows=slice(2, 4)))
  for row in batch:  # segments of 3..5 distinct tokens, each followed by its copy
    assert _parses_as_pairs(list(row), range(3, 6))
  with pytest.raises(ValueError, match="pairs:MIN-MAX"):
    sources.make_source("pairs:4", 16)
  assert sources.make_source("repeat:8", 16).segment_len == 8


def test_copying_scores_match_full_ov_eigenvalues(toy):
  params, _ = toy
  got = scores.copying_scores(TOY, params)
  w = weights.head_weights(TOY, params)
  w_e, w_u = params["embed"]["W_E"], params["unembed"]["W_U"]
  for layer in range(2):
    for h in range(4):
      full = np.asarray(w_e @ w["W_V"][layer, h] @ w["W_O"][layer, h] @ w_u, np.float64)
      lam = np.linalg.eigvals(full)
      np.testing.assert_allclose(got[layer, h], lam.real.sum() / np.abs(lam).sum(), atol=1e-4)
      top = np.argmax(full, axis=1) == np.arange(TOY.vocab_size)
      np.testing.assert_allclose(scores.direct_copying_scores(TOY, params)[layer, h], top.mean())


# ----- weight circuits

def test_factored_matrix_against_dense():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((3, 7, 2)), rng.standard_normal((3, 2, 7))
  c = rng.standard_normal((7, 5))

  @jax.jit
  def factored(a, b, c):
    m = weights.FactoredMatrix(a, b)
    return {"norm": m.norm(), "right": (m @ c).materialize(), "left": (c.T @ m).materialize(),
            "T": m.T.materialize(), "eig": m.eigenvalues()[0],
            "chain": (m @ weights.FactoredMatrix(b.swapaxes(1, 2), a.swapaxes(1, 2))).materialize()}

  got = factored(a, b, c)
  dense = a @ b
  assert weights.FactoredMatrix(a, b).shape == (3, 7, 7)
  np.testing.assert_allclose(got["norm"], np.linalg.norm(dense, axis=(1, 2)), rtol=1e-5)
  np.testing.assert_allclose(got["right"], dense @ c, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["left"], c.T @ dense, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["T"], dense.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["chain"], dense @ dense.transpose(0, 2, 1), rtol=1e-4, atol=1e-4)
  dense_lam = np.linalg.eigvals(dense[0])  # rank 2: two nonzero eigenvalues, those of B A
  top = np.sort_complex(dense_lam[np.argsort(-np.abs(dense_lam))[:2]])
  np.testing.assert_allclose(np.sort_complex(np.asarray(got["eig"])), top, rtol=1e-3, atol=1e-4)


def _slow_composition(params, cfg, kind):
  w = {k: np.asarray(v, np.float64) for k, v in weights.head_weights(cfg, params).items()}
  n = np.linalg.norm
  out = np.full((cfg.n_layers, cfg.n_heads) * 2, np.nan)
  for l1 in range(cfg.n_layers):
    for h1 in range(cfg.n_heads):
      ov1 = w["W_V"][l1, h1] @ w["W_O"][l1, h1]
      for l2 in range(l1 + 1, cfg.n_layers):
        for h2 in range(cfg.n_heads):
          qk2 = w["W_Q"][l2, h2] @ w["W_K"][l2, h2].T
          b = {"q": qk2, "k": qk2.T, "v": w["W_V"][l2, h2] @ w["W_O"][l2, h2]}[kind]
          out[l1, h1, l2, h2] = n(ov1 @ b) / (n(ov1) * n(b))
  return out


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_composition_matches_dense_loops(toy, kind):
  params, _ = toy
  cfg = config.attn_only(3, 16, 2, 12, 20)
  params = _params(cfg, seed=2)
  got = np.asarray(weights.composition_scores(cfg, params, kind))
  np.testing.assert_allclose(got, _slow_composition(params, cfg, kind), rtol=1e-4)
  qk = weights.qk_circuit(cfg, params)
  np.testing.assert_allclose(qk.materialize()[2, 1],
                             params["blocks_2"]["attn"]["W_Q"][:, 1] @
                             params["blocks_2"]["attn"]["W_K"][:, 1].T, rtol=1e-5)


def test_composition_baseline_is_random_level():
  cfg = config.attn_only(2, 64, 4, 12, 20)  # d_head 16 of d_model 64
  base = weights.composition_baselines(cfg, seed=0, samples=32)
  for v in base.values():  # ~1/sqrt(d) for independent rank-e products in d dims
    assert 0.5 / 8 < v < 2 / 8, base
  # Gaussian weights of this model score at the baseline.
  got = weights.composition(cfg, _params(cfg, seed=1, scale=0.02))
  for k in "qkv":
    excess = np.asarray(got[k]["excess"])[0, :, 1, :]
    assert abs(excess.mean()) < 0.03, (k, excess)


def test_grouped_and_normed_head_weights():
  params = _params(NORMED)
  w = weights.head_weights(NORMED, params)
  gain = 1.0 + params["blocks_1"]["ln1"]["w"]
  # KV head 0 serves query heads 0 and 1; the ln1 gain is folded into the input rows.
  np.testing.assert_allclose(w["W_K"][1, 1],
                             gain[:, None] * params["blocks_1"]["attn"]["W_K"][:, 0], rtol=1e-6)
  assert weights.ov_circuit(NORMED, params, full=True).shape == (2, 4, 24, 24)


# ----- lenses

_forward = jax.jit(lambda cfg, params, tokens: transformer.forward(cfg, params, tokens)[0],
                   static_argnums=0)


def test_residual_stream_is_the_sum_of_direct_paths():
  params = _params(NORMED, seed=1, scale=0.1)  # post-norms: heads enter through a frozen scale
  tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, NORMED.vocab_size)
  comps, cache = lens.residual_decomposition(NORMED, params, tokens)
  labels = lens.component_labels(NORMED)
  assert len(labels) == comps.shape[0] and labels[:3] == ["embed", "L0H0", "L0H1"]
  final = cache["blocks.1.hook_resid_post"]
  np.testing.assert_allclose(comps.sum(0), final, atol=1e-4 * float(jnp.abs(final).max()))


@pytest.mark.parametrize("cfg", [TOY, NORMED, GPT2ISH], ids=["toy", "gemma-like", "gpt2-like"])
def test_direct_logit_attribution_sums_to_the_logit(cfg):
  params = _params(cfg, seed=1, scale=0.1)
  tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, cfg.vocab_size)
  out = lens.direct_logit_attribution(cfg, params, tokens)
  logits = _forward(cfg, params, tokens)
  targets = jnp.concatenate([tokens[:, 1:], tokens[:, -1:]], axis=1)
  want = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(out["logit"], want, atol=2e-4 * float(jnp.abs(want).max()) + 1e-5)
  assert out["heads"].shape == (cfg.n_layers, cfg.n_heads, 2, 9)
  np.testing.assert_allclose(out["heads"][1, 1], out["components"][
      lens.component_labels(cfg).index("L1H1")], rtol=1e-6)


def test_logit_lens_last_layer_is_the_model():
  params = _params(GPT2ISH, seed=3, scale=0.1)
  tokens = jax.random.randint(jax.random.key(5), (2, 7), 0, 24)
  logp = lens.logit_lens(GPT2ISH, params, tokens)
  logits = _forward(GPT2ISH, params, tokens)
  assert logp.shape == (3, 2, 7, 24)
  np.testing.assert_allclose(logp[-1], jax.nn.log_softmax(logits), atol=1e-4)
  np.testing.assert_allclose(lens.logit_lens(GPT2ISH, params, tokens, tokens),
                             jnp.take_along_axis(logp, tokens[None, ..., None], -1)[..., 0],
                             atol=1e-5)


# ----- ablations and ICL

def _loss(logits, tokens):
  return icl.token_losses(logits, tokens).mean()


@functools.partial(jax.jit, static_argnums=0)
def _loss_with_head_replaced(layer, params, tokens, head, fill):
  """Slow reference: one forward with head `head` of `layer`'s hook_z set to fill [b p h e]."""
  edit = lambda z: z.at[:, :, head].set(fill[:, :, head])
  logits, _ = transformer.forward(TOY, params, tokens,
                                  hooks.Hooks(edits={f"blocks.{layer}.attn.hook_z": edit}))
  return _loss(logits, tokens)


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_vmapped_ablation_matches_one_at_a_time(toy, mode):
  params, tokens = toy
  got = ablate.ablate_each_head(TOY, params, tokens, _loss, mode=mode)
  names = [f"blocks.{i}.attn.hook_z" for i in range(2)]
  ref = {"zero": tokens, "mean": tokens, "resample": jnp.roll(tokens, 1, axis=0)}[mode]
  _, cache = transformer.run_with_cache(TOY, params, ref, names)
  for layer in range(2):
    z = cache[names[layer]]
    fill = {"zero": jnp.zeros_like(z), "mean": jnp.broadcast_to(z.mean(0), z.shape),
            "resample": z}[mode]
    for h in range(4):
      np.testing.assert_allclose(got[layer, h],
                                 _loss_with_head_replaced(layer, params, tokens, h, fill),
                                 rtol=1e-5)


def test_pattern_preserving_ablation(toy):
  params, tokens = toy
  masks = jnp.concatenate([ablate.each_head_masks(TOY), ablate.each_layer_masks(TOY)])
  frozen = ablate.ablate(TOY, params, tokens, masks, _loss, preserve_patterns=True)
  # Nothing comes after the last layer, so freezing patterns changes nothing for L1H2.
  logits, _ = transformer.forward(TOY, params, tokens, hooks.Hooks(
      edits={"blocks.1.attn.hook_z": hooks.ablate_head(2)}))
  np.testing.assert_allclose(frozen[6], _loss(logits, tokens), rtol=1e-5)
  # Slow: ablate L0H2 with layer 1's pattern patched to the clean one...
  _, cache = transformer.run_with_cache(TOY, params, tokens, ["blocks.1.attn.hook_pattern"])
  edits = {"blocks.0.attn.hook_z": hooks.ablate_head(2),
           "blocks.1.attn.hook_pattern": hooks.patch(cache["blocks.1.attn.hook_pattern"])}
  logits, _ = transformer.forward(TOY, params, tokens, hooks.Hooks(edits=edits))
  np.testing.assert_allclose(frozen[2], _loss(logits, tokens), rtol=1e-5)
  # ...which differs from letting layer 1 attend anew.
  del edits["blocks.1.attn.hook_pattern"]
  logits, _ = transformer.forward(TOY, params, tokens, hooks.Hooks(edits=edits))
  assert abs(float(frozen[2] - _loss(logits, tokens))) > 1e-4
  # A layer mask ablates the whole layer.
  logits, _ = transformer.forward(TOY, params, tokens, hooks.Hooks(
      edits={"blocks.0.attn.hook_z": jnp.zeros_like, "blocks.1.attn.hook_pattern": hooks.patch(
          cache["blocks.1.attn.hook_pattern"])}))
  np.testing.assert_allclose(frozen[8], _loss(logits, tokens), rtol=1e-5)


def test_ablation_at_chosen_positions_and_one_compilation_for_every_metric(toy):
  params, tokens = toy
  masks = jnp.concatenate([ablate.each_head_masks(TOY), ablate.each_layer_masks(TOY)])
  at = jnp.tile(jnp.array([[7, 10]], jnp.int32), (tokens.shape[0], 1))  # [b 2]
  full_logit = lambda logits, t: logits[:, jnp.array([7, 10]), 5].mean()
  at_logit = lambda logits, t: logits[:, :, 5].mean()  # logits [b 2 v] at `at`
  ablate._ablated_logits.clear_cache()
  full = ablate.ablate(TOY, params, tokens, masks, full_logit)
  assert ablate._ablated_logits._cache_size() == 1
  # A second metric function reuses the compiled forward.
  loss = ablate.ablate(TOY, params, tokens, masks, _loss)
  assert ablate._ablated_logits._cache_size() == 1
  # Chunks of 4 (the last one padded): one more program, for [4 l h] masks.
  np.testing.assert_allclose(ablate.ablate(TOY, params, tokens, masks, _loss, chunk=4), loss,
                             rtol=1e-6)
  assert ablate._ablated_logits._cache_size() == 2
  got = ablate.ablate(TOY, params, tokens, masks, at_logit, logits_at=at, chunk=4)
  assert got.shape == (10,)
  np.testing.assert_allclose(got, full, rtol=1e-5)
  with pytest.raises(ValueError, match=r"logits_at must be \[batch, k\]"):
    ablate.ablate(TOY, params, tokens, masks, at_logit, logits_at=at[:1])
  with pytest.raises(ValueError, match=r"masks must be \[n, n_layers, n_heads\]"):
    ablate.ablate(TOY, params, tokens, masks[0], _loss)


def test_icl_positions_scale_olssons():
  assert icl.icl_positions(512) == (50, 500)
  assert icl.icl_positions(32) == (3, 31)
  assert icl.icl_positions(101) == (10, 99)
  losses = jnp.arange(12.0)[None].repeat(2, 0)  # loss of token t is t - 1
  assert float(icl.icl_score(losses, 2, 10)) == 8.0
