"""Supernode suggestions: feature nodes of an attribution graph that play the same role.

Vocabulary:
  supernode   a named group of nodes the viewer draws as one, its edges the sums of its
              members' edges (circuit-tracer and Neuronpedia group features this way by hand).
  profile     a feature node's signed edge weights to every node of the graph, incoming and
              outgoing halves each scaled to unit length: two features with the same inputs
              and the same outputs (the same role in the circuit) have profiles near 1 apart.
  proposal    {"name", "members": [node ids], "similarity"}: a suggested supernode; the viewer
              lists proposals and the reader accepts (and may rename or edit) them.

Method: average-linkage agglomerative clustering (scipy) on the cosine distance between
profiles, cut at `max_distance`; features more than `max_layer_gap` layers apart never join
(a role lives in a band of layers). The graph JSON holds one activation per feature node, not
a latent's activations over every prompt position, so co-activation is not used; the edge
profile is what the pruned graph carries. Clusters of two or more features become proposals.
`planted_graph` builds a graph with known groups and `pair_scores` scores a clustering against
them (pairwise precision and recall, adjusted Rand index).
"""

from __future__ import annotations

import collections

import numpy as np
from scipy.cluster import hierarchy

METHOD = ("Proposals: features with similar signed incoming and outgoing edge weights (cosine of "
          "their edge profiles), grouped by average-linkage clustering cut at distance 0.5, at "
          "most 2 layers apart. Accept one to pin and group it; rename or ungroup it after.")


def _profiles(graph: dict, feats: list[dict]) -> np.ndarray:
  index = {n["id"]: i for i, n in enumerate(graph["nodes"])}
  row = {n["id"]: i for i, n in enumerate(feats)}
  n = len(index)
  inc, out = np.zeros((len(feats), n)), np.zeros((len(feats), n))
  for e in graph["edges"]:
    if e["target"] in row:
      inc[row[e["target"]], index[e["source"]]] += e["weight"]
    if e["source"] in row:
      out[row[e["source"]], index[e["target"]]] += e["weight"]
  unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
  return np.concatenate([unit(inc), unit(out)], axis=1) / np.sqrt(2.0)


def _name(members: list[dict]) -> str:
  words = collections.Counter(w for m in members for w in set(m["label"].lower().split()))
  common = [w for w, c in words.most_common(3) if c > len(members) / 2]
  return " ".join(common) if common else members[0]["label"] + f" +{len(members) - 1}"


def suggest_supernodes(graph: dict, max_distance: float = 0.5, max_layer_gap: int = 2,
                       min_size: int = 2, max_features: int = 3000) -> list[dict]:
  """Proposed supernodes for the feature nodes of `graph`.

  Args:
    graph: an `interp.attribution_graph/1` dict.
    max_distance: the cosine distance (1 - similarity) at which clusters stop merging.
    max_layer_gap: features further apart in layer never share a proposal.
    min_size: the smallest proposal.
    max_features: only the most influential features take part (the distance matrix is
      quadratic in their number).

  Returns:
    Proposals, most similar first: {"name", "members": [ids], "similarity"} with similarity the
    mean pairwise cosine similarity of the members' profiles.
  """
  feats = [n for n in graph["nodes"] if n["kind"] == "feature"]
  feats = sorted(feats, key=lambda n: -n["influence"])[:max_features]
  if len(feats) < min_size:
    return []
  prof = _profiles(graph, feats)
  sim = np.clip(prof @ prof.T, -1.0, 1.0)
  dist = 1.0 - sim
  layers = np.array([n["layer"] for n in feats])
  dist[np.abs(layers[:, None] - layers[None, :]) > max_layer_gap] = 2.0
  np.fill_diagonal(dist, 0.0)
  condensed = dist[np.triu_indices(len(feats), 1)]
  labels = hierarchy.fcluster(hierarchy.linkage(condensed, "average"), max_distance,
                              criterion="distance")
  out = []
  for c in np.unique(labels):
    idx = np.nonzero(labels == c)[0]
    if len(idx) < min_size:
      continue
    block = sim[np.ix_(idx, idx)]
    mean = (block.sum() - len(idx)) / (len(idx) * (len(idx) - 1))
    members = [feats[i] for i in idx]
    out.append({"name": _name(members), "members": [m["id"] for m in members],
                "similarity": round(float(mean), 4)})
  return sorted(out, key=lambda p: (-p["similarity"], p["members"]))


def pair_scores(groups: list[list[str]], truth: dict[str, int]) -> dict:
  """Scores proposals against planted groups.

  Args:
    groups: proposed member lists (ids in no list are singletons).
    truth: id -> planted group (every feature; ids of planted singletons get unique groups).

  Returns:
    {"precision", "recall"} over same-group pairs and the adjusted Rand index "ari".
  """
  ids = sorted(truth)
  found = {i: -1 - k for k, i in enumerate(ids)}
  for g, members in enumerate(groups):
    for m in members:
      found[m] = g
  a = np.array([truth[i] for i in ids])
  b = np.array([found[i] for i in ids])
  same_a, same_b = a[:, None] == a[None, :], b[:, None] == b[None, :]
  off = ~np.eye(len(ids), dtype=bool)
  tp = (same_a & same_b & off).sum() / 2
  pa, pb = (same_a & off).sum() / 2, (same_b & off).sum() / 2
  total = len(ids) * (len(ids) - 1) / 2
  expected = pa * pb / total
  ari = (tp - expected) / (0.5 * (pa + pb) - expected) if pa + pb > 2 * expected else 1.0
  return {"precision": float(tp / max(pb, 1)), "recall": float(tp / max(pa, 1)),
          "ari": float(ari)}


def planted_graph(n_groups: int = 6, group_size: int = 4, n_loners: int = 12, n_layers: int = 6,
                  noise: float = 0.3, seed: int = 0) -> tuple[dict, dict[str, int]]:
  """A graph whose feature nodes fall into planted groups: each group's members share a set of
  source nodes and a set of target nodes (weights jittered by `noise`), loners wire at random.

  Args:
    n_groups, group_size: the planted groups; n_loners: features in no group.
    n_layers: layers; noise: relative jitter of each edge weight; seed: numpy seed.

  Returns:
    (graph, truth): an `interp.attribution_graph/1` dict and id -> planted group.
  """
  rng = np.random.default_rng(seed)
  tokens = [f"t{i}" for i in range(6)]
  node = lambda id_, kind, layer, pos, label, infl: {
      "id": id_, "kind": kind, "layer": layer, "pos": pos, "label": label, "influence": infl,
      "node_rank": 0.0 if kind in ("embedding", "logit") else float(1 - infl)}
  nodes = [{**node(f"emb_{p}", "embedding", -1, p, t, 0.0), "token": t}
           for p, t in enumerate(tokens)]
  nodes += [{**node(f"logit_{i}", "logit", n_layers, 5, f"out{i}", 1.0), "token": f"out{i}",
             "prob": 0.3} for i in range(3)]
  # Hubs: the shared inputs and outputs of the groups, two of each per group.
  hubs = []
  for h in range(4 * n_groups):  # inputs at layer 0, outputs at the last layer
    layer = 0 if h % 4 < 2 else n_layers - 1
    hubs.append({**node(f"f_{layer}_{h % 6}_{900 + h}", "feature", layer, h % 6, f"hub {h}",
                        0.5), "feature": 900 + h, "activation": 1.0})
  nodes += hubs
  truth, edges = {}, []
  sources, targets = [n["id"] for n in nodes[:6]] + [h["id"] for h in hubs], [
      n["id"] for n in nodes[6:9]] + [h["id"] for h in hubs]
  for i in range(n_groups * group_size + n_loners):
    g = i // group_size if i < n_groups * group_size else n_groups + i
    layer = 1 + (g % 3 if g < n_groups else int(rng.integers(0, n_layers - 2)))
    layer += int(rng.integers(0, 2)) if g < n_groups else 0
    f = {**node(f"f_{layer}_5_{i}", "feature", layer, 5, f"feat {i}", 0.9), "feature": i,
         "activation": 2.0}
    nodes.append(f)
    truth[f["id"]] = g
    if g < n_groups:
      ins, outs = hubs[4 * g:4 * g + 2], hubs[4 * g + 2:4 * g + 4]
      wiring = [(h["id"], f["id"], 1.0 + g) for h in ins] + [
          (f["id"], h["id"], (1.0 + 0.5 * g) * (-1) ** g) for h in outs]
    else:
      wiring = [(sources[int(rng.integers(len(sources)))], f["id"], 1.0),
                (f["id"], targets[int(rng.integers(len(targets)))], 1.0)]
    for s, t, w in wiring:
      edges.append({"source": s, "target": t, "weight": float(w * (1 + noise *
                                                                    rng.standard_normal())),
                    "edge_rank": 0.5})
  # The format string is graph_html.FORMAT (which imports this module); tests validate it.
  graph = {"format": "interp.attribution_graph/1", "prompt": "planted", "tokens": tokens,
           "n_layers": n_layers, "scores": {"replacement": 1.0, "completeness": 1.0},
           "nodes": nodes, "edges": edges}
  return graph, truth
