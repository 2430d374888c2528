"""Attribution graphs (Ameisen et al., 2025, "Circuit Tracing"): one prompt's computation as a
DAG of transcoder features, with exact linear edge weights, pruned to what moves the logits.

Vocabulary (the pieces live in the modules named):
  replacement model  `graphs.linear`: attention patterns and norm divisors frozen from the real
                     forward, MLPs replaced by the transcoder with frozen feature activations and
                     one error node per (layer, pos), so its logits are the model's.
  nodes              embeddings (one per position), active features (layer, pos, feature),
                     errors (layer, pos) and the top output logits at the last position.
                     Adjacency order: features, errors, embeddings, logits (`graphs.prune.Layout`).
  edges              `graphs.build`: A[target, source] = source's output . d target / d residual,
                     by batched VJPs; targets are feature pre-activations and demeaned logits.
  pruning, scores    `graphs.prune` (circuit-tracer's influence, thresholds and scores).
  validation         `graphs.validate`: steering features in the real model against the graph's
                     prediction, and attribution through attention scores.
  heads              `graphs.heads`: which attention heads carry a node's input from other
                     positions, and the sources of each head's attention score.
  JSON               `graphs.export`: the `interp.attribution_graph/1` file the viewer reads.

  graph = attribute.build(cfg, params, tc_cfg, tc_params, tokens, attribute.GraphConfig())
  pruned = prune.prune(graph.adjacency, graph.layout, graph.probs)

Precision (`--precision`, `interp.precision`): the real forward that captures the prompt, the
transcoder's forward on it, and the replacement model's forward and VJPs run in the compute
dtype; the captured values, every edge weight (each a dot product of a source's output with a
gradient, summed in float32), the adjacency matrix, biases and target values are float32.
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import numpy as np

from interp import choices
from interp.graphs import build as gb
from interp.graphs import linear as gl
from interp.graphs import prune as gp
from interp.models.config import TransformerConfig
from interp.precision import CHOICES, Precision
from interp.sae import transcoder as tc


@dataclasses.dataclass(frozen=True)
class GraphConfig:
  """Attributes:
    max_logits: logit nodes at most; logit_mass: their cumulative probability target.
    max_feature_nodes: feature targets at most (chosen greedily by influence beyond it).
    select_batch: features added per greedy round.
    chunk: targets per vmapped VJP batch (memory: chunk x L x p x d floats).
    node_threshold, edge_threshold: pruning shares stored in the JSON (generous, so the
      viewer's sliders can go down to circuit-tracer's 0.8 / 0.98 defaults and below).
    precision: compute dtype of the forwards and backwards (edge weights stay float32): auto,
      float32 or bfloat16 (`interp.precision`).
    held_positions: leading positions whose MLP outputs are held constant (no feature or
      error nodes there; `graphs.linear.hold`): 1 holds a BOS token as circuit-tracer does, so
      its scores compare with circuit-tracer's; 0 makes every position's outputs sources.
    head_nodes: Nodes given per-head attention data (0 = none). The strongest kept features
      and logits get the heads behind their input from other positions and those heads'
      score sources (`graphs.heads`; one linear pass per node, one per listed head).
  """

  max_logits: int = 10
  logit_mass: float = 0.95
  max_feature_nodes: int = 4096
  select_batch: int = 256
  chunk: int = 16
  node_threshold: float = 0.95
  edge_threshold: float = 0.99
  # float32 unless asked: library callers (benchmarks) name their precision; the binary's
  # `--precision` defaults to auto.
  precision: str = dataclasses.field(default="float32", metadata={"choices": CHOICES})
  head_nodes: int = 30
  held_positions: int = 0

  def __post_init__(self):
    Precision.parse(self.precision)  # a bad value fails here, naming --precision
    for name in ("max_logits", "max_feature_nodes", "select_batch", "chunk"):
      if getattr(self, name) <= 0:
        raise ValueError(f"--{name}={getattr(self, name)} must be positive")
    choices.check_int("head_nodes", self.head_nodes, minimum=0)
    choices.check_int("held_positions", self.held_positions, minimum=0)
    for name in ("logit_mass", "node_threshold", "edge_threshold"):
      if not 0.0 < getattr(self, name) <= 1.0:
        raise ValueError(f"--{name}={getattr(self, name)} must be in (0, 1]")


class Graph(NamedTuple):
  """An unpruned attribution graph.

  Attributes:
    tokens: the prompt [p].
    rep, active: the replacement model and its active features (`graphs.linear`).
    selected: indices into `active` of the feature nodes, in adjacency order.
    layout: node counts; adjacency: A [N, N] (target, source), signed.
    logit_tokens, probs: the logit nodes' token ids and probabilities.
    targets: the feature and logit targets (rows of A that have inputs), bias, values: their
      bias and real value [T] (rows of A sum to value - bias).
    timings: seconds per phase.
  """
  tokens: np.ndarray
  rep: gl.Replacement
  active: dict
  selected: np.ndarray
  layout: gp.Layout
  adjacency: np.ndarray
  logit_tokens: np.ndarray
  probs: np.ndarray
  targets: gb.Targets
  bias: np.ndarray
  values: np.ndarray
  timings: dict


def build(cfg: TransformerConfig, params: dict, tc_cfg: tc.TranscoderConfig, tc_params: dict,
          tokens, config: GraphConfig = GraphConfig(), mesh=None) -> Graph:
  """The attribution graph of one prompt.

  Args:
    cfg, params: the model; tc_cfg, tc_params: the transcoder.
    tokens: int [p], the prompt (the graph explains the next token after it).
    config: sizes and thresholds; mesh: split each chunk of targets over its `data` axis.
  Returns:
    The unpruned `Graph`.
  """
  times, t0 = {}, time.perf_counter()
  tokens = np.asarray(tokens, np.int32)
  p, L = len(tokens), cfg.n_layers
  precision = Precision.parse(config.precision)
  if config.held_positions >= p:
    raise ValueError(f"--held_positions={config.held_positions} holds every position of a "
                     f"{p}-token prompt; hold fewer than {p}")
  rep = gl.hold(gl.capture(cfg, params, tc_cfg, tc_params, tokens, precision),
                config.held_positions)
  active = gl.active_features(rep)
  times["capture_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  logit_tokens, probs = gb.top_logits(rep, config.max_logits, config.logit_mass)
  t_logit = gb.logit_targets(cfg, params, logit_tokens, p - 1)
  rows = lambda t: gb.edge_rows(cfg, params, tc_cfg, tc_params, rep, active, t, config.chunk,
                                mesh, precision)
  logit_rows = rows(t_logit)
  selected, feat_rows = gb.select_features(
      lambda idx: rows(gb.feature_targets(tc_params, active, idx)), active, logit_rows, probs,
      L, config.max_feature_nodes, config.select_batch)
  times["edges_s"] = time.perf_counter() - t0
  layout = gp.Layout(len(selected), L * p, p, len(logit_tokens))
  n_src = layout.n_features + layout.n_errors + layout.n_embeddings
  adjacency = np.zeros((layout.n, layout.n), np.float32)
  for start, block in ((0, feat_rows), (n_src, logit_rows)):
    adjacency[start:start + len(block), :layout.n_features] = block[:, selected]
    adjacency[start:start + len(block), layout.n_features:n_src] = block[:, len(active["act"]):]
  targets = gb.concat(gb.feature_targets(tc_params, active, selected), t_logit)
  bias = gb.target_bias(cfg, params, tc_cfg, tc_params, rep, targets)
  values = gb.target_values(rep, targets)
  times["total_s"] = times["capture_s"] + times["edges_s"]
  return Graph(tokens, rep, active, selected, layout, adjacency, logit_tokens, probs, targets, bias,
               values, times)


def target_rows(graph: Graph) -> np.ndarray:
  """Indices of A's rows that are targets, in `graph.targets` order (features, then logits)."""
  lay = graph.layout
  return np.concatenate([np.arange(lay.n_features), np.arange(lay.n - lay.n_logits, lay.n)])


def feature_info(graph: Graph) -> dict[str, np.ndarray]:
  """layer, pos, feature, act [n_features] of the feature nodes, in adjacency order."""
  return {k: v[graph.selected] for k, v in graph.active.items()}
