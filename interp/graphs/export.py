"""An attribution graph as `interp.attribution_graph/1` JSON (read by `interp.viz.graph_html`),
and the top-activating corpus contexts shown beside each feature.

Vocabulary (beyond `interp.graphs.attribute`):
  node id    emb_{pos}, f_{layer}_{pos}_{feature}, err_{layer}_{pos}, logit_{i}.
  heads      a node's optional "heads" (`graphs.heads`): per head its weight, query and key
             positions, and its score's query- and key-side sources, each named by its node id
             when the stored graph has that node, else by a label ("L3/117 @2 (not in graph)").
  stored     the graph pruned at the generous `GraphConfig` thresholds (0.95 / 0.99), with each
             node's and edge's rank, so the viewer's sliders reproduce any stricter pruning (the
             circuit-tracer defaults 0.8 / 0.98 included). Edge ranks come from the graph pruned
             at the stored node threshold, so at a stricter node threshold they are approximate.
  context    a window of corpus tokens around one of a feature's top activations, with the
             feature's activation at every token of the window.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from interp.graphs import attribute
from interp.graphs import prune as gp
from interp.models import transformer
from interp.models.hooks import Hooks
from interp.sae import transcoder as tc
from interp.viz import graph_html


def node_ids(graph: attribute.Graph) -> list[str]:
  """Every node's id, in adjacency order."""
  info = attribute.feature_info(graph)
  L, p = graph.rep.mlp.shape[:2]
  ids = [f"f_{l}_{q}_{f}" for l, q, f in zip(info["layer"], info["pos"], info["feature"])]
  ids += [f"err_{l}_{q}" for l in range(L) for q in range(p)]
  ids += [f"emb_{q}" for q in range(p)]
  return ids + [f"logit_{i}" for i in range(graph.layout.n_logits)]


def source_names(graph: attribute.Graph, kept: set, token_strs: list[str]) -> list[str]:
  """Every source column in `graphs.build` order (all active features, errors, embeddings) as
  its node id when `kept` holds it, else as a readable label."""
  a = graph.active
  L, p = graph.rep.mlp.shape[:2]
  pairs = [(f"f_{l}_{q}_{f}", f"L{l}/{f} @{q}") for l, q, f in zip(a["layer"], a["pos"],
                                                                    a["feature"])]
  pairs += [(f"err_{l}_{q}", f"error L{l} @{q}") for l in range(L) for q in range(p)]
  pairs += [(f"emb_{q}", f"embedding {token_strs[q]!r} @{q}") for q in range(p)]
  return [i if i in kept else f"{label} (not in graph)" for i, label in pairs]


def to_json(graph: attribute.Graph, pruned: gp.Pruned, token_strs: list[str], logit_strs: list[str],
            *, prompt: str, model: str, transcoder: str, scores: dict, thresholds: dict,
            contexts: dict | None = None, labels: dict | None = None,
            heads: dict | None = None) -> dict:
  """The pruned graph as an `interp.attribution_graph/1` dict (validated).

  Args:
    graph: the unpruned graph; pruned: `graphs.prune.prune` of it at `thresholds`.
    token_strs: the prompt's tokens as text; logit_strs: the logit nodes' tokens as text.
    prompt, model, transcoder: descriptions; scores: replacement and completeness.
    thresholds: {"node", "edge"} the stored pruning; contexts: {(layer, feature): [context]};
    labels: {(layer, feature): label} (default "L{layer}/{feature}").
    heads: `graphs.heads.node_heads` of the graph ({adjacency index: [head]}).
  """
  ids, info = node_ids(graph), attribute.feature_info(graph)
  lay = graph.layout
  f, e, t, lg = lay.slices()
  L, p = graph.rep.mlp.shape[:2]
  contexts, labels = contexts or {}, labels or {}
  names = source_names(graph, {ids[i] for i in np.nonzero(pruned.node_mask)[0]}, token_strs) \
      if heads else []
  nodes = []
  for i in np.nonzero(pruned.node_mask)[0]:
    base = {"id": ids[i], "influence": float(pruned.node_influence[i]),
            "node_rank": float(pruned.node_rank[i]), "feature": None, "activation": None,
            "token": None, "prob": None, "contexts": []}
    if i < f.stop:
      key = (int(info["layer"][i]), int(info["feature"][i]))
      base.update(kind="feature", layer=key[0], pos=int(info["pos"][i]), feature=key[1],
                  activation=float(info["act"][i]), contexts=contexts.get(key, []),
                  label=labels.get(key, f"L{key[0]}/{key[1]}"))
    elif i < e.stop:
      l, q = divmod(i - e.start, p)
      base.update(kind="error", layer=int(l), pos=int(q), label=f"error L{l}")
    elif i < t.stop:
      q = i - t.start
      base.update(kind="embedding", layer=-1, pos=int(q), label=token_strs[q],
                  token=token_strs[q])
    else:
      j = i - lg.start
      base.update(kind="logit", layer=int(L), pos=int(p - 1), label=logit_strs[j],
                  token=logit_strs[j], prob=float(graph.probs[j]))
    if heads and int(i) in heads:
      base["heads"] = [dict(h, **{side: [{"source": names[c], "weight": w} for c, w in h[side]]
                                  for side in ("query", "key")}) for h in heads[int(i)]]
    nodes.append(base)
  tgt, src = np.nonzero(pruned.edge_mask)
  edges = [{"source": ids[s], "target": ids[r], "weight": float(graph.adjacency[r, s]),
            "edge_rank": float(pruned.edge_rank[r, s])} for r, s in zip(tgt, src)]
  out = {"format": graph_html.FORMAT, "prompt": prompt, "tokens": list(token_strs),
         "model": model, "transcoder": transcoder, "n_layers": int(L),
         "scores": {k: float(v) for k, v in scores.items()},
         "thresholds": {k: float(v) for k, v in thresholds.items()}, "nodes": nodes,
         "edges": edges}
  graph_html.validate_graph(out)
  return out


@functools.partial(jax.jit, static_argnums=(0, 2))
def _acts(cfg, params, tc_cfg, tc_params, tokens, layers, feats):
  ins, _ = tc.sites(cfg)
  _, cache = transformer.forward(cfg, params, tokens, Hooks(capture=ins),
                                 logits_at=jnp.zeros((tokens.shape[0], 1), jnp.int32))
  out = jnp.zeros((layers.shape[0],) + tokens.shape, jnp.float32)
  for l in range(cfg.n_layers):  # one layer's [b p n] at a time
    acts = tc.encode_layer(tc_cfg, tc_params, cache[ins[l]].astype(jnp.float32), l)
    out = jnp.where((layers == l)[:, None, None], jnp.moveaxis(acts[:, :, feats], 2, 0), out)
  return out                                                   # [k b p]


def feature_contexts(cfg, params, tc_cfg: tc.TranscoderConfig, tc_params, corpus_tokens,
                     keys, decode, top: int = 3, before: int = 8, after: int = 2) -> dict:
  """Top-activating contexts of the features `keys` [(layer, feature)] over `corpus_tokens`.

  Args:
    corpus_tokens: int [N, ctx] sequences (e.g. 64 windows of the built-in corpus).
    decode: token id -> text.
    top: contexts per feature; before / after: tokens of window around each maximum.
  Returns:
    {(layer, feature): [{"tokens": [str], "values": [float]}]}.
  """
  if not keys:
    return {}
  layers = jnp.asarray([k[0] for k in keys])
  feats = jnp.asarray([k[1] for k in keys])
  toks = np.asarray(corpus_tokens)
  acts = np.concatenate([np.asarray(_acts(cfg, params, tc_cfg, tc_params,
                                          jnp.asarray(toks[i:i + 16]), layers, feats))
                         for i in range(0, len(toks), 16)], axis=1)
  out = {}
  for key, a in zip(keys, acts):
    best = np.argsort(-a.max(1), kind="stable")[:top]
    ctxs = []
    for b in best:
      if a[b].max() <= 0:
        continue
      q = int(a[b].argmax())
      lo, hi = max(q - before, 0), min(q + after + 1, toks.shape[1])
      ctxs.append({"tokens": [decode(int(x)) for x in toks[b, lo:hi]],
                   "values": [round(float(v), 4) for v in a[b, lo:hi]]})
    out[tuple(int(x) for x in key)] = ctxs
  return out
