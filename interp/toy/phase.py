"""Phase family: n=2 features, m=1 dimension (ReLU output), a grid over feature 2's relative
importance r (0.1 -> 10, feature 1's is 1) and both features' density p (1 -> 0.01).

Each cell trains `seeds` models and keeps the lowest-loss one (the worse seeds are dropped:
they are the ones stuck in a worse local minimum). The kept model is classified by which
features it represents (|w_i| > 0.5): feature 2 not represented, both in superposition (an
antipodal pair), or feature 2 given the dimension (dedicated). Beside it,
`interp.toy.analytic.solve` finds the minimum-loss configuration of the exact expected loss;
the reported agreement is the fraction of cells where the two labels match.
"""

from __future__ import annotations

import numpy as np

from interp.toy import analytic, measures
from interp.toy import sweep as sweep_lib
from interp.toy.family import FamilySpec, Settings
from interp.viz import plotting

DEFAULTS = Settings(n_features=2, n_hidden=1, num_steps=4000, lr=1e-2, seeds=4, grid=10)
QUICK = Settings(n_features=2, n_hidden=1, num_steps=300, lr=1e-2, seeds=1, grid=2)
COLORS = {"not represented": "#d9d9d9", "superposition": "#e6550d", "dedicated": "#3182bd",
          analytic.NEITHER: "#000000"}


def axes(s: Settings) -> tuple[np.ndarray, np.ndarray]:
  """(relative importances r, densities p)."""
  return np.geomspace(0.1, 10, s.grid), np.geomspace(1, 0.01, s.grid)


def make_sweep(s: Settings) -> sweep_lib.Sweep:
  imp, dens = axes(s)
  return sweep_lib.product(
      2, {"density": dens, "importance": imp, "seed": range(s.seeds)},
      lambda density, importance, seed: (np.array([1.0, importance]), density, True))


def analyze(s: Settings, sweep, run) -> dict:
  imp, dens = axes(s)
  w = run.params["W"][:, 0, :]  # m = 1: [instances, 2]
  labels = np.array([analytic.classify(a, b) for a, b in w], dtype=object)
  cell = sweep.labels["density"] * s.grid + sweep.labels["importance"]
  best = measures.best_of(run.eval_loss, cell)
  empirical = np.array([labels[best[c]] for c in range(s.grid * s.grid)],
                       dtype=object).reshape(s.grid, s.grid)
  theory = analytic.solve(imp, dens)
  match = empirical == theory["label"]
  seed_match = labels == theory["label"].ravel()[cell]
  kept = np.array([best[c] for c in range(s.grid * s.grid)])
  sup = kept[empirical.ravel() == "superposition"]
  return {
      "importance": imp, "density": dens,
      "empirical": empirical.tolist(), "analytic": theory["label"].tolist(),
      "agreement": float(match.mean()), "agreement_all_seeds": float(seed_match.mean()),
      "counts_empirical": {k: int((empirical == k).sum()) for k in COLORS},
      "counts_analytic": {k: int((theory["label"] == k).sum()) for k in COLORS},
      "superposition_antipodal_fraction":
          float(np.mean(w[sup, 0] * w[sup, 1] < 0)) if len(sup) else None,
      "disagreements": [{"density": dens[i], "importance": imp[j], "empirical": empirical[i, j],
                         "analytic": theory["label"][i, j]}
                        for i, j in zip(*np.nonzero(~match))],
      "kept_w": w[kept].reshape(s.grid, s.grid, 2),
      "analytic_loss": theory["loss"], "analytic_theta": theory["theta"],
  }


def figures(s: Settings, sweep, run, results: dict, workdir: str) -> list[str]:
  plt = plotting.pyplot()
  from matplotlib.colors import ListedColormap
  names = list(COLORS)
  cmap = ListedColormap([COLORS[k] for k in names])
  imp, dens = np.asarray(results["importance"]), np.asarray(results["density"])
  fig, axs = plt.subplots(1, 2, figsize=(9.5, 4.2), sharey=True)
  lx, ly = np.log10(imp), np.log10(dens)
  hx = (lx[-1] - lx[0]) / max(len(lx) - 1, 1) / 2  # cells centred on the grid points
  hy = (ly[0] - ly[-1]) / max(len(ly) - 1, 1) / 2
  extent = (lx[0] - hx, lx[-1] + hx, ly[-1] - hy, ly[0] + hy)
  for ax, key, title in ((axs[0], "empirical", "trained (best of seeds)"),
                         (axs[1], "analytic", "analytic minimum-loss configuration")):
    grid = np.vectorize(names.index)(np.array(results[key], dtype=object))
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto", extent=extent,
              origin="upper", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("log10 relative importance of feature 2")
  axs[0].set_ylabel("log10 feature density")
  for d in results["disagreements"]:
    axs[0].plot(np.log10(d["importance"]), np.log10(d["density"]), "kx", ms=6)
  handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in names[:3]]
  fig.legend(handles, ["feature 2 not represented", "superposition", "feature 2 dedicated"],
             loc="lower center", ncol=3, fontsize=8)
  fig.suptitle(f"n=2, m=1 phase diagram: agreement {results['agreement']:.0%} "
               "(x = cells that disagree)", fontsize=10)
  fig.tight_layout(rect=(0, 0.08, 1, 0.95))
  return [plotting.save(fig, workdir, "phase_diagram")]


SPEC = FamilySpec(title="Phase diagram: n=2, m=1, importance x density",
                  defaults=DEFAULTS, quick=QUICK, sweep=make_sweep, analyze=analyze,
                  figures=figures)
