"""Per-head attention data of attribution-graph nodes (`interp.graphs.heads`) on the tiny
Gemma-like model of `tests/test_graphs.py` (post-norms, qk_norm, GQA, RoPE): the heads' carried
weights against the adjacency and against a pattern edit, their sources against
`validate.attention_score_attribution`, and the JSON they become."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from interp.graphs import attribute, export, heads, validate
from interp.graphs import build as gb
from interp.graphs import prune as graph_prune
from interp.viz import graph_html
from tests.test_graphs import P, TOKENS, _gemma_like, _params, _random_tc

# The plt graph keeps every active feature (as `tests/test_graphs.py` builds it, so the two
# share compiled programs); the clt graph fewer (2 layers x 8 positions x k 4 are active), so the
# sources that are not nodes must be left out of the heads' weights as the adjacency leaves them.
CONFIGS = {"plt": attribute.GraphConfig(head_nodes=3),
           "clt": attribute.GraphConfig(max_feature_nodes=32, select_batch=16, head_nodes=3)}


@functools.lru_cache(maxsize=None)
def small_graph(kind="plt"):
  """(cfg, params, tc_cfg, tc_params, graph, stored pruning) of TOKENS, built once per session
  (the viewer's browser test opens the plt graph)."""
  cfg = _gemma_like()
  params = _params(cfg)
  c, p = _random_tc(cfg, kind)
  g = attribute.build(cfg, params, c, p, TOKENS, CONFIGS[kind])
  return cfg, params, c, p, g, graph_prune.prune(g.adjacency, g.layout, g.probs, 0.95, 0.99)


@functools.lru_cache(maxsize=None)
def small_graph_json():
  """(`heads.node_heads`, the JSON with them) of the plt `small_graph`."""
  cfg, params, c, p, g, stored = small_graph()
  out = heads.node_heads(cfg, params, c, p, g, stored, CONFIGS["plt"].head_nodes)
  js = export.to_json(g, stored, [f"<{t}>" for t in TOKENS], [f"<{t}>" for t in g.logit_tokens],
                      prompt="toy", model="gemma-like", transcoder="random", heads=out,
                      scores=graph_prune.scores(g.adjacency, g.layout, g.probs),
                      thresholds={"node": 0.95, "edge": 0.99})
  return out, js


# plt: one decoder per layer; clt: each feature writes to every later layer.
@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_head_weights_sum_to_the_cross_position_weight(kind):
  cfg, params, c, p, g, _ = small_graph(kind)
  assert (g.layout.n_features < len(g.active["act"])) == (kind == "clt")
  rows = attribute.target_rows(g)
  carried = heads.carried(cfg, params, c, p, g, rows)             # [T L H p]
  assert carried.shape == (len(rows), cfg.n_layers, cfg.n_heads, P)
  cross = heads.cross_weight(g, rows)
  assert np.abs(cross).max() > 0.5  # the identity is not about zeros
  np.testing.assert_allclose(carried.sum((1, 2, 3)), cross, rtol=1e-4,
                             atol=1e-4 * np.abs(cross).max())
  # A head's weight is what its moves into the target's position are worth: zero row q's
  # off-diagonal pattern of that head and the adjacency row's cross weight drops by it.
  i = len(rows) - 1                                              # the top logit (pos P - 1)
  per_head = carried[i].sum(-1)
  layer, head = np.unravel_index(np.argmax(np.abs(per_head)), per_head.shape)
  pattern = np.array(g.rep.frozen.pattern)
  pattern[layer, head, P - 1, :P - 1] = 0.0
  rep = g.rep._replace(frozen=g.rep.frozen._replace(pattern=pattern))
  t = gb.Targets(*(a[-1:] for a in g.targets))
  row = gb.edge_rows(cfg, params, c, p, rep, g.active, t)[0]
  n_act = len(g.active["act"])
  src = np.concatenate([row[g.selected], row[n_act:]])
  pos = np.concatenate([attribute.feature_info(g)["pos"], np.tile(np.arange(P), cfg.n_layers),
                        np.arange(P)])
  assert cross[i] - src[pos != P - 1].sum() == pytest.approx(per_head[layer, head], abs=1e-4)


def test_head_sources_are_the_score_attribution():
  cfg, params, c, p, g, stored = small_graph()
  out, js = small_graph_json()
  assert len(out) == CONFIGS["plt"].head_nodes
  assert set(out) == set(heads.strongest_nodes(g, stored, CONFIGS["plt"].head_nodes))
  tokens = [f"<{t}>" for t in TOKENS]
  graph_html.validate_graph(js)
  ids = export.node_ids(g)
  by_id = {n["id"]: n for n in js["nodes"]}
  kept = set(by_id)
  names = export.source_names(g, kept, tokens)
  carried = heads.carried(cfg, params, c, p, g, sorted(out))
  for i, r in enumerate(sorted(out)):
    listed = by_id[ids[r]]["heads"]
    assert 1 <= len(listed) <= heads.HEADS_PER_NODE
    per_head = carried[i].sum(-1)
    assert [abs(h["weight"]) for h in listed] == sorted(np.abs(per_head).ravel(),
                                                        reverse=True)[:len(listed)]
    for h in listed:
      assert h["k_pos"] == int(np.argmax(np.abs(carried[i, h["layer"], h["head"]])))
      s = validate.attention_score_attribution(cfg, params, c, p, g, h["layer"], h["head"],
                                               h["q_pos"], h["k_pos"])
      for side in ("query", "key"):
        top = np.argsort(-np.abs(s[side]), kind="stable")[:heads.SOURCES_PER_SIDE]
        want = [(names[j], float(s[side][j])) for j in top if s[side][j] != 0.0]
        assert [(x["source"], x["weight"]) for x in h[side]] == want
  # Node sources are named by id; the rest by a label the page shows as is.
  named = [x["source"] for n in js["nodes"] for h in n.get("heads") or []
           for side in ("query", "key") for x in h[side]]
  assert all(x in kept or x.endswith("(not in graph)") for x in named)
  assert any(x in kept for x in named)
  assert heads.node_heads(cfg, params, c, p, g, stored, 0) == {}
