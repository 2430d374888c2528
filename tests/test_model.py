"""Hook points, edits and their composition with jit / vmap / grad, on small random models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import config, hooks, transformer

CONFIGS = {
    "attn_only": config.attn_only(2, 32, 4, 16, 50),
    "smeared": config.attn_only(1, 32, 2, 16, 50, smear_keys=True),
    "gpt2": config.gpt2("small", vocab_size=64, n_ctx=16, d_model=32, n_layers=2, n_heads=4,
                        d_head=8, d_mlp=64),
    "gemma3": config.gemma3_270m(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2,
                                 d_head=8, d_mlp=48, sliding_window=3, global_every=3,
                                 n_ctx=16),
}


def _setup(name, batch=2, seq=10, seed=0):
  cfg = CONFIGS[name]
  params = transformer.init_params(cfg, jax.random.key(seed))
  # Norm weights start at 1 (or 0 with offset); jitter them so that bugs in norms show up.
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)
  tokens = jax.random.randint(jax.random.key(seed + 1), (batch, seq), 0, cfg.vocab_size)
  return cfg, params, tokens


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_hook_has_its_documented_shape(name):
  cfg, params, tokens = _setup(name)
  shapes = hooks.hook_shapes(cfg, *tokens.shape)
  logits, cache = jax.jit(lambda p, t: transformer.run_with_cache(cfg, p, t, shapes))(params, tokens)
  assert logits.shape == (*tokens.shape, cfg.vocab_size)
  assert set(cache) == set(shapes)
  for n, shape in shapes.items():
    assert cache[n].shape == shape, n
  # Capturing changes nothing.
  plain, _ = transformer.forward(cfg, params, tokens)
  np.testing.assert_allclose(plain, logits, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_residual_stream_decomposes_into_component_outputs(name):
  cfg, params, tokens = _setup(name)
  names = hooks.hook_names(cfg)
  _, c = transformer.run_with_cache(cfg, params, tokens, names)
  first = c["hook_embed"] + c.get("hook_pos_embed", 0)
  np.testing.assert_allclose(c["blocks.0.hook_resid_pre"], first, atol=1e-6)
  for L in range(cfg.n_layers):
    total = c[f"blocks.{L}.hook_resid_pre"] + c[f"blocks.{L}.hook_attn_out"]
    if cfg.has_mlp:
      total = total + c[f"blocks.{L}.hook_mlp_out"]
    np.testing.assert_allclose(c[f"blocks.{L}.hook_resid_post"], total, atol=1e-5)
    pattern = c[f"blocks.{L}.attn.hook_pattern"]
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.triu(pattern, 1).max()) == 0.0  # causal
    if not cfg.post_norms:  # per-head results sum to the attention output
      attn = c[f"blocks.{L}.attn.hook_result"].sum(2)
      if cfg.attn_bias:
        attn = attn + params[f"blocks_{L}"]["attn"]["b_O"]
      np.testing.assert_allclose(attn, c[f"blocks.{L}.hook_attn_out"], atol=1e-5)


def test_sliding_window_masks_distant_keys():
  cfg, params, tokens = _setup("gemma3")
  _, c = transformer.run_with_cache(cfg, params, tokens, ["blocks.0.attn.hook_pattern",
                                                         "blocks.2.attn.hook_pattern"])
  local, glob = c["blocks.0.attn.hook_pattern"], c["blocks.2.attn.hook_pattern"]
  q, k = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
  assert float(jnp.abs(local[..., q - k >= 3]).max()) == 0.0  # window 3: layer 0 is local
  assert float(glob[..., q - k >= 3].min()) > 0.0              # layer 2 is global


def test_unknown_hook_name_lists_valid_names():
  cfg, params, tokens = _setup("gpt2")
  with pytest.raises(ValueError, match=r"blocks\.0\.hook_resid_pst.*did you mean.*hook_resid_post"
                     r".*Valid names.*blocks\.\{L\}\.hook_resid_pre"):
    transformer.run_with_cache(cfg, params, tokens, ["blocks.0.hook_resid_pst"])
  with pytest.raises(ValueError, match="blocks.7.hook_mlp_out"):  # layer out of range
    transformer.forward(cfg, params, tokens, hooks.Hooks(edits={"blocks.7.hook_mlp_out": abs}))


def test_edit_with_wrong_shape_is_an_error():
  cfg, params, tokens = _setup("gpt2")
  bad = hooks.Hooks(edits={"blocks.0.hook_resid_mid": lambda x: x[:, :1]})
  with pytest.raises(ValueError, match="blocks.0.hook_resid_mid.*shape"):
    transformer.forward(cfg, params, tokens, bad)


def test_patching_a_clean_activation_into_a_corrupted_run():
  cfg, params, clean = _setup("gpt2")
  corrupt = jnp.roll(clean, 1, axis=1)
  site = "blocks.1.hook_resid_pre"
  clean_logits, cache = transformer.run_with_cache(cfg, params, clean, [site])
  corrupt_logits, _ = transformer.forward(cfg, params, corrupt)
  # Patching the whole residual stream at layer 1 restores the clean logits exactly: the rest of
  # the network only sees the residual stream from there on (positions are already added).
  patched, _ = transformer.forward(cfg, params, corrupt,
                                   hooks.Hooks(edits={site: hooks.patch(cache[site])}))
  np.testing.assert_allclose(patched, clean_logits, atol=1e-5)
  assert float(jnp.abs(corrupt_logits - clean_logits).max()) > 1e-2


def test_vmapped_head_ablation_equals_one_at_a_time():
  cfg, params, tokens = _setup("attn_only")
  site = "blocks.1.attn.hook_z"

  def ablated(head):
    return transformer.forward(cfg, params, tokens,
                               hooks.Hooks(edits={site: hooks.ablate_head(head)}))[0]

  all_heads = jax.jit(jax.vmap(ablated))(jnp.arange(cfg.n_heads))
  for h in range(cfg.n_heads):
    np.testing.assert_allclose(all_heads[h], ablated(h), atol=1e-6)
  # Zeroing head h's z removes exactly its per-head result from the attention output.
  _, c = transformer.run_with_cache(cfg, params, tokens, ["blocks.1.attn.hook_result"])
  _, c0 = transformer.run_with_cache(cfg, params, tokens, ["blocks.1.hook_attn_out"],
                                     edits={site: hooks.ablate_head(2)})
  full = c["blocks.1.attn.hook_result"].sum(2)
  np.testing.assert_allclose(c0["blocks.1.hook_attn_out"],
                             full - c["blocks.1.attn.hook_result"][:, :, 2], atol=1e-5)


def test_vmapped_position_patching_equals_loop():
  cfg, params, clean = _setup("gemma3")
  corrupt = jnp.flip(clean, axis=1)
  site = "blocks.1.hook_resid_pre"
  _, cache = transformer.run_with_cache(cfg, params, clean, [site])

  def patched(pos):
    mask = jnp.arange(clean.shape[1]) == pos
    edit = hooks.patch_positions(cache[site], mask)
    return transformer.forward(cfg, params, corrupt, hooks.Hooks(edits={site: edit}))[0][:, -1]

  batched = jax.jit(jax.vmap(patched))(jnp.arange(clean.shape[1]))
  for pos in (0, 4, 9):
    np.testing.assert_allclose(batched[pos], patched(pos), atol=1e-5)


def test_steering_vector_adds_to_residual():
  cfg, params, tokens = _setup("gpt2")
  vec = jax.random.normal(jax.random.key(3), (cfg.d_model,))
  site = "blocks.0.hook_resid_post"
  _, c = transformer.run_with_cache(cfg, params, tokens, [site])
  _, c2 = transformer.run_with_cache(cfg, params, tokens, [site], edits={site: hooks.add(vec)})
  np.testing.assert_allclose(c2[site], c[site] + vec, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "gemma3"])
def test_gradients_with_respect_to_hooks(name):
  """hook_grads equals jax.grad through an explicit additive edit, and finite differences."""
  cfg, params, tokens = _setup(name)
  site = "blocks.1.hook_resid_pre"
  metric = lambda logits: logits[:, -1, 3].sum() - logits[:, -1, 5].sum()
  value, cache, grads = transformer.hook_grads(cfg, params, tokens, [site], metric)
  g = grads[site]
  assert g.shape == cache[site].shape
  assert float(jnp.abs(g[:, -1]).max()) > 0 and float(jnp.abs(g).max()) < 1e6
  direction = jax.random.normal(jax.random.key(7), g.shape)
  eps = 1e-3
  f = lambda t: metric(transformer.forward(
      cfg, params, tokens, hooks.Hooks(edits={site: lambda x: x + t * direction}))[0])
  fd = (f(eps) - f(-eps)) / (2 * eps)
  np.testing.assert_allclose(float((g * direction).sum()), float(fd), rtol=2e-2, atol=1e-3)
  np.testing.assert_allclose(value, metric(transformer.forward(cfg, params, tokens)[0]), atol=1e-5)
