"""Figures of the induction-heads experiment, drawn from its results (`experiment.run`)."""

from __future__ import annotations


import numpy as np
from interp.viz import plotting


def _mark_phase(ax, model: dict) -> None:
  step = model["phase_change"]["step"]
  if step is not None:
    ax.axvline(step, color="gray", ls=":", lw=1)


def training_curves(results: dict, workdir: str) -> str:
  """Training loss (the bump is the phase change) and ICL score over training, every model."""
  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  for name, m in results["models"].items():
    curve = np.array(m["loss_curve"])
    line, = axes[0].plot(curve[:, 0], curve[:, 1], lw=1, label=m["title"])
    snaps = m["snapshots"]
    axes[1].plot([r["step"] for r in snaps], [r["icl"] for r in snaps], color=line.get_color(),
                 label=m["title"])
    for ax in axes:
      step = m["phase_change"]["step"]
      if step is not None:
        ax.axvline(step, color=line.get_color(), ls=":", lw=1)
  axes[0].set_ylabel("training loss (nats)")
  axes[1].set_ylabel("ICL score: loss(late) - loss(early)")
  axes[1].axhline(0, color="black", lw=0.5)
  for ax in axes:
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
  axes[0].set_title("loss; dotted: phase change (head-score jump with the ICL fall)")
  axes[1].set_title("in-context learning on held-out repeated tokens")
  return plotting.save(fig, workdir, "training_curves.png")


def head_scores_over_training(results: dict, workdir: str) -> str:
  """Per-head previous-token and prefix-matching scores over training (the phase change)."""
  plt = plotting.pyplot()
  names = [n for n in results["models"]]
  fig, axes = plt.subplots(len(names), 2, figsize=(11, 2.8 * len(names)), squeeze=False)
  for row, name in enumerate(names):
    m = results["models"][name]
    steps = [r["step"] for r in m["snapshots"]]
    for col, key in enumerate(("previous_token", "prefix_matching")):
      ax = axes[row, col]
      values = np.array([r[key] for r in m["snapshots"]])  # [t l h]
      for layer in range(values.shape[1]):
        for head in range(values.shape[2]):
          ax.plot(steps, values[:, layer, head], ls="-" if layer else "--",
                  label=f"L{layer}H{head}")
      _mark_phase(ax, m)
      ax.set_ylim(-0.02, 1.02)
      ax.set_title(f"{m['title']}: {key.replace('_', '-')} score", fontsize=9)
      ax.legend(fontsize=7, ncol=2)
  for ax in axes[-1]:
    ax.set_xlabel("step")
  return plotting.save(fig, workdir, "head_scores_over_training.png")


def composition(results: dict, workdir: str) -> str | None:
  """Q-, K-, V-composition of the final 2-layer model's layer-0 heads into layer-1 heads."""
  m = results["models"].get("attn2")
  if not m or "composition" not in m:
    return None
  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
  mats = {k: np.array(m["composition"][k]["scores"])[0, :, 1, :] for k in ("k", "q", "v")}
  vmax = max(float(x.max()) for x in mats.values())
  for ax, (kind, mat) in zip(axes, mats.items()):  # [source head, target head]
    base = m["composition"][kind]["baseline"]
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=vmax)
    for (i, j), v in np.ndenumerate(mat):
      ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9,
              color="k" if v > 0.6 * vmax else "w")
    ax.set_xticks(range(mat.shape[1]), [f"L1H{h}" for h in range(mat.shape[1])])
    ax.set_yticks(range(mat.shape[0]), [f"L0H{h}" for h in range(mat.shape[0])])
    ax.set_title(f"{kind.upper()}-composition (random baseline {base:.2f})", fontsize=9)
    fig.colorbar(im, ax=ax)
  return plotting.save(fig, workdir, "composition.png")


def ablations(results: dict, workdir: str) -> str:
  """Share of the ICL gain each head's ablation removes, per model and ablation kind."""
  plt = plotting.pyplot()
  models = results["models"]
  fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
  for ax, (name, m) in zip(axes[0], models.items()):
    kinds = list(m["ablation"])
    removed = np.array([np.array(m["ablation"][k]["removed"]).ravel() for k in kinds])
    labels = [f"L{l}H{h}" for l in range(np.array(m["ablation"]["zero"]["removed"]).shape[0])
              for h in range(np.array(m["ablation"]["zero"]["removed"]).shape[1])]
    x = np.arange(len(labels))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
      ax.bar(x + i * width, removed[i], width, label=kind.replace("_", " "))
    ax.set_xticks(x + 0.4 - width / 2, labels)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylim(-0.5, 1.1)
    ax.set_title(f"{m['title']} (ICL {m['icl']:.2f})", fontsize=9)
    ax.set_ylabel("share of ICL gain removed")
  axes[0, 0].legend(fontsize=7)
  return plotting.save(fig, workdir, "ablations.png")


def gemma(results: dict, workdir: str) -> str | None:
  """Gemma 3 270M: head scores on repeated tokens, and ablating top vs random heads."""
  g = results.get("gemma")
  if not g:
    return None
  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.3]})
  for ax, key in zip(axes, ("prefix_matching", "previous_token")):
    im = ax.imshow(np.array(g["scores"][key]), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(key.replace("_", "-") + " score", fontsize=9)
    fig.colorbar(im, ax=ax)
  ax = axes[2]
  names = list(g["ablations"])
  for i, mode in enumerate(names):
    a = g["ablations"][mode]
    ax.bar(i - 0.2, a["top_heads_rise"], 0.35, color="C3",
           label="top induction heads" if i == 0 else None)
    rises = np.array(a["random_losses"]) - g["second_copy_loss"]
    ax.bar(i + 0.2, rises.mean(), 0.35, color="C0", label="random heads" if i == 0 else None)
    ax.scatter(np.full(len(rises), i + 0.2), rises, color="k", s=8, zorder=3)
  ax.set_xticks(range(len(names)), [f"{n} ablation" for n in names])
  ax.axhline(0, color="black", lw=0.5)
  k = g["config"]["top_k"]
  ax.set_ylabel("rise in loss on the second copy (nats)")
  ax.set_title(f"ablating {k} heads (clean {g['second_copy_loss']:.2f} nats)", fontsize=9)
  ax.legend(fontsize=8)
  return plotting.save(fig, workdir, "gemma_induction.png")


def draw_all(results: dict, workdir: str) -> list[str]:
  """Every figure the results have data for (the toys' only if any toy ran); their paths."""
  paths = []
  if results["models"]:
    paths += [training_curves(results, workdir), head_scores_over_training(results, workdir),
              composition(results, workdir), ablations(results, workdir)]
  paths.append(gemma(results, workdir))
  return [p for p in paths if p]
