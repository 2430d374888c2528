"""Geometry family: n=200 features, m=20 dimensions (or 400 / 30), all importances 1, over
sparsity: how many dimensions each feature gets.

D* = m / ||W||_F^2 (dimensions per feature) against 1/(1 - S) falls from 1 in steps, sticking
at 1/2 (antipodal pairs) before falling further; the per-feature dimensionality
D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2 clusters at the fractions 1, 3/4, 2/3, 1/2, 2/5, 3/8
(tegum products of digons, triangles, tetrahedra, pentagons, ...). A plateau is a run of
neighbouring sparsities (`PLATEAU_POINTS`) whose D* lies within `PLATEAU_TOL` of one fraction.
"""

from __future__ import annotations

import numpy as np

from interp.toy import measures
from interp.toy import sweep as sweep_lib
from interp.toy.family import FamilySpec, Settings
from interp.viz import plotting

DEFAULTS = Settings(n_features=200, n_hidden=20, num_steps=8000, lr=3e-3, seeds=1, grid=20,
                    batch_size=256)
QUICK = Settings(n_features=40, n_hidden=4, num_steps=200, lr=1e-2, seeds=1, grid=3,
                 batch_size=128)
MAX_INVERSE_DENSITY = 20.0   # 1/(1-S) runs from 1 to this: density 20^-linspace(0, 1), as the paper
PLATEAU_TOL = 0.04
PLATEAU_POINTS = 3  # two points within tolerance can be a curve passing through
STICKY_TOL = 0.04
LABEL_VA = {"2/5": "bottom", "3/8": "top"}  # keeps the two close labels apart


def inverse_densities(s: Settings) -> np.ndarray:
  """1/(1 - S) = 1/p, log-spaced."""
  return np.geomspace(1.0, MAX_INVERSE_DENSITY, s.grid)


def make_sweep(s: Settings) -> sweep_lib.Sweep:
  return sweep_lib.product(
      s.n_features, {"density": inverse_densities(s), "seed": range(s.seeds)},
      lambda density, seed: (np.ones(s.n_features), 1.0 / density, True))


def plateaus(x: np.ndarray, dstar: np.ndarray, tol: float = PLATEAU_TOL,
             min_points: int = PLATEAU_POINTS) -> list[dict]:
  """Runs of >= `min_points` consecutive points with D* within `tol` of one named fraction."""
  near = [name if dist < tol else None
          for name, dist in (measures.nearest_fraction(d) for d in dstar)]
  out, i = [], 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and near[i] is not None and near[j + 1] == near[i]:
      j += 1
    if near[i] is not None and j - i + 1 >= min_points:
      out.append({"fraction": near[i], "value": measures.FRACTIONS[near[i]], "from": x[i],
                  "to": x[j], "points": j - i + 1, "mean_dstar": float(dstar[i:j + 1].mean())})
    i = j + 1
  return out


def analyze(s: Settings, sweep, run) -> dict:
  x = inverse_densities(s)
  best = measures.best_of(run.eval_loss, sweep.labels["density"])
  w = run.params["W"][[best[k] for k in range(len(x))]]
  dstar = measures.dims_per_feature(w)
  dims = measures.dimensionality(w)
  rep = measures.represented(w)
  sticky = {}
  for name, value in measures.FRACTIONS.items():
    near = (np.abs(dims - value) < STICKY_TOL) & rep
    sticky[name] = (near.sum(-1) / np.maximum(rep.sum(-1), 1)).tolist()
  near_any = np.zeros_like(rep)
  for value in measures.FRACTIONS.values():
    near_any |= np.abs(dims - value) < STICKY_TOL
  return {
      "inverse_density": x, "dstar": dstar, "n_represented": rep.sum(-1),
      "plateaus": plateaus(x, dstar),
      "half_plateau": [p for p in plateaus(x, dstar) if p["fraction"] == "1/2"],
      "sticky_fraction_per_instance": sticky,
      "fraction_of_represented_features_near_a_named_fraction":
          float((near_any & rep).sum() / max(rep.sum(), 1)),
      "feature_dims": [dims[k][rep[k]] for k in range(len(x))],
  }


def figures(s: Settings, sweep, run, results: dict, workdir: str) -> list[str]:
  plt = plotting.pyplot()
  x, dstar = np.asarray(results["inverse_density"]), np.asarray(results["dstar"])
  fig, ax = plt.subplots(figsize=(6, 3.8))
  for name, value in measures.FRACTIONS.items():
    ax.axhline(value, color="0.8", lw=0.8, ls="--")
    ax.text(1.01, value, name, va=LABEL_VA.get(name, "center"), fontsize=8, color="0.4",
            transform=ax.get_yaxis_transform())  # just right of the axes
  ax.plot(x, dstar, "o-", color="k", ms=4)
  for p in results["plateaus"]:
    ax.axvspan(p["from"], p["to"], color="#fdd0a2", alpha=0.6, lw=0)
  ax.set_xscale("log")
  ax.set_xlabel("1 / (1 - S)")
  ax.set_ylabel("dimensions per feature D* = m / ||W||_F^2")
  ax.set_ylim(0, 1.1)
  ax.set_title(f"n={s.n_features}, m={s.n_hidden}: D* (shaded: plateaus)", fontsize=9)
  paths = [plotting.save(fig, workdir, "geometry_dstar")]

  fig, ax = plt.subplots(figsize=(6, 3.8))
  rng = np.random.default_rng(0)
  for name, value in measures.FRACTIONS.items():
    ax.axhline(value, color="0.75", lw=0.8, ls="--")
    ax.text(1.01, value, name, va=LABEL_VA.get(name, "center"), fontsize=8, color="0.4",
            transform=ax.get_yaxis_transform())  # just right of the axes
  for xi, dims in zip(x, results["feature_dims"]):
    dims = np.asarray(dims)
    jitter = xi * np.exp(rng.normal(0, 0.04, len(dims)))
    ax.scatter(jitter, dims, s=3, alpha=0.35, color="#3182bd", lw=0)
  ax.plot(x, dstar, color="k", lw=1, label="D*")
  ax.set_xscale("log")
  ax.set_ylim(0, 1.1)
  ax.set_xlabel("1 / (1 - S)")
  ax.set_ylabel("feature dimensionality D_i")
  ax.legend(fontsize=8, loc="upper right")
  ax.set_title("per-feature dimensionality of represented features", fontsize=9)
  paths.append(plotting.save(fig, workdir, "geometry_feature_dims"))
  return paths


SPEC = FamilySpec(title="Geometry: dimensions per feature over sparsity",
                  defaults=DEFAULTS, quick=QUICK, sweep=make_sweep, analyze=analyze,
                  figures=figures)
