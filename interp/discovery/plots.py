"""Figures of circuit discovery (`interp.discovery.experiment`): the circuit as a layered graph
and the faithfulness curve, with a hand-found head circuit's point beside it when there is one."""

from __future__ import annotations

import numpy as np

from interp.discovery.graph import EdgeGraph
from interp.viz import plotting

# Colour of an edge by the input it enters.
INPUT_COLOURS = {"q": "tab:blue", "k": "tab:green", "v": "tab:red", "": "0.4"}


def _position(g: EdgeGraph, name: str) -> tuple[float, float]:
  """Layout: embed at the bottom, layer L's heads at height 2L+1 and its MLP at 2L+2, logits on
  top; heads spread left to right, MLPs on the right."""
  h = g.cfg.n_heads
  if name == "embed":
    return (h - 1) / 2, 0.0
  if name == "logits":
    return (h - 1) / 2, 2.0 * g.cfg.n_layers + 1
  if name.startswith("m"):
    return float(h), 2.0 * int(name[1:]) + 1.5
  layer, head = name[1:].split(".")
  return float(head), 2.0 * int(layer) + 1


def _receiver(g: EdgeGraph, r: int) -> tuple[list[str], str]:
  """The node names a receiver feeds and its input kind (q, k, v or '')."""
  name = g.recv_names[r]
  kind = name[-2] if name.endswith(">") else ""
  if name == "logits":
    return ["logits"], kind
  return [g.up_names[u] for u in g.recv_nodes[r]], kind


def circuit(workdir: str, g: EdgeGraph, scores, mask, name: str = "circuit.png") -> str:
  plt = plotting.pyplot()
  fig, ax = plt.subplots(figsize=(max(5, 1.2 * g.cfg.n_heads + 3), max(4, 0.7 * g.cfg.n_layers + 3)))
  s = np.asarray(scores)
  lim = max(float(np.abs(s[mask]).max()) if mask.any() else 1.0, 1e-12)
  used = set()
  for u, r in np.argwhere(mask):
    x0, y0 = _position(g, g.up_names[u])
    targets, kind = _receiver(g, r)
    for t in targets:
      x1, y1 = _position(g, t)
      ax.plot([x0, x1], [y0, y1], color=INPUT_COLOURS[kind], alpha=0.8,
              lw=0.5 + 3 * abs(s[u, r]) / lim, ls="-" if s[u, r] >= 0 else "--")
      used.add(t)
    used.add(g.up_names[u])
  for node in used:
    x, y = _position(g, node)
    ax.scatter([x], [y], s=120, color="white", edgecolor="black", zorder=3)
    ax.annotate(node, (x, y), fontsize=7, ha="center", va="center", zorder=4)
  ax.set_title(f"circuit: {int(mask.sum())} of {g.n_edges} edges (colour: q blue, k green, "
               f"v red; dashed: negative score)", fontsize=8)
  ax.set_xlabel("head")
  ax.set_ylabel("layer (2L+1: heads, 2L+1.5: MLP)")
  return plotting.save(fig, workdir, name)


def curve(workdir: str, result: dict, hand: dict | None = None,
          name: str = "faithfulness_curve.png") -> str:
  """The normalised metric against edges kept; `hand`: {"heads", "n_edges", "normalised"} of a
  hand-found head circuit (`interp.discovery.experiment.heads_circuit`), drawn as a star."""
  plt = plotting.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  counts = np.maximum(np.asarray(result["counts"]), 0.5)
  ax.plot(counts, result["normalised"], marker="o", ms=3, label="top-n edges by score")
  if hand:
    ax.scatter([max(hand["n_edges"], 0.5)], [hand["normalised"]], marker="*", s=120,
               color="tab:orange", zorder=3,
               label=f"hand-found: {len(hand['heads'])} heads ({hand['n_edges']} edges)")
    ax.legend(fontsize=7)
  ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
  ax.axhline(0.8, color="tab:red", lw=0.8, ls=":")
  ax.set_xscale("log")
  ax.set_xlabel("edges kept (top-n)")
  ax.set_ylabel("normalised metric (1 = clean)")
  ax.set_title("faithfulness: every other edge patched", fontsize=9)
  return plotting.save(fig, workdir, name)


def save_all(workdir: str, g: EdgeGraph, scores, mask, result: dict,
             hand: dict | None = None) -> list[str]:
  return [circuit(workdir, g, scores, mask), curve(workdir, result, hand)]
