"""Basic family: n=20 features, m=5 dimensions, I_i = 0.7^i; linear against ReLU output models
over a sparsity sweep (the paper's "basic results" figures).

The linear model represents exactly the m most important features, orthogonally, at every
sparsity (it can only do PCA); the ReLU output model packs more than m features into m
dimensions once features are sparse, at the cost of interference (superposition). Figures:
W^T W and b as heat maps, and per-feature ||W_i|| bars coloured by superposition
sum_{j != i} (W^_i . W_j)^2. Each (model, sparsity) cell trains `seeds` models and keeps the
lowest-loss one.
"""

from __future__ import annotations

import numpy as np

from interp.toy import measures
from interp.toy import sweep as sweep_lib
from interp.toy.family import FamilySpec, Settings
from interp.viz import plotting

PAPER_SPARSITIES = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999)
MODELS = ("linear", "relu")
DEFAULTS = Settings(n_features=20, n_hidden=5, num_steps=10_000, lr=1e-3, seeds=2, grid=7)
QUICK = Settings(n_features=20, n_hidden=5, num_steps=300, lr=1e-2, seeds=1, grid=2)
SUPERPOSED = 0.1  # a represented feature with more interference than this is "in superposition"


def sparsities(s: Settings) -> np.ndarray:
  """The paper's seven sparsities, or `grid` of them spread over the list."""
  paper = np.array(PAPER_SPARSITIES)
  if s.grid >= len(paper):
    return paper
  return paper[np.round(np.linspace(0, len(paper) - 1, s.grid)).astype(int)]


def make_sweep(s: Settings) -> sweep_lib.Sweep:
  imp = 0.7 ** np.arange(s.n_features)
  return sweep_lib.product(
      s.n_features, {"model": MODELS, "sparsity": sparsities(s), "seed": range(s.seeds)},
      lambda model, sparsity, seed: (imp, 1.0 - sparsity, model == "relu"))


def analyze(s: Settings, sweep, run) -> dict:
  sp = sparsities(s)
  cell = sweep.labels["model"] * len(sp) + sweep.labels["sparsity"]
  best = measures.best_of(run.eval_loss, cell)
  out = {"sparsities": sp, "linear": [], "relu": []}
  for m_idx, name in enumerate(MODELS):
    for k, sparsity in enumerate(sp):
      i = best[m_idx * len(sp) + k]
      w = run.params["W"][i]
      rep = measures.represented(w)
      sup = measures.superposition(w)
      out[name].append({
          "sparsity": sparsity, "instance": i, "eval_loss": run.eval_loss[i],
          "n_represented": int(rep.sum()), "represented": np.flatnonzero(rep).tolist(),
          "n_superposed": int((rep & (sup > SUPERPOSED)).sum()),
          "norms": measures.norms(w), "superposition": sup})
  top = list(range(s.n_hidden))
  out["linear_represents_top_m"] = all(r["represented"] == top for r in out["linear"])
  out["relu_n_represented"] = [r["n_represented"] for r in out["relu"]]
  out["linear_n_represented"] = [r["n_represented"] for r in out["linear"]]
  out["relu_sparsest_n_represented"] = out["relu"][-1]["n_represented"]
  return out


def figures(s: Settings, sweep, run, results: dict, workdir: str) -> list[str]:
  plt = plotting.pyplot()
  sp = results["sparsities"]
  n = s.n_features
  heat, axes = plt.subplots(2, len(sp), figsize=(2.1 * len(sp), 4.6), squeeze=False)
  bars, baxes = plt.subplots(2, len(sp), figsize=(2.1 * len(sp), 5.2), squeeze=False)
  cmap = plt.cm.viridis
  for r, name in enumerate(MODELS):
    for c, row in enumerate(results[name]):
      w, b = run.params["W"][row["instance"]], run.params["b"][row["instance"]]
      image = np.full((n, n + 2), np.nan)
      image[:, :n] = w.T @ w
      image[:, n + 1] = b  # one blank column between W^T W and b
      ax = axes[r, c]
      im = ax.imshow(image, cmap="RdBu_r", vmin=-1, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"{name}, S={row['sparsity']:g}", fontsize=8)
      if c == 0:
        ax.set_ylabel("W^T W  |  b", fontsize=8)
      bax = baxes[r, c]
      sup = np.clip(np.asarray(row["superposition"]), 0, 1)
      bax.barh(np.arange(n), row["norms"], color=cmap(sup))
      bax.invert_yaxis()
      bax.set_xlim(0, 1.3)
      bax.set_yticks([])
      bax.set_title(f"{name}, S={row['sparsity']:g}: {row['n_represented']} rep.", fontsize=8)
      if r == 1:
        bax.set_xlabel("||W_i||", fontsize=8)
  heat.colorbar(im, ax=axes, shrink=0.6, label="value")
  heat.suptitle("W^T W and b (n=20, m=5, I_i = 0.7^i): linear (top) vs ReLU output (bottom)",
                fontsize=9)
  sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
  bars.colorbar(sm, ax=baxes, shrink=0.6, label="superposition sum_j!=i (W^_i.W_j)^2")
  bars.suptitle("Per-feature norm ||W_i|| (features top to bottom by importance)", fontsize=9)
  return [plotting.save(heat, workdir, "basic_wtw"), plotting.save(bars, workdir, "basic_norms")]


SPEC = FamilySpec(title="Basic: linear vs ReLU output, n=20, m=5, over sparsity",
                  defaults=DEFAULTS, quick=QUICK, sweep=make_sweep, analyze=analyze,
                  figures=figures)
