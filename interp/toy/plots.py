"""Matplotlib plumbing shared by the toy families' figures (Agg backend, one save path)."""

from __future__ import annotations

import os


def pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save(fig, workdir: str, name: str) -> str:
  """Saves `fig` as <workdir>/<name>.png, closes it, returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, f"{name}.png")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  pyplot().close(fig)
  return path
