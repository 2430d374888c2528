"""What a figure family of the paper is made of: its settings and its spec.

A family module (`intro`, `basic`, `phase`, `geometry`) defines one `FamilySpec`, `SPEC`: how to
build its sweep from `Settings`, analyse the trained run and draw its figures.
`interp.toy.experiment` maps each `Family` to its module's SPEC and runs it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from interp.toy import train as train_lib
from interp.toy.sweep import Sweep


@dataclasses.dataclass(frozen=True)
class Settings:
  """A family's sizes. `grid`: densities (intro, geometry) or points per phase-diagram axis."""

  n_features: int
  n_hidden: int
  num_steps: int
  lr: float
  seeds: int
  grid: int
  batch_size: int = 1024


@dataclasses.dataclass(frozen=True)
class FamilySpec:
  """How a family builds, analyses and draws its run.

  Attributes:
    title: one line for reports.
    defaults: the full-size settings; `quick`: a tiny version for smoke tests.
    sweep: settings -> Sweep.
    analyze: (settings, sweep, run) -> results (JSON-able quantities).
    figures: (settings, sweep, run, results, workdir) -> PNG paths.
  """

  title: str
  defaults: Settings
  quick: Settings
  sweep: Callable[[Settings], Sweep]
  analyze: Callable[[Settings, Sweep, train_lib.ToyRun], dict]
  figures: Callable[[Settings, Sweep, train_lib.ToyRun, dict, str], list[str]]
