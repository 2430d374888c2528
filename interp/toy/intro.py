"""Intro family: n=5 features in m=2 dimensions, I_i = 0.9^i, density 20^-linspace(0, 1, 10).

The paper's first figure: as features get sparser, the columns of W go from two orthogonal
features (the rest dropped), to antipodal pairs, to all five in a pentagon. Each density
trains `seeds` ReLU models; the lowest-loss one is analysed. Paper settings are 10k AdamW
steps at lr 1e-3; the default here is the same.
"""

from __future__ import annotations

import numpy as np

from interp.toy import measures
from interp.toy import sweep as sweep_lib
from interp.toy.family import FamilySpec, Settings
from interp.viz import plotting

DEFAULTS = Settings(n_features=5, n_hidden=2, num_steps=10_000, lr=1e-3, seeds=4, grid=10)
QUICK = Settings(n_features=5, n_hidden=2, num_steps=300, lr=1e-2, seeds=1, grid=2)
TOLERANCE_DEG = 15.0


def densities(s: Settings) -> np.ndarray:
  return 20.0 ** -np.linspace(0, 1, s.grid)


def importance(s: Settings) -> np.ndarray:
  return 0.9 ** np.arange(s.n_features)


def make_sweep(s: Settings) -> sweep_lib.Sweep:
  return sweep_lib.product(s.n_features, {"density": densities(s), "seed": range(s.seeds)},
                           lambda density, seed: (importance(s), density, True))


def arrangement(gaps: np.ndarray) -> str:
  """Names the 2-D arrangement from the angular gaps between represented neighbours."""
  k = len(gaps)
  if k == 0:
    return "at most 1 feature"
  if k == 2:
    angle = float(min(gaps))
    if abs(angle - 90) < TOLERANCE_DEG:
      return "2 orthogonal"
    return "antipodal pair" if abs(angle - 180) < TOLERANCE_DEG else f"2 at {angle:.0f} deg"
  regular = bool(np.all(np.abs(gaps - 360 / k) < TOLERANCE_DEG))
  if k == 4 and regular:
    return "2 antipodal pairs"
  if k == 5 and regular:
    return "pentagon"
  return f"regular {k}-gon" if regular else f"{k} features, irregular"


def analyze(s: Settings, sweep, run) -> dict:
  best = measures.best_of(run.eval_loss, sweep.labels["density"])
  rows = []
  for d, p in enumerate(densities(s)):
    i = best[d]
    w = run.params["W"][i]
    order, gaps = measures.angles_2d(w)
    rows.append({"density": p, "instance": i, "eval_loss": run.eval_loss[i],
                 "represented": sorted(order.tolist()), "n_represented": len(order),
                 "angle_order": order.tolist(), "gaps_deg": gaps,
                 "arrangement": arrangement(gaps), "norms": measures.norms(w)})
  dense, sparse = rows[0], rows[-1]
  pair = dense["gaps_deg"]
  return {
      "per_density": rows,
      "densest": {"density": dense["density"], "represented": dense["represented"],
                  "angle_deg": float(min(pair)) if len(pair) else None},
      "sparsest": {"density": sparse["density"], "n_represented": sparse["n_represented"],
                   "gaps_deg": sparse["gaps_deg"],
                   "max_gap_error_deg": float(np.max(np.abs(sparse["gaps_deg"] - 72.0)))
                   if sparse["n_represented"] == 5 else None},
      "arrangements": [r["arrangement"] for r in rows],
  }


def figures(s: Settings, sweep, run, results: dict, workdir: str) -> list[str]:
  plt = plotting.pyplot()
  rows = results["per_density"]
  fig, axes = plt.subplots(1, len(rows), figsize=(1.7 * len(rows), 2.3), squeeze=False)
  colors = plt.cm.viridis(np.linspace(0.95, 0.05, s.n_features))  # yellow = most important
  circle = np.linspace(0, 2 * np.pi, 100)
  for ax, row in zip(axes[0], rows):
    w = run.params["W"][row["instance"]]
    ax.plot(np.cos(circle), np.sin(circle), color="0.85", lw=0.8)
    for i in range(s.n_features):
      ax.plot([0, w[0, i]], [0, w[1, i]], color=colors[i], lw=1.5)
      ax.scatter(w[0, i], w[1, i], color=colors[i], s=14, zorder=3)
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"p = {row['density']:.3g}", fontsize=8)
    ax.set_xlabel(row["arrangement"], fontsize=7)
  fig.suptitle("Columns W_i of W (n=5, m=2; colour = importance, yellow most) as density falls",
               fontsize=9)
  return [plotting.save(fig, workdir, "intro_columns")]


SPEC = FamilySpec(title="Intro: 5 features in 2 dimensions across densities",
                  defaults=DEFAULTS, quick=QUICK, sweep=make_sweep, analyze=analyze,
                  figures=figures)
