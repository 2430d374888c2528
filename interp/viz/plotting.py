"""Matplotlib plumbing every figure shares: the Agg backend (no display) and one way to save."""

from __future__ import annotations

import os


def pyplot():
  """matplotlib.pyplot on the Agg backend, imported on first use (it is slow to import)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save(fig, workdir: str, name: str) -> str:
  """Saves `fig` as <workdir>/<name> (".png" added when missing), closes it, returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name if name.endswith(".png") else f"{name}.png")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  pyplot().close(fig)
  return path
