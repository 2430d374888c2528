"""Why attention moved a node: the heads that carry its input from other positions, and, for
each, the sources of its attention score.

Vocabulary (beyond `interp.graphs.attribute` and `interp.graphs.validate`):
  cross weight  of a target at position q: the sum of its incoming edge weights (adjacency row)
             from sources at positions other than q, signed.
  hop        in the replacement model only attention moves anything between positions: head
             (l, h) carries what sits at key position k to query position q through its OV
             path, with its frozen weight pattern[l, h, q, k].
  carried    c[l, h, k] for one target at q: the part of its cross weight whose paths first
             reach q through head (l, h) from key position k. Attention is causal and the target
             reads position q, so a path that reaches q never leaves it: every path from a
             source at a position other than q crosses exactly one off-diagonal entry of row q of
             one head's pattern. Scaling those entries by gates alpha[l, h, k] therefore makes
             the cross weight linear in alpha, and c is its gradient: sum(c) equals the cross
             weight exactly (the identity the tests check), whatever the paths' lengths.
  head weight  sum over k of c[l, h, k]; a node's heads are ranked by |head weight|.
  key pos    of a head: the k of largest |c[l, h, k]|, the position its moved weight came
             from (not the argmax of the pattern: a head that parks its attention on BOS moves
             little from there).
  sources    of a head: `validate.attention_score_attribution` at (l, h, q, key pos), each side
             (query with the key frozen, key with the query frozen) ranked by |weight|.

Cost: one reverse-over-forward pass of the linear model per node (all heads and key positions
at once), then one score attribution per listed head; `GraphConfig.head_nodes` caps the nodes.
Everything here runs in float32, whatever the graph's precision.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from interp.graphs import attribute
from interp.graphs import build as gb
from interp.graphs import linear as gl
from interp.graphs import prune as gp
from interp.graphs import validate
from interp.models.config import TransformerConfig
from interp.sae import transcoder as tc

HEADS_PER_NODE = 4    # heads listed per node (ranked by |head weight|)
SOURCES_PER_SIDE = 8  # query-side and key-side sources listed per head


def source_injection(tc_cfg: tc.TranscoderConfig, tc_params: dict, graph: attribute.Graph):
  """The graph's sources as injections: (embed [p d], mlp [L p d]).

  The selected features' outputs plus the errors (the active features that are not nodes are
  left out, as the adjacency leaves them out); with every active feature selected, `mlp` equals
  the replacement model's injection minus `rep.bias_mlp` (the decoder bias, and the whole
  output of held positions).
  """
  rep, active = graph.rep, graph.active
  keep = np.zeros(len(active["act"]), np.float32)
  keep[graph.selected] = 1.0
  decoders, _ = gb.decoder_vectors(
      tc_cfg, tc_params, gb._counts(active, rep.mlp.shape[0]), jnp.asarray(active["pos"]),
      jnp.asarray(active["feature"]), jnp.asarray(active["act"] * keep))
  mlp = rep.error
  for tl, pos, vec, _ in decoders:
    mlp = mlp.at[tl, pos].add(vec)
  return rep.embed, mlp


@functools.partial(jax.jit, static_argnums=(0, 2))
def _carried(cfg, params, tc_cfg, tc_params, rep, u_embed, u_mlp, t_layer, t_pos, t_vec, t_logit):
  L, H, p = rep.frozen.pattern.shape[:3]
  idx = jnp.arange(p)

  def one(layer, q, vec, logit):
    here = (idx == q)
    u_e = jnp.where(here[:, None], 0.0, u_embed)          # sources at other positions only
    u_m = jnp.where(here[None, :, None], 0.0, u_mlp)

    def cross(alpha):  # alpha [L H p]: gates on row q's off-diagonal pattern entries
      gate = jnp.where(here[:, None] & ~here[None, :], alpha[:, :, None, :], 1.0)
      fz = rep.frozen._replace(pattern=rep.frozen.pattern * gate)
      fwd = lambda e, m: gl.linear_forward(cfg, params, tc_cfg, tc_params, fz, e, m)
      _, (d_x, d_final) = jax.jvp(fwd, (rep.embed, rep.mlp), (u_e, u_m))
      return jnp.where(logit, d_final[q], d_x[layer, q]) @ vec

    return jax.grad(cross)(jnp.ones((L, H, p), jnp.float32))

  return jax.lax.map(lambda a: one(*a), (t_layer, t_pos, t_vec, t_logit))


def carried(cfg: TransformerConfig, params: dict, tc_cfg: tc.TranscoderConfig, tc_params: dict,
            graph: attribute.Graph, rows) -> np.ndarray:
  """c[l, h, k] (module doc) for target rows `rows` of the adjacency.

  Args:
    cfg, params, tc_cfg, tc_params: the model and transcoder the graph was built with.
    graph: the unpruned graph; rows: adjacency indices of feature or logit nodes.
  Returns:
    float32 [len(rows), L, n_heads, p]; each [i] sums to row i's cross weight.
  """
  rows = np.asarray(rows, int)
  t_index = np.searchsorted(attribute.target_rows(graph), rows)
  t = graph.targets
  u_embed, u_mlp = source_injection(tc_cfg, tc_params, graph)
  # float32 whatever the graph's precision: the identity with the adjacency is the point.
  f32 = lambda tree: jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
  out = _carried(cfg, f32(params), tc_cfg, f32(tc_params), graph.rep, u_embed, u_mlp,
                 jnp.asarray(t.layer[t_index]), jnp.asarray(t.pos[t_index]),
                 jnp.asarray(t.vec[t_index]), jnp.asarray(t.is_logit[t_index]))
  return np.asarray(out, np.float32)


def cross_weight(graph: attribute.Graph, rows) -> np.ndarray:
  """The cross weight (module doc) of adjacency rows `rows`: [len(rows)]."""
  lay = graph.layout
  t = lay.slices()[2]
  info = attribute.feature_info(graph)
  p = lay.n_embeddings
  pos = np.concatenate([info["pos"], np.tile(np.arange(p), lay.n_errors // p), np.arange(p),
                        np.full(lay.n_logits, p - 1)])
  out = []
  for r in np.asarray(rows, int):
    q = pos[r]
    out.append(graph.adjacency[r, :t.stop][pos[:t.stop] != q].sum(dtype=np.float64))
  return np.asarray(out)


def strongest_nodes(graph: attribute.Graph, pruned: gp.Pruned, n: int) -> np.ndarray:
  """The `n` kept feature and logit nodes of most influence (logits count their probability,
  as the edge scores of `graphs.prune` do)."""
  lay = graph.layout
  f, _, _, lg = lay.slices()
  score = pruned.node_influence + gp.logit_weights(lay, graph.probs)
  cand = np.concatenate([np.arange(f.start, f.stop), np.arange(lg.start, lg.stop)])
  cand = cand[pruned.node_mask[cand]]
  return np.sort(cand[np.argsort(-score[cand], kind="stable")[:n]])


def _ranked(values: np.ndarray, k: int) -> list[tuple[int, float]]:
  order = np.argsort(-np.abs(values), kind="stable")[:k]
  return [(int(i), float(values[i])) for i in order if values[i] != 0.0]


def node_heads(cfg: TransformerConfig, params: dict, tc_cfg: tc.TranscoderConfig,
               tc_params: dict, graph: attribute.Graph, pruned: gp.Pruned, n_nodes: int,
               n_heads: int = HEADS_PER_NODE, n_sources: int = SOURCES_PER_SIDE) -> dict:
  """The heads behind the strongest nodes' cross weight, with their scores' sources.

  Args:
    cfg, params, tc_cfg, tc_params: the model and transcoder; graph: the unpruned graph.
    pruned: the stored pruning (nodes are chosen among those it keeps).
    n_nodes: nodes to explain (0: none); n_heads: heads per node; n_sources: per side.
  Returns:
    {adjacency index: [{"layer", "head", "weight", "q_pos", "k_pos", "query": [(column,
    weight)], "key": [...]}]}, heads by descending |weight|; columns are in `graphs.build`
    source order (all active features, errors, embeddings), as `attention_score_attribution`
    returns them.
  """
  if n_nodes <= 0:
    return {}
  rows = strongest_nodes(graph, pruned, n_nodes)
  if not len(rows):
    return {}
  c = carried(cfg, params, tc_cfg, tc_params, graph, rows)
  t_index = np.searchsorted(attribute.target_rows(graph), rows)
  out = {}
  for i, r in enumerate(rows):
    q = int(graph.targets.pos[t_index[i]])
    per_head = c[i].sum(-1)                                           # [L H]
    heads = []
    for flat in np.argsort(-np.abs(per_head).ravel(), kind="stable")[:n_heads]:
      layer, head = (int(x) for x in np.unravel_index(flat, per_head.shape))
      if per_head[layer, head] == 0.0:
        break
      k = int(np.argmax(np.abs(c[i, layer, head])))
      s = validate.attention_score_attribution(cfg, params, tc_cfg, tc_params, graph, layer,
                                               head, q, k)
      heads.append({"layer": layer, "head": head, "weight": float(per_head[layer, head]),
                    "q_pos": q, "k_pos": k, "query": _ranked(s["query"], n_sources),
                    "key": _ranked(s["key"], n_sources)})
    out[int(r)] = heads
  return out
