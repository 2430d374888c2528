"""An attribution graph built in bfloat16 against the float32 one, on the small Gemma-like model
and random transcoder of tests/test_graphs.py: the same most influential nodes, edge weights
within a relative tolerance, and float32 edges whatever the compute dtype."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from interp.graphs import attribute
from interp.graphs import prune as graph_prune
from tests.test_graphs import TOKENS, _gemma_like, _params, _random_tc

TOP_K = 10
# Measured on CPU (jax 0.10.2): all 10 of the 10 most influential nodes shared, all 98 nodes
# (64 active features) and the 10 logit tokens the same; edge weights differ by 6.9e-3 of their
# Frobenius norm (largest single difference 8.9e-3 of the largest weight). bfloat16 rounds each activation to 2**-9 relative and the two-layer
# VJP compounds a few of those roundings; the bounds leave 3-6x headroom.
MIN_OVERLAP, MAX_REL_FROBENIUS, MAX_REL_ENTRY = 0.8, 2e-2, 5e-2


def _keys(g: attribute.Graph) -> list[tuple]:
  """A name for every node that means the same thing in both graphs."""
  info, lay = attribute.feature_info(g), g.layout
  return ([("feature", int(l), int(p), int(f))
           for l, p, f in zip(info["layer"], info["pos"], info["feature"])]
          + [("error", i) for i in range(lay.n_errors)]
          + [("embed", i) for i in range(lay.n_embeddings)]
          + [("logit", int(t)) for t in g.logit_tokens])


@pytest.fixture(scope="module")
def graphs():
  cfg = _gemma_like()
  params = _params(cfg)
  c, p = _random_tc(cfg, "plt")
  config = attribute.GraphConfig()
  return {name: attribute.build(cfg, params, c, p, TOKENS,
                                dataclasses.replace(config, precision=name))
          for name in ("float32", "bfloat16")}


def test_bf16_graph_matches_float32(graphs):
  f32, bf16 = graphs["float32"], graphs["bfloat16"]
  assert f32.adjacency.dtype == bf16.adjacency.dtype == np.float32
  assert bf16.rep.x_in.dtype == np.float32 and bf16.bias.dtype == np.float32
  top = {}
  for name, g in graphs.items():
    influence = graph_prune.prune(g.adjacency, g.layout, g.probs).node_influence
    keys = _keys(g)
    # Logit nodes are where influence is measured from: rank the nodes that feed them.
    ranked = [keys[i] for i in np.argsort(-influence, kind="stable") if keys[i][0] != "logit"]
    top[name] = set(ranked[:TOP_K])
  overlap = len(top["float32"] & top["bfloat16"]) / TOP_K
  k32, k16 = _keys(f32), _keys(bf16)
  shared = sorted(set(k32) & set(k16))
  i32 = np.array([k32.index(k) for k in shared])
  i16 = np.array([k16.index(k) for k in shared])
  a = f32.adjacency[np.ix_(i32, i32)]
  b = bf16.adjacency[np.ix_(i16, i16)]
  rel = float(np.linalg.norm(a - b) / np.linalg.norm(a))
  entry = float(np.abs(a - b).max() / np.abs(a).max())
  print(f"\nbf16 vs float32 graph: top-{TOP_K} node overlap {overlap:.2f}; {len(shared)} of "
        f"{len(k32)} nodes shared; edge weights |dA|/|A| {rel:.2e}, max |dA| / max |A| "
        f"{entry:.2e}")
  assert list(f32.logit_tokens) == list(bf16.logit_tokens)
  assert overlap >= MIN_OVERLAP
  assert rel <= MAX_REL_FROBENIUS and entry <= MAX_REL_ENTRY


def test_bad_precision_is_refused_naming_the_flag():
  with pytest.raises(ValueError, match=r"^--precision='half' is not one of: auto, float32, "):
    attribute.GraphConfig(precision="half")
