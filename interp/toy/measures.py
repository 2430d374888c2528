"""Geometry of learned W, as the paper measures it (numpy, on host; W is [..., m, n]).

  norm            ||W_i||, the length of feature i's column
  represented     ||W_i|| > threshold (0.5: learned columns are ~1 or ~0)
  superposition   sum_{j != i} (W^_i . W_j)^2, how much other features project onto i's direction
  dimensionality  D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2 (j including i): 1 for a feature with a
                  dimension of its own, 1/2 for an antipodal pair, 2/5 for a pentagon, ...
  D*              dimensions per feature, m / ||W||_F^2: the mean number of hidden dimensions a
                  (fully represented) feature takes
"""

from __future__ import annotations

import numpy as np

REPRESENTED = 0.5
# The fractions at which the paper finds D_i sticking (tegum products of these polytopes).
FRACTIONS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375}


def norms(w: np.ndarray) -> np.ndarray:
  """[..., n] column norms."""
  return np.linalg.norm(w, axis=-2)


def represented(w: np.ndarray, threshold: float = REPRESENTED) -> np.ndarray:
  return norms(w) > threshold


def _projections(w: np.ndarray) -> np.ndarray:
  """[..., n, n]: entry (i, j) = W^_i . W_j."""
  unit = w / np.maximum(norms(w), 1e-12)[..., None, :]
  return np.einsum("...ki,...kj->...ij", unit, w)


def superposition(w: np.ndarray) -> np.ndarray:
  """[..., n]: sum over j != i of (W^_i . W_j)^2."""
  proj = _projections(w) ** 2
  return proj.sum(-1) - np.diagonal(proj, axis1=-2, axis2=-1)


def dimensionality(w: np.ndarray) -> np.ndarray:
  """[..., n]: D_i (0 for a column of zero length)."""
  proj = (_projections(w) ** 2).sum(-1)
  return np.where(proj > 1e-12, norms(w) ** 2 / np.maximum(proj, 1e-12), 0.0)


def dims_per_feature(w: np.ndarray) -> np.ndarray:
  """[...]: D* = m / ||W||_F^2."""
  return w.shape[-2] / np.maximum((w ** 2).sum((-2, -1)), 1e-12)


def angles_2d(w: np.ndarray, threshold: float = REPRESENTED) -> tuple[np.ndarray, np.ndarray]:
  """For one m = 2 instance: (features represented, sorted by angle; gaps in degrees between
  angular neighbours, going round the circle, so they sum to 360)."""
  if w.shape[0] != 2:
    raise ValueError(f"angles_2d needs m = 2, got W of shape {w.shape}")
  idx = np.flatnonzero(norms(w) > threshold)
  angle = np.degrees(np.arctan2(w[1, idx], w[0, idx])) % 360
  order = np.argsort(angle)
  a = angle[order]
  gaps = np.diff(np.r_[a, a[:1] + 360]) if len(a) > 1 else np.zeros(0)
  return idx[order], gaps


def nearest_fraction(d: float) -> tuple[str, float]:
  """The named fraction closest to `d` and its distance."""
  name = min(FRACTIONS, key=lambda k: abs(FRACTIONS[k] - d))
  return name, abs(FRACTIONS[name] - d)


def best_of(values: np.ndarray, groups: np.ndarray) -> dict[int, int]:
  """For each group label, the index of the member with the smallest value (the lowest-loss
  seed of a cell: the worse seeds are dropped)."""
  out = {}
  for g in np.unique(groups):
    idx = np.flatnonzero(groups == g)
    out[int(g)] = int(idx[np.argmin(values[idx])])
  return out
