"""Activation, path and attribution patching against their one-site / closed-form references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.circuits import patching
from interp.models import transformer
from interp.models.config import TransformerConfig, attn_only
from interp.models.hooks import Hooks
from interp.parallel import mesh as mesh_lib

CFG = TransformerConfig(vocab_size=40, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_head=8,
                        n_ctx=16, d_mlp=64, init_std=0.3, positional="rope", norm="rmsnorm",
                        attn_bias=False, mlp_bias=False, tied_embeddings=True, mlp="gated")


@pytest.fixture(scope="module")
def setup():
  params = transformer.init_params(CFG, jax.random.key(0))
  k1, k2 = jax.random.split(jax.random.key(1))
  base = jax.random.randint(k1, (3, 7), 0, CFG.vocab_size)
  source = base.at[:, 2].set(jax.random.randint(k2, (3,), 0, CFG.vocab_size))
  answers = jnp.array([[1, 2], [3, 4], [5, 6]])
  end = jnp.full((3, 1), 6)
  return params, base, source, patching.logit_diff(answers), end


@pytest.mark.parametrize("kind", ["resid", "heads", "mlp_out", "attn_out"])
def test_vmapped_sweep_equals_each_site_alone(setup, kind):
  params, base, source, metric, end = setup
  positions = jnp.array([[0, 2, 6], [0, 2, 6], [1, 2, 6]])  # role-aligned columns
  sweep = patching.activation_patching(CFG, params, base, source, metric, kind,
                                       positions=positions, logits_at=end, chunk=5)
  assert sweep.shape == (3, 4 if kind == "heads" else 3)
  for layer, index in [(0, 1), (1, 2), (2, 0)]:
    alone = patching.patch_one(CFG, params, base, source, metric, kind, layer, index,
                               positions=positions, logits_at=end)
    np.testing.assert_allclose(sweep[layer, index], alone, rtol=1e-5, atol=1e-5)
  # Default positions, no chunk: the suffix sweep, read at two rows, some before a site's
  # position (those rows are the base run's).
  reads = jnp.array([[6, 3], [5, 2], [6, 0]])
  two = patching.activation_patching(CFG, params, base, source, metric, kind, logits_at=reads)
  for layer, index in [(0, 3), (1, 2), (2, 5 if kind != "heads" else 1)]:
    alone = patching.patch_one(CFG, params, base, source, metric, kind, layer, index,
                               logits_at=reads)
    np.testing.assert_allclose(two[layer, index], alone, rtol=1e-5, atol=1e-5)
  clean = metric(transformer.forward(CFG, params, base, logits_at=end)[0])
  # The token at column 1 (position 2) differs: patching it at layer 0 changes the metric.
  if kind == "resid":
    assert abs(float(sweep[0, 1] - clean)) > 1e-3
    np.testing.assert_allclose(sweep[:, 0], clean, atol=1e-5)  # identical tokens: no change


@pytest.mark.parametrize("kind", ["resid", "heads", "attn_out"])
def test_suffix_sweep_with_a_folded_last_block_equals_each_site_alone(kind):
  # Learned positions and no qk-norm: the suffix sweep's last block reads the suffix rows
  # through W_K and W_V folded into its queries (`suffix_sweep._Block.attend_folded`); with
  # biases, grouped K/V heads and a sliding window, read at rows before and after the sites.
  cfg = TransformerConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                          d_head=8, n_ctx=16, d_mlp=64, init_std=0.3, positional="learned",
                          norm="layernorm", attn_bias=True, sliding_window=4, global_every=2,
                          tied_embeddings=False)
  params = transformer.init_params(cfg, jax.random.key(2))
  # Nonzero biases (they start at zero), so the folded b_K and b_V terms are checked too.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.3 * jax.random.normal(jax.random.key(len(str(path))), x.shape)
      if str(path[-1].key).startswith("b_") else x, params)
  k1, k2 = jax.random.split(jax.random.key(3))
  base = jax.random.randint(k1, (3, 7), 0, cfg.vocab_size)
  source = jax.random.randint(k2, (3, 7), 0, cfg.vocab_size)
  metric = patching.logit_diff(jnp.array([[1, 2], [3, 4], [5, 6]]))
  reads = jnp.array([[6, 3], [5, 2], [6, 0]])
  sweep = patching.activation_patching(cfg, params, base, source, metric, kind, logits_at=reads)
  # Position 2 is read by two prompts and has a prefix, so the folded scores must rank prefix
  # keys against suffix keys (the b_K term matters); heads sites start at 0.
  for layer, index in [(0, 2), (1, 2)]:
    alone = patching.patch_one(cfg, params, base, source, metric, kind, layer, index,
                               logits_at=reads)
    np.testing.assert_allclose(sweep[layer, index], alone, rtol=1e-5, atol=1e-5)
  assert float(jnp.ptp(sweep)) > 1e-2  # the patches move the metric


def test_sweep_split_over_mesh_matches_one_device(setup):
  params, base, source, metric, end = setup
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:8,model:1"))
  one = patching.activation_patching(CFG, params, base, source, metric, "resid", logits_at=end)
  split = patching.activation_patching(CFG, params, base, source, metric, "resid", logits_at=end,
                                       chunk=8, mesh=mesh)
  np.testing.assert_allclose(split, one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["resid", "heads"])
def test_attribution_patching_is_the_directional_derivative(setup, kind):
  params, base, source, metric, end = setup
  value, est = patching.attribution_patching(CFG, params, base, source, metric, kind,
                                             logits_at=end)
  names = patching.hook_names(CFG, kind)
  _, src_cache = transformer.run_with_cache(CFG, params, source, names)
  positions = patching.default_positions(base)
  for layer, index in [(0, 2), (1, 1), (2, 3)]:
    name = names[layer]

    def f(t):
      def edit(x):
        mask = patching.site_mask(patching.Kind(kind), layer, index, layer, x.shape, positions)
        return x + t * jnp.where(mask, src_cache[name] - x, 0.0)
      logits, _ = transformer.forward(CFG, params, base, Hooks(edits={name: edit}), end)
      return metric(logits)

    _, exact = jax.jvp(f, (0.0,), (1.0,))
    np.testing.assert_allclose(est[layer, index], exact, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(value, metric(transformer.forward(CFG, params, base, logits_at=end)[0]),
                             rtol=1e-5)


def test_path_patching_to_logits_is_the_direct_effect_on_a_linear_toy():
  cfg = attn_only(n_layers=2, d_model=32, n_heads=4, n_ctx=16, vocab_size=30)
  params = transformer.init_params(cfg, jax.random.key(2))
  params = jax.tree.map(lambda x: x * 20, params)  # sharper patterns: non-trivial composition
  orig = jax.random.randint(jax.random.key(3), (2, 6), 0, 30)
  new = orig.at[:, 1].set((orig[:, 1] + 7) % 30)
  answers = jnp.array([[1, 2], [3, 4]])
  metric = patching.logit_diff(answers)
  end = jnp.full((2, 1), 5)
  out = patching.path_patching(cfg, params, orig, new, metric, logits_at=end)
  base = metric(transformer.forward(cfg, params, orig, logits_at=end)[0])
  names = patching.hook_names(cfg, "heads")
  _, c_orig = transformer.run_with_cache(cfg, params, orig, names)
  _, c_new = transformer.run_with_cache(cfg, params, new, names)
  w_u = params["unembed"]["W_U"]
  for layer in range(2):
    w_o = params[f"blocks_{layer}"]["attn"]["W_O"]
    dz = (c_new[names[layer]] - c_orig[names[layer]])[:, -1]  # [b h e]
    dlogits = jnp.einsum("bhe,hed,dv->bhv", dz, w_o, w_u)
    direct = (jnp.take_along_axis(dlogits, answers[:, None, :1], 2)[..., 0]
              - jnp.take_along_axis(dlogits, answers[:, None, 1:], 2)[..., 0]).mean(0)
    np.testing.assert_allclose(out[layer] - base, direct, rtol=1e-4, atol=1e-4)
  assert float(jnp.abs(out - base).max()) > 1e-2


def test_path_patching_to_queries_matches_the_two_runs_by_hand(setup):
  params, orig, new, metric, end = setup
  receivers = ((2, 1, "q"), (2, 3, "v"))
  out = patching.path_patching(CFG, params, orig, new, metric, receivers=receivers, logits_at=end)
  names = patching.hook_names(CFG, "heads")
  _, c_orig = transformer.run_with_cache(CFG, params, orig, names)
  _, c_new = transformer.run_with_cache(CFG, params, new, names)
  sender = (0, 2)
  freeze = {}
  for i, n in enumerate(names):
    value = c_orig[n]
    if i == sender[0]:
      value = value.at[:, :, sender[1]].set(c_new[n][:, :, sender[1]])
    freeze[n] = lambda x, v=value: v
  _, rec = transformer.forward(CFG, params, orig, Hooks(capture=("blocks.2.attn.hook_q",
                                                                  "blocks.2.attn.hook_v"),
                                                         edits=freeze))
  edits = {"blocks.2.attn.hook_q": lambda x: x.at[:, :, 1].set(rec["blocks.2.attn.hook_q"][:, :, 1]),
           # GQA: query head 3 reads KV head 3 // 2 = 1.
           "blocks.2.attn.hook_v": lambda x: x.at[:, :, 1].set(rec["blocks.2.attn.hook_v"][:, :, 1])}
  by_hand = metric(transformer.forward(CFG, params, orig, Hooks(edits=edits), end)[0])
  np.testing.assert_allclose(out[sender], by_hand, rtol=1e-5, atol=1e-5)
  base = metric(transformer.forward(CFG, params, orig, logits_at=end)[0])
  np.testing.assert_allclose(out[2], base, atol=1e-5)  # senders in the receivers' layer: no path
  assert abs(float(out[sender] - base)) > 1e-4


def test_metrics_and_errors(setup):
  params, base, source, metric, end = setup
  logits = transformer.forward(CFG, params, base, logits_at=end)[0]
  assert float(patching.kl_from(logits)(logits)) == pytest.approx(0.0, abs=1e-6)
  assert float(patching.normalised(3.0, 4.0, 2.0)) == 0.5
  with pytest.raises(ValueError, match="same shape"):
    patching.activation_patching(CFG, params, base, source[:, :5], metric, "resid")
  with pytest.raises(ValueError, match="kind='bogus' is not one of"):
    patching.activation_patching(CFG, params, base, source, metric, "bogus")
  with pytest.raises(ValueError, match="outside the model"):
    patching.path_patching(CFG, params, base, source, metric, receivers=((5, 0, "q"),))


@pytest.mark.parametrize("tied,bias,softcap", [(True, False, 30.0), (False, True, None)])
def test_column_logits_are_the_full_logits_columns(tied, bias, softcap):
  """A logit-difference sweep unembeds only the answers' columns (`interp.circuits.metrics`):
  they must be the full unembedding's columns, bias and softcap included."""
  from interp.circuits import metrics
  from interp.precision import FLOAT32
  cfg = TransformerConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=4, d_head=8, n_ctx=16,
                          d_mlp=64, tied_embeddings=tied, unembed_bias=bias,
                          final_logit_softcap=softcap, init_std=0.3)
  params = transformer.init_params(cfg, jax.random.key(0))
  if bias:
    params["unembed"]["b_U"] = jax.random.normal(jax.random.key(2), (cfg.vocab_size,))
  x = jax.random.normal(jax.random.key(1), (5, 3, 2, cfg.d_model))  # [n b k d], already normed
  full = (x @ params["embed"]["W_E"].T if tied else x @ params["unembed"]["W_U"]
          + (params["unembed"]["b_U"] if bias else 0))
  full = transformer.softcap_logits(cfg, full)
  columns = jnp.array([[1, 2], [39, 0], [7, 7]])
  got = metrics.column_logits(cfg, FLOAT32, params, x, columns)
  want = jnp.take_along_axis(full, jnp.broadcast_to(columns[None, :, None], (5, 3, 2, 2)), -1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  metric = patching.logit_diff(columns)
  np.testing.assert_allclose(jax.vmap(metric)(full), jax.vmap(metric.on_columns)(got),
                             rtol=1e-5, atol=1e-5)
