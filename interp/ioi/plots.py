"""Figures of the IOI experiment, drawn from its results (`ioi.experiment.run`)."""

from __future__ import annotations

import numpy as np

from interp.ioi.prompts import ROLES
from interp.viz import plotting

CLASS_COLOURS = {"name_mover": "tab:green", "negative_name_mover": "tab:red",
                 "s_inhibition": "tab:blue", "induction": "tab:purple",
                 "duplicate_token": "tab:orange", "previous_token": "tab:brown"}
# Which class's inputs each class was found through (the arrows of the diagram).
FEEDS = (("s_inhibition", "name_mover", "queries"), ("induction", "s_inhibition", "keys/values"),
         ("duplicate_token", "s_inhibition", "keys/values"),
         ("previous_token", "induction", "keys"))


def _heatmap(ax, values, title, xlabels=None, cmap="RdBu"):
  values = np.nan_to_num(np.asarray(values, float))
  lim = max(float(np.abs(values).max()), 1e-9)
  im = ax.imshow(values, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
  ax.set_ylabel("layer")
  ax.set_title(title, fontsize=9)
  if xlabels is not None:
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=8)
  return im


def effects(workdir: str, results: dict) -> str:
  """Direct effect (path patching to logits), DLA, and path patching into each class."""
  plt = plotting.pyplot()
  panels = [("direct", "path patching -> logits (MLPs frozen)")]
  panels += [(k, f"path patching {k.replace('_', ' ')}") for k in results["effects"]
             if k != "direct"]
  fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 4.2))
  for ax, (key, title) in zip(axes, panels):
    im = _heatmap(ax, results["effects"][key], title + "\n(rel. to clean LD)")
    ax.set_xlabel("head")
    fig.colorbar(im, ax=ax, fraction=0.05)
  im = _heatmap(axes[-1], results["dla"], "direct logit attribution IO - S\n(logits)")
  axes[-1].set_xlabel("head")
  fig.colorbar(im, ax=axes[-1], fraction=0.05)
  return plotting.save(fig, workdir, "ioi_head_effects.png")


def patching_maps(workdir: str, results: dict) -> str:
  """Denoising activation patching and attribution patching's estimate, side by side."""
  plt = plotting.pyplot()
  maps = results["patching"]
  fig, axes = plt.subplots(1, 4, figsize=(14, 4.2))
  for col, kind in enumerate(("resid", "heads")):
    labels = list(ROLES) if kind == "resid" else None
    for j, which in enumerate(("activation", "attribution")):
      ax = axes[2 * col + j]
      agree = maps[kind]["agreement"]
      title = f"{kind}: {which} patching"
      if which == "attribution":
        title += f"\nr={agree['pearson_r']:.2f}, tau={agree['kendall_tau']:.2f}"
      im = _heatmap(ax, maps[kind][which], title, labels)
      ax.set_xlabel("role" if kind == "resid" else "head")
      fig.colorbar(im, ax=ax, fraction=0.05)
  fig.suptitle("IOI denoising: share of the clean-corrupt logit difference restored", fontsize=10)
  return plotting.save(fig, workdir, "ioi_patching.png")


def circuit_diagram(workdir: str, classes: dict, cfg, faithfulness: dict) -> str:
  """Heads of each class placed by layer; arrows show which class was found through which."""
  plt = plotting.pyplot()
  fig, ax = plt.subplots(figsize=(10, 6))
  order = [c for c in CLASS_COLOURS if classes.get(c)]
  xs = {c: i for i, c in enumerate(order)}
  centres = {}
  for c in order:
    heads = sorted(classes[c])
    for j, (layer, head) in enumerate(heads):
      x = xs[c] + 0.3 * (j - (len(heads) - 1) / 2)
      ax.scatter([x], [layer], s=500, color=CLASS_COLOURS[c], alpha=0.8, edgecolor="black")
      ax.text(x, layer, f"{layer}.{head}", ha="center", va="center", fontsize=8)
    centres[c] = (xs[c], float(np.mean([l for l, _ in heads])))
  for src, dst, via in FEEDS:
    if src in centres and dst in centres:
      ax.annotate("", xy=centres[dst], xytext=centres[src],
                  arrowprops=dict(arrowstyle="->", color="gray", lw=1.5))
      mid = np.mean([centres[src], centres[dst]], 0)
      ax.text(mid[0], mid[1], via, fontsize=7, color="gray")
  ax.set_xticks(range(len(order)), [c.replace("_", "\n") for c in order], fontsize=8)
  ax.set_ylim(-1, cfg.n_layers)
  ax.set_ylabel("layer")
  ax.set_title(f"IOI circuit: {faithfulness['n_heads']} heads, faithfulness "
               f"{faithfulness['faithfulness']:.2f} (LD {faithfulness['logit_diff_circuit']:.2f}"
               f" of {faithfulness['logit_diff_model']:.2f})", fontsize=10)
  return plotting.save(fig, workdir, "ioi_circuit.png")


def save_all(workdir: str, results: dict, classes: dict, cfg) -> list[str]:
  paths = [effects(workdir, results), circuit_diagram(workdir, classes, cfg,
                                                      results["faithfulness"])]
  if "patching" in results:
    paths.append(patching_maps(workdir, results))
  return paths
