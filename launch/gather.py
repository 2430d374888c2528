"""Gather a sweep: every run's results.json into one CSV, and a metric-vs-flag summary plot.

  <sweep_dir>/results.csv   one row per run: run, the swept flags, then every field of the
                            run's results.json flattened with dots (status, step, wall_s,
                            final.loss, ...); runs without results.json have status "missing"
  <sweep_dir>/summary.png   the chosen metric (a CSV column, e.g. final.loss) against the chosen
                            swept flag, one line per combination of the other swept flags
"""

from __future__ import annotations

import csv
import json
import math
import os

from interp.train.metrics import flatten
from launch import hyper

FIRST = ("status", "step", "wall_s")


def read_results(run_dir: str) -> dict | None:
  try:
    with open(os.path.join(run_dir, "results.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def rows(sweep_dir: str, runs: list[hyper.Run]) -> list[dict]:
  out = []
  for run in runs:
    results = read_results(os.path.join(sweep_dir, hyper.name(run)))
    out.append({"run": hyper.name(run), **run,
                **(flatten(results) if results is not None else {"status": "missing"})})
  return out


def write_csv(path: str, table: list[dict], swept: list[str]) -> None:
  rest = sorted({k for row in table for k in row} - {"run", *swept},
                key=lambda k: (k not in FIRST, FIRST.index(k) if k in FIRST else 0, k))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, ["run", *swept, *rest])
    writer.writeheader()
    writer.writerows(table)


def _number(text) -> float | None:
  try:
    value = float(text)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def plot(path: str, table: list[dict], swept: list[str], metric: str, x: str,
         title: str = "", group: list[str] | None = None) -> bool:
  """Plots `metric` against flag (or result column) `x`, one line per value of the other swept
  flags (or of `group`); returns False (and draws nothing) when no run has both."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  points = [r for r in table if _number(r.get(metric)) is not None and r.get(x) is not None]
  if not points:
    return False
  others = group if group is not None else [s for s in swept if s != x]
  numeric = all(_number(r[x]) is not None for r in points)
  categories = list(dict.fromkeys(r[x] for r in points))
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  groups: dict[tuple, list[dict]] = {}
  for r in points:
    groups.setdefault(tuple(r[o] for o in others), []).append(r)
  for key, members in groups.items():
    xs = [_number(r[x]) if numeric else categories.index(r[x]) for r in members]
    order = sorted(range(len(xs)), key=xs.__getitem__)
    label = ", ".join(f"{o}={v}" for o, v in zip(others, key)) or None
    ax.plot([xs[i] for i in order], [_number(members[i][metric]) for i in order], "o-",
            label=label)
  if numeric:
    values = [_number(r[x]) for r in points]
    if min(values) > 0 and max(values) / min(values) >= 10:
      ax.set_xscale("log")
  else:
    ax.set_xticks(range(len(categories)), categories, rotation=20)
  ax.set_xlabel(f"--{x}" if x in swept else x)
  ax.set_ylabel(metric)
  ax.set_title(title or f"{metric} vs --{x}")
  if len(groups) > 1:
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def gather(sweep_dir: str, runs: list[hyper.Run], metric: str = "final.loss",
           x: str = "", group: list[str] | None = None) -> tuple[str, str | None]:
  """Writes results.csv and summary.png into `sweep_dir`; returns their paths (png None if
  nothing could be plotted)."""
  swept = list(dict.fromkeys(k for run in runs for k in run))
  table = rows(sweep_dir, runs)
  csv_path = os.path.join(sweep_dir, "results.csv")
  write_csv(csv_path, table, swept)
  varied = [k for k in swept if len({run.get(k) for run in runs}) > 1]
  x = x or (varied or swept or [""])[0]
  columns = {k for r in table for k in r}
  if x and x not in swept and x not in columns:
    raise ValueError(f"--plot_x={x!r} is neither a swept flag nor a results column; swept: "
                     f"{swept}")
  # Against a result (e.g. an L0-FVU frontier), runs are grouped by the swept flags of `group`.
  group = None if x in swept else [g for g in (group or ()) if g in swept]
  png_path = os.path.join(sweep_dir, "summary.png")
  label = f"--{x}" if x in swept else x
  drawn = bool(x) and plot(png_path, table, swept, metric, x, f"{metric} vs {label} "
                           f"({os.path.basename(os.path.normpath(sweep_dir))})", group)
  return csv_path, png_path if drawn else None
