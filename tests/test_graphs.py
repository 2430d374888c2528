"""Attribution graphs on tiny models: a Gemma-like one (RMSNorm (1 + w), post-norms, qk_norm, GQA
with one KV head, RoPE, tied scaled embeddings, soft-capping) and a GPT-2-like one (LayerNorm,
learned positions, biases everywhere, ReLU MLP, untied unembedding with a bias), whose MLPs a
"transcoder" copied from their own weights reproduces exactly (zero error everywhere)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.graphs import attribute, export, linear, validate
from interp.graphs import prune as graph_prune
from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.parallel import mesh as mesh_lib
from interp.sae import transcoder as tc
from interp.viz import graph_html

P = 8  # prompt length


def _gemma_like():
  return TransformerConfig(
      vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, d_head=8, n_ctx=64,
      d_mlp=64, mlp="gated", act="gelu_tanh", norm="rmsnorm", norm_eps=1e-6, norm_offset=1.0,
      post_norms=True, qk_norm=True, positional="rope", attn_bias=False, mlp_bias=False,
      embed_scale=True, tied_embeddings=True, final_logit_softcap=30.0, init_std=0.2)


def _gpt2_like():
  return TransformerConfig(
      vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_head=8, n_ctx=64, d_mlp=64,
      mlp="standard", act="relu", norm="layernorm", positional="learned", attn_bias=True,
      mlp_bias=True, tied_embeddings=False, unembed_bias=True, init_std=0.2)


def _params(cfg, seed=0):
  """Random weights with nonzero biases and norm gains, so every bias path is exercised."""
  params = transformer.init_params(cfg, jax.random.key(seed))
  leaves, tree = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  bumped = [x + 0.1 * jax.random.normal(k, x.shape) if path[-1].key in ("b", "w") or
            path[-1].key.startswith("b_") else x for (path, x), k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(tree, bumped)


def _random_tc(cfg, kind, seed=0):
  c = tc.TranscoderConfig(kind=kind, n_layers=cfg.n_layers, d_model=cfg.d_model, d_latent=48,
                          activation="topk", k=4)
  p = tc.init(c, jax.random.key(seed))
  p["b_dec"] = 0.1 * jax.random.normal(jax.random.key(seed + 5), p["b_dec"].shape)
  p["b_enc"] = 0.1 * jax.random.normal(jax.random.key(seed + 6), p["b_enc"].shape)
  if kind == "skip":
    p["W_skip"] = 0.05 * jax.random.normal(jax.random.key(seed + 7), p["W_skip"].shape)
  return c, p


def _exact_tc(cfg, params):
  """The ReLU MLPs themselves as a JumpReLU transcoder with a negligible threshold."""
  L, mlps = cfg.n_layers, [params[f"blocks_{l}"]["mlp"] for l in range(cfg.n_layers)]
  c = tc.TranscoderConfig(kind="plt", n_layers=L, d_model=cfg.d_model, d_latent=cfg.d_mlp,
                          activation="jumprelu")
  stack = lambda name: jnp.stack([m[name] for m in mlps])
  return c, {"W_enc": stack("W_in"), "b_enc": stack("b_in"), "W_dec": stack("W_out"),
             "b_dec": stack("b_out"), "jump_threshold": jnp.full((L, cfg.d_mlp), 1e-13),
             "in_scale": jnp.ones(L), "out_scale": jnp.ones(L)}


TOKENS = np.random.default_rng(0).integers(0, 64, P)


@pytest.fixture(scope="module")
def gemma():
  cfg = _gemma_like()
  return cfg, _params(cfg)


@pytest.fixture(scope="module")
def gpt2():
  cfg = _gpt2_like()
  params = _params(cfg, 3)
  c, p = _exact_tc(cfg, params)
  return cfg, params, c, p, attribute.build(cfg, params, c, p, TOKENS)


@pytest.mark.parametrize("which", ["gemma", "gpt2"])
def test_replacement_logits_equal_real(which, gemma, gpt2):
  cfg, params = gemma if which == "gemma" else gpt2[:2]
  c, p = _random_tc(cfg, "skip")
  rep = linear.capture(cfg, params, c, p, TOKENS)
  _, final = linear.linear_forward(cfg, params, c, p, rep.frozen, rep.embed, rep.mlp)
  logits = linear.readout_logits(cfg, params, final[-1])
  real, _ = transformer.forward(cfg, params, jnp.asarray(TOKENS)[None])
  np.testing.assert_allclose(logits, real[0, -1], atol=1e-4)
  np.testing.assert_allclose(rep.logits, real[0, -1], atol=1e-4)
  assert float(jnp.abs(rep.error).max()) > 0.1  # a random transcoder: the errors carry it


@pytest.mark.parametrize("kind", ["plt", "skip", "clt"])
def test_incoming_edges_plus_bias_equal_value(kind, gemma):
  cfg, params = gemma
  c, p = _random_tc(cfg, kind)
  g = attribute.build(cfg, params, c, p, TOKENS)
  assert g.layout.n_features == cfg.n_layers * P * 4 and g.layout.n_logits >= 1
  sums = g.adjacency[attribute.target_rows(g)].sum(1) + g.bias
  np.testing.assert_allclose(sums, g.values, atol=2e-5)
  # feature targets' values are the transcoder's own pre-activations
  info = attribute.feature_info(g)
  pre = np.asarray(g.rep.pre)[info["layer"], info["pos"], info["feature"]]
  np.testing.assert_allclose(g.values[:g.layout.n_features], pre, atol=1e-5)


def test_held_bos_moves_its_outputs_into_the_bias_and_keeps_every_other_edge(gemma):
  """circuit-tracer's zero_positions: position 0's features and error leave the graph, its MLP
  outputs join the bias, and every remaining edge is the one the unheld graph has."""
  cfg, params = gemma
  c, p = _random_tc(cfg, "skip")
  g0 = attribute.build(cfg, params, c, p, TOKENS)
  g1 = attribute.build(cfg, params, c, p, TOKENS, attribute.GraphConfig(held_positions=1))
  np.testing.assert_allclose(g1.adjacency[attribute.target_rows(g1)].sum(1) + g1.bias,
                             g1.values, atol=2e-5)
  info0, info1 = attribute.feature_info(g0), attribute.feature_info(g1)
  assert info1["pos"].min() == 1 and g1.layout.n_features == (info0["pos"] > 0).sum()
  L, f1, f0 = cfg.n_layers, g1.layout.n_features, g0.layout.n_features
  err = lambda g, f: g.adjacency[:, f:f + L * P].reshape(-1, L, P)
  assert not err(g1, f1)[:, :, 0].any()
  # the logit rows: same edges from every error, embedding and kept feature
  logit_rows = lambda g: slice(g.layout.n - g.layout.n_logits, None)
  rows0, rows1 = logit_rows(g0), logit_rows(g1)
  np.testing.assert_allclose(err(g1, f1)[rows1][:, :, 1:], err(g0, f0)[rows0][:, :, 1:], atol=1e-5)
  np.testing.assert_allclose(g1.adjacency[rows1, f1 + L * P:f1 + L * P + P],
                             g0.adjacency[rows0, f0 + L * P:f0 + L * P + P], atol=1e-5)
  key = lambda i: tuple(int(i[k]) for k in ("layer", "pos", "feature"))
  at0 = {key({k: v[j] for k, v in info0.items()}): j for j in range(f0)}
  cols0 = [at0[key({k: v[j] for k, v in info1.items()})] for j in range(f1)]
  np.testing.assert_allclose(g1.adjacency[rows1, :f1], g0.adjacency[rows0][:, cols0], atol=1e-5)
  r = validate.attention_score_attribution(cfg, params, c, p, g1, 1, 2, P - 1, 3)
  assert r["query"].sum() + r["query_bias"] == pytest.approx(r["score"], abs=1e-4)
  assert r["key"].sum() + r["key_bias"] == pytest.approx(r["score"], abs=1e-4)
  with pytest.raises(ValueError, match="--held_positions=.* holds every position"):
    attribute.build(cfg, params, c, p, TOKENS[:1], attribute.GraphConfig(held_positions=1))


def test_edges_plus_bias_gpt2_and_exact_scores(gpt2):
  cfg, params, c, p, g = gpt2
  assert float(jnp.abs(g.rep.error).max()) < 1e-5
  sums = g.adjacency[attribute.target_rows(g)].sum(1) + g.bias
  np.testing.assert_allclose(sums, g.values, atol=2e-5)
  s = graph_prune.scores(g.adjacency, g.layout, g.probs)
  assert s["replacement"] == pytest.approx(1.0, abs=1e-6)
  assert s["completeness"] == pytest.approx(1.0, abs=1e-6)
  previous = s
  for noise in (0.02, 0.1):  # degrade the decoder: errors appear and both scores fall
    noisy = dict(p, W_dec=p["W_dec"] + noise * jax.random.normal(jax.random.key(1),
                                                                  p["W_dec"].shape))
    gn = attribute.build(cfg, params, c, noisy, TOKENS)
    sn = graph_prune.scores(gn.adjacency, gn.layout, gn.probs)
    assert sn["replacement"] < previous["replacement"] - 1e-3
    assert sn["completeness"] < previous["completeness"] - 1e-4
    previous = sn


def test_prune_hand_built_graph():
  # nodes: f0 f1 f2 | e0 | t0 t1 | L.  L <- f2; f2 <- f0 .9, f1 .1; f0 <- t0; f1 <- t1 .5, e0 .5
  lay = graph_prune.Layout(3, 1, 2, 1)
  a = np.zeros((7, 7))
  a[6, 2], a[2, 0], a[2, 1], a[0, 4], a[1, 5], a[1, 3] = 1.0, 0.9, -0.1, 1.0, 0.5, 0.5
  infl = graph_prune.influence(graph_prune.normalize(a), graph_prune.logit_weights(lay, [1.0]))
  np.testing.assert_allclose(infl, [0.9, 0.1, 1.0, 0.05, 0.9, 0.05, 0.0])
  s = graph_prune.scores(a, lay, [1.0])
  assert s["replacement"] == pytest.approx(0.95)
  assert s["completeness"] == pytest.approx(3.95 / 4.0)
  # total influence 3.0: f2 1, f0 .9, t0 .9, f1 .1, e0 .05, t1 .05 (rank: share above)
  r = graph_prune.prune(a, lay, [1.0], node_threshold=0.8, edge_threshold=0.98)
  np.testing.assert_allclose(r.node_rank, [1 / 3, 2.8 / 3, 0.0, 2.9 / 3, 0, 0, 0])
  assert r.node_mask.tolist() == [True, False, True, False, True, True, True]
  assert sorted(zip(*np.nonzero(r.edge_mask))) == [(0, 4), (2, 0), (6, 2)]
  # at 0.95 f1 survives the node cut, but its edge into f2 (rank .967) falls to the edge cut,
  # which leaves f1 dangling: it and its input edge go too
  r = graph_prune.prune(a, lay, [1.0], node_threshold=0.95, edge_threshold=0.95)
  assert r.node_mask.tolist() == [True, False, True, False, True, True, True]
  assert r.edge_rank[2, 1] == pytest.approx(2.9 / 3)
  assert sorted(zip(*np.nonzero(r.edge_mask))) == [(0, 4), (2, 0), (6, 2)]
  r = graph_prune.prune(a, lay, [1.0], node_threshold=0.95, edge_threshold=0.99)
  assert r.node_mask[1] and r.edge_mask[2, 1] and r.edge_mask[1, 5]


def test_same_edges_on_one_and_eight_devices(gpt2):
  cfg, params, c, p, g = gpt2
  one = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  eight = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:8,model:1"))
  g1 = attribute.build(cfg, params, c, p, TOKENS, attribute.GraphConfig(chunk=8), mesh=one)
  g8 = attribute.build(cfg, params, c, p, TOKENS, attribute.GraphConfig(chunk=8), mesh=eight)
  np.testing.assert_allclose(g1.adjacency, g8.adjacency, atol=1e-6)
  np.testing.assert_allclose(g1.adjacency, g.adjacency, atol=1e-6)


def test_greedy_selection_keeps_influential_features(gpt2):
  cfg, params, c, p, g = gpt2
  small = attribute.build(cfg, params, c, p, TOKENS,
                          attribute.GraphConfig(max_feature_nodes=64, select_batch=32))
  assert small.layout.n_features == 64
  top = validate.top_features(g, 16)
  assert len(set(g.selected[top]) & set(small.selected)) >= 12


def test_steering_agrees_with_graph(gpt2):
  cfg, params, c, p, g = gpt2
  feats = validate.top_features(g, 5)
  pred = validate.predicted_effects(g, feats, 0.9)
  obs = validate.observed_effects(cfg, params, c, p, g, feats, 0.9)
  agree = validate.agreement(pred, obs)
  assert agree["correlation"] > 0.9, agree
  # frozen norms miss how steering rescales the residual: the size is right to within ~2x
  assert agree["mean_abs_error"] < np.mean(np.abs(obs)), agree


def test_attention_score_attribution(gemma):
  cfg, params = gemma
  c, p = _random_tc(cfg, "plt")
  g = attribute.build(cfg, params, c, p, TOKENS)
  layer, head, q, k = 1, 2, P - 1, 3
  r = validate.attention_score_attribution(cfg, params, c, p, g, layer, head, q, k)
  name = f"blocks.{layer}.attn.hook_attn_scores"
  _, cache = transformer.forward(cfg, params, jnp.asarray(TOKENS)[None], Hooks(capture=(name,)))
  assert r["score"] == pytest.approx(float(cache[name][0, head, q, k]), abs=1e-4)
  # bilinear: each side with the other frozen sums exactly; together: the first-order change
  assert r["query"].sum() + r["query_bias"] == pytest.approx(r["score"], abs=1e-4)
  assert r["key"].sum() + r["key_bias"] == pytest.approx(r["score"], abs=1e-4)
  assert r["query"].sum() + r["key"].sum() == pytest.approx(r["first_order"], abs=1e-4)
  assert np.abs(r["key"][:g.layout.n_features]).max() > 0  # features reach the key side


def test_json_validates_and_renders(gpt2, tmp_path):
  cfg, params, c, p, g = gpt2
  pruned = graph_prune.prune(g.adjacency, g.layout, g.probs, 0.95, 0.99)
  info = attribute.feature_info(g)
  keys = sorted({(int(info["layer"][i]), int(info["feature"][i]))
                 for i in np.nonzero(pruned.node_mask[:g.layout.n_features])[0]})
  corpus = np.random.default_rng(1).integers(0, 64, (4, 16))
  ctx = export.feature_contexts(cfg, params, c, p, corpus, keys, lambda t: f"<{t}>")
  assert all(len(v) >= 1 for v in ctx.values())
  out = export.to_json(
      g, pruned, [f"<{t}>" for t in TOKENS], [f"<{t}>" for t in g.logit_tokens],
      prompt="toy", model="gpt2-like", transcoder="exact",
      scores=graph_prune.scores(g.adjacency, g.layout, g.probs),
      thresholds={"node": 0.95, "edge": 0.99}, contexts=ctx)
  graph_html.validate_graph(out)
  kinds = {n["kind"] for n in out["nodes"]}
  assert kinds >= {"embedding", "feature", "logit"} and out["edges"]
  graph_html.save_graph_json(out, str(tmp_path / "graph.json"))
  graph_html.write_graph_html(out, str(tmp_path / "graph.html"))
  assert graph_html.load_graph_json(str(tmp_path / "graph.json"))["n_layers"] == 2
