"""Influence, pruning and the replacement / completeness scores of an attribution graph (numpy).

Vocabulary (circuit-tracer's definitions, Ameisen et al., 2025):
  A          adjacency [N, N], A[target, source] = signed edge weight. Node order: features,
             errors, embeddings, logits (a `Layout`), so sources precede logits.
  normalised |A| with each row divided by its sum: the share of a target's incoming weight
             each source holds.
  logit weights  w [N]: each logit node's probability, zero elsewhere.
  influence  of a node on the logits: w (An + An^2 + ...) = w ((I - An)^-1 - I), summed over
             every path (the graph is a DAG, so the series ends after its depth).
  node rank  the cumulative share of total influence held by the nodes ranked above a node
             (descending influence): pruning at threshold t keeps the nodes of rank < t, the
             smallest set holding t of the influence. Embeddings and logits are always kept.
  edge rank  the same over edge scores An[t, s] * (influence of t + w_t), in the graph already
             pruned of nodes.
  replacement   share of the influence reaching embeddings (not error nodes): the fraction of
             end-to-end influence that does not pass through errors.
  completeness  influence-weighted mean over nodes of the share of incoming weight that comes
             from non-error nodes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Layout(NamedTuple):
  """Node counts in adjacency order: features, errors, embeddings, logits."""
  n_features: int
  n_errors: int
  n_embeddings: int
  n_logits: int

  @property
  def n(self) -> int:
    return sum(self)

  def slices(self):
    o = np.cumsum((0,) + tuple(self))
    return [slice(int(o[i]), int(o[i + 1])) for i in range(4)]


def normalize(a: np.ndarray) -> np.ndarray:
  """|A| with rows summing to 1 (rows without inputs stay zero)."""
  a = np.abs(a)
  return a / np.maximum(a.sum(1, keepdims=True), 1e-10)


def influence(an: np.ndarray, w: np.ndarray, max_iter: int = 10_000) -> np.ndarray:
  """w (An + An^2 + ...) [N]: the weight of every path from each node to the weighted nodes."""
  cur = w @ an
  total = cur.copy()
  for _ in range(max_iter):
    if not np.any(cur):
      return total
    cur = cur @ an
    total += cur
  raise ValueError("influence did not converge: the adjacency is not acyclic")


def logit_weights(layout: Layout, probs) -> np.ndarray:
  w = np.zeros(layout.n, np.float64)
  w[layout.slices()[3]] = probs
  return w


def ranks(scores: np.ndarray) -> np.ndarray:
  """Each element's cumulative share of the total held by those ranked strictly above it."""
  flat = scores.ravel()
  order = np.argsort(-flat, kind="stable")
  total = flat.sum()
  cum = np.cumsum(flat[order]) / (total if total > 0 else 1.0)
  out = np.empty_like(flat, dtype=np.float64)
  out[order] = np.concatenate([[0.0], cum[:-1]])
  return np.clip(out, 0.0, 1.0).reshape(scores.shape)


def scores(a: np.ndarray, layout: Layout, probs) -> dict:
  """circuit-tracer's replacement and completeness scores of the unpruned graph."""
  f, e, t, _ = layout.slices()
  an = normalize(a)
  w = logit_weights(layout, probs)
  infl = influence(an, w)
  tok, err = infl[t].sum(), infl[e].sum()
  replacement = tok / (tok + err) if tok + err > 0 else 1.0
  non_error = 1.0 - an[:, e].sum(1)
  out_infl = infl + w
  completeness = (non_error * out_infl).sum() / out_infl.sum()
  return {"replacement": float(replacement), "completeness": float(completeness)}


class Pruned(NamedTuple):
  node_mask: np.ndarray     # [N] bool
  edge_mask: np.ndarray     # [N, N] bool
  node_influence: np.ndarray
  node_rank: np.ndarray     # [N]
  edge_rank: np.ndarray     # [N, N]


def prune(a: np.ndarray, layout: Layout, probs, node_threshold: float = 0.8,
          edge_threshold: float = 0.98) -> Pruned:
  """Keeps the nodes and edges holding the given shares of influence, then drops dangling ones.

  Args:
    a: adjacency [N, N] in `layout` order; probs: the logit nodes' probabilities.
    node_threshold, edge_threshold: cumulative-influence shares to keep.
  Returns:
    `Pruned` masks with the ranks at which each node / edge is kept.
  """
  f, e, t, lg = layout.slices()
  w = logit_weights(layout, probs)
  node_infl = influence(normalize(a), w)
  node_rank = ranks(node_infl)
  always = np.zeros(layout.n, bool)
  always[t.start:] = True  # embeddings and logits
  node_rank[always] = 0.0
  node_mask = always | (node_rank < node_threshold)
  a_p = a * node_mask[:, None] * node_mask[None, :]
  an_p = normalize(a_p)
  edge_scores = an_p * (influence(an_p, w) + w)[:, None]
  edge_rank = ranks(edge_scores)
  edge_mask = (edge_rank < edge_threshold) & (edge_scores > 0)
  inner = slice(0, t.start)  # features and errors must feed something; features need inputs
  while True:
    before = node_mask.copy()
    edge_mask &= node_mask[:, None] & node_mask[None, :]
    node_mask[inner] &= edge_mask[:, inner].any(0)
    node_mask[f] &= edge_mask[f].any(1)
    if np.array_equal(before, node_mask):
      break
  return Pruned(node_mask, edge_mask, node_infl, node_rank, np.where(edge_scores > 0, edge_rank,
                                                                     1.0))
