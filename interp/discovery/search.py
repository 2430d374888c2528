"""Circuits as edge sets: choosing them from scores, pruning them, and measuring them.

Vocabulary (`interp.discovery.graph`, `interp.discovery.scores`):
  circuit        bool [n_up n_recv] over valid edges; every edge outside it is patched from the
                 source (corrupted or mean) run, every edge inside reads this run's outputs.
  normalised     (F(circuit) - F(0)) / (F(1) - F(0)): 1 = the clean metric recovered, 0 = the
                 corrupted one (F(1): no edge patched, F(0): every edge patched).
  curve          normalised metric against the number of edges kept, the top-n by |score|
                 for each n, evaluated as one compiled `lax.map` over the masks.

Searches:
  top_n          the n edges of largest |score| (rank=abs) or largest score (rank=signed).
  greedy         growth from the logits (Hanna et al., 2024): start from the edges into
                 `logits`; repeatedly add the highest-|score| edge whose receiver's node is
                 already in the circuit (reads into something that reaches the logits).
  acdc           pruning (Conmy et al., 2023): visit receivers from the logits backwards and
                 each one's edges from the latest upstream node; remove an edge when removing it
                 changes the metric by less than `threshold` (|F(circuit) - F(circuit - edge)|);
                 one compiled evaluation per edge, sequential, so meant for small graphs.
Ties in |score| break by edge order (row-major (u, r)), so every search is deterministic.
"""

from __future__ import annotations

import enum
import functools

import jax
import jax.numpy as jnp
import numpy as np

from interp.choices import choice
from interp.discovery import forward
from interp.discovery import scores as scores_lib
from interp.discovery.graph import EdgeGraph


class Rank(str, enum.Enum):
  ABS = "abs"        # largest |score| first: edges that matter either way
  SIGNED = "signed"  # largest score first: edges that support the clean behaviour


def ranking(graph: EdgeGraph, scores, rank: Rank = Rank.ABS) -> np.ndarray:
  """int [n_edges, 2]: the valid edges (u, r) by decreasing |score| (or score), ties by edge
  order."""
  edges = graph.edge_index()
  s = np.asarray(scores, np.float64)[edges[:, 0], edges[:, 1]]
  s = np.abs(s) if choice(Rank, rank, "rank") == Rank.ABS else s
  return edges[np.argsort(-s, kind="stable")]


def top_n(graph: EdgeGraph, scores, n: int, rank: Rank = Rank.ABS) -> np.ndarray:
  """bool [n_up n_recv]: the n edges of largest |score| (or score, `rank`)."""
  mask = np.zeros(graph.valid.shape, bool)
  order = ranking(graph, scores, rank)[:n]
  mask[order[:, 0], order[:, 1]] = True
  return mask


def greedy(graph: EdgeGraph, scores, n: int, rank: Rank = Rank.ABS) -> np.ndarray:
  """bool [n_up n_recv]: n edges grown from the logits by |score| or score (ties by edge
  order)."""
  order = ranking(graph, scores, rank)
  reached = np.zeros(graph.n_recv, bool)  # receivers whose node feeds the circuit
  reached[graph.n_recv - 1] = True
  node_recv = {}
  for r, nodes in enumerate(graph.recv_nodes):
    for u in nodes:
      node_recv.setdefault(u, []).append(r)
  mask = np.zeros(graph.valid.shape, bool)
  for _ in range(min(n, graph.n_edges)):
    ok = reached[order[:, 1]] & ~mask[order[:, 0], order[:, 1]]
    if not ok.any():
      break
    u, r = order[np.argmax(ok)]
    mask[u, r] = True
    reached[node_recv.get(u, [])] = True
  return mask


def make_evaluator(graph: EdgeGraph, params, tokens, source, metric, logits_at=None,
                   chunk: int | None = None, precision=None):
  """A compiled function masks [n n_up n_recv] -> metric [n], one edge-patched run per mask.

  The parameters and activations are arguments of the compiled function, not constants in it
  (closing over them makes XLA constant-fold a model's worth of arrays at every compile).
  `chunk` masks run together (vmapped); `precision` is the edge forward's policy (default
  float32).
  """
  def one(args, mask):
    p, t, src, at = args
    logits = forward.run(graph, p, t, src, mask, logits_at=at, precision=precision,
                         columns=scores_lib.columns_of(metric))[0]
    return scores_lib.apply_metric(metric, logits)

  @forward.jit
  def evaluate_all(args, masks):
    p, t, src, at = args
    args = (forward.prepare(graph.cfg, p, precision), t, src, at)  # once, not per mask
    return jax.lax.map(functools.partial(one, args), masks.astype(jnp.float32), batch_size=chunk)

  args = (params, tokens, source, logits_at)
  return lambda masks: evaluate_all(args, jnp.asarray(masks))


def curve_counts(n_edges: int, points: int = 24) -> np.ndarray:
  """Edge counts for a faithfulness curve: 0, n_edges and a geometric grid between them."""
  grid = np.geomspace(1, n_edges, max(points - 1, 2))
  return np.unique(np.concatenate([[0], np.round(grid).astype(int), [n_edges]]))


def faithfulness_curve(graph: EdgeGraph, evaluate, scores, counts,
                       rank: Rank = Rank.ABS) -> dict:
  """The metric with the top-n edges kept, for each n in `counts`, in one compiled call.

  Args:
    graph: the edge graph.
    evaluate: `make_evaluator`'s function.
    scores: [n_up n_recv] edge scores.
    counts: edge counts n.
    rank: how the edges are ordered (`Rank`).

  Returns:
    {"counts", "metric", "normalised", "clean", "corrupt"} (lists and floats).
  """
  counts = [int(c) for c in counts]
  masks = np.stack([top_n(graph, scores, c, rank) for c in counts]
                   + [graph.valid, np.zeros_like(graph.valid)])
  values = np.asarray(evaluate(jnp.asarray(masks)), np.float64)
  clean, corrupt = values[-2], values[-1]
  return {"counts": counts, "metric": values[:-2].tolist(),
          "normalised": ((values[:-2] - corrupt) / (clean - corrupt)).tolist(),
          "clean": float(clean), "corrupt": float(corrupt)}


def acdc(graph: EdgeGraph, evaluate, threshold: float, start=None) -> tuple[np.ndarray, int]:
  """ACDC pruning: returns (circuit mask, number of metric evaluations).

  Args:
    graph: the edge graph.
    evaluate: `make_evaluator`'s function (KL to the clean run is ACDC's own metric).
    threshold: remove an edge when removing it changes the metric by less than this.
    start: bool [n_up n_recv] edges to prune from (default: every valid edge).
  """
  mask = np.array(graph.valid if start is None else start, bool)
  one = lambda m: float(evaluate(jnp.asarray(m[None]))[0])
  current, evals = one(mask), 1
  for r in range(graph.n_recv - 1, -1, -1):
    nodes = graph.recv_nodes[r]
    if nodes and not any(mask[u].any() for u in nodes):
      mask[:, r] = False  # its node's output is patched everywhere: its inputs cannot matter
      continue
    for u in np.nonzero(mask[:, r])[0][::-1]:
      mask[u, r] = False
      value = one(mask)
      evals += 1
      if abs(value - current) < threshold:
        current = value
      else:
        mask[u, r] = True
  return mask, evals


def node_scores(graph: EdgeGraph, scores) -> dict[str, float]:
  """A node-level view: each upstream node's summed |score| over its outgoing edges."""
  s = np.abs(np.asarray(scores)) * graph.valid
  return {name: float(s[u].sum()) for u, name in enumerate(graph.up_names)}


def circuit_nodes(graph: EdgeGraph, mask) -> list[str]:
  """The upstream nodes with at least one outgoing edge in the circuit."""
  return [graph.up_names[u] for u in np.nonzero(np.asarray(mask).any(1))[0]]
