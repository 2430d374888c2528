"""A sweep: the per-instance table of a run (what each instance is trained on).

  importance  [instance, feature]  loss weights I_i
  density     [instance, feature]  probabilities p_i that feature i is nonzero (1 - sparsity)
  relu        [instance]           True for the ReLU-output model, False for the linear one
  labels      name -> [instance]   coordinates for the analysis (density index, seed, ...)

Sweeps are data: a family builds one with `product`, the run pads it to a multiple of the
mesh's `data` axis (`padded`) and records its digest, so a resumed run refuses a changed sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from typing import Callable, Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
  importance: np.ndarray
  density: np.ndarray
  relu: np.ndarray
  labels: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    imp = np.asarray(self.importance, np.float32)
    dens = np.asarray(self.density, np.float32)
    relu = np.asarray(self.relu, bool)
    if imp.ndim != 2 or dens.shape != imp.shape or relu.shape != imp.shape[:1]:
      raise ValueError(f"sweep shapes disagree: importance {imp.shape}, density {dens.shape}, "
                       f"relu {relu.shape}; expected [I, n], [I, n], [I]")
    if np.any(dens < 0) or np.any(dens > 1):
      raise ValueError(f"densities must lie in [0, 1]; got [{dens.min()}, {dens.max()}]")
    labels = {k: np.asarray(v) for k, v in self.labels.items()}
    for k, v in labels.items():
      if v.shape != relu.shape:
        raise ValueError(f"label {k!r} has shape {v.shape}, expected {relu.shape}")
    object.__setattr__(self, "importance", imp)
    object.__setattr__(self, "density", dens)
    object.__setattr__(self, "relu", relu)
    object.__setattr__(self, "labels", labels)

  @property
  def n_instances(self) -> int:
    return self.importance.shape[0]

  @property
  def n_features(self) -> int:
    return self.importance.shape[1]

  def padded(self, multiple: int) -> "Sweep":
    """Repeats the last instance until the count is a multiple of `multiple`. The extra
    instances get their own seeds (they are new instance indices), train, and are dropped."""
    extra = -self.n_instances % multiple
    if not extra:
      return self
    take = np.r_[np.arange(self.n_instances), np.full(extra, self.n_instances - 1)]
    return Sweep(self.importance[take], self.density[take], self.relu[take],
                 {k: v[take] for k, v in self.labels.items()})

  def digest(self) -> str:
    h = hashlib.sha256()
    for a in (self.importance, self.density, self.relu):
      h.update(str(a.shape).encode())
      h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]

  def describe(self) -> dict:
    return {"n_instances": self.n_instances, "n_features": self.n_features,
            "digest": self.digest(), "labels": sorted(self.labels),
            "density_range": [float(self.density.min()), float(self.density.max())],
            "relu_instances": int(self.relu.sum())}


def product(n_features: int, axes: Mapping[str, Sequence],
            row: Callable[..., tuple[np.ndarray, np.ndarray, bool]]) -> Sweep:
  """A sweep over the Cartesian product of `axes` (the last axis varies fastest).

  Args:
    n_features: n.
    axes: name -> values; each instance gets a label per axis holding its value's index.
    row: (**values) -> (importance [n], density [n] or scalar, relu) for one combination.
  Returns:
    The sweep, with labels `<name>` (value index) for every axis.
  """
  names = list(axes)
  imp, dens, relu, labels = [], [], [], {n: [] for n in names}
  for idx in itertools.product(*(range(len(axes[n])) for n in names)):
    values = {n: axes[n][i] for n, i in zip(names, idx)}
    i, d, r = row(**values)
    imp.append(np.broadcast_to(np.asarray(i, np.float32), (n_features,)))
    dens.append(np.broadcast_to(np.asarray(d, np.float32), (n_features,)))
    relu.append(bool(r))
    for n, j in zip(names, idx):
      labels[n].append(j)
  return Sweep(np.stack(imp), np.stack(dens), np.array(relu),
               {n: np.array(v) for n, v in labels.items()})
