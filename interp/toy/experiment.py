"""One figure family of the paper per run: the library behind `experiments/toy_superposition.py`.

A family (`Family`) is a sweep builder, an analysis and its figures (`interp.toy.family`, one module
each: `intro`, `basic`, `phase`, `geometry`). `run_family` trains the family's sweep with
`interp.toy.train.train_toy` in `workdir` (resumable), then writes into the same folder:
  *.png          the family's figures
  results.json   the measured quantities, the training speed and the data-path choices
Family settings (widths, steps, learning rate, seeds per cell, grid size) have per-family
defaults; a flag left at 0 keeps the default.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import time
from typing import Sequence

import jax
import numpy as np
from absl import logging

from interp import jsonio
from interp.parallel import mesh as mesh_lib
from interp.toy import basic, geometry, intro, phase
from interp.toy import data as data_lib
from interp.toy import model as model_lib
from interp.toy import speed
from interp.toy import train as train_lib
from interp.toy.family import FamilySpec, Settings
from interp.train.checkpoint import CheckpointConfig


class Family(str, enum.Enum):
  INTRO = "intro"
  BASIC = "basic"
  PHASE = "phase"
  GEOMETRY = "geometry"


def families() -> dict[Family, FamilySpec]:
  return {Family.INTRO: intro.SPEC, Family.BASIC: basic.SPEC, Family.PHASE: phase.SPEC,
          Family.GEOMETRY: geometry.SPEC}


@dataclasses.dataclass(frozen=True)
class ToyExperimentConfig:
  """Attributes:
    family: which figure family.
    workdir: the run folder.
    num_steps, lr, seeds, grid, n_features, n_hidden, batch_size: family overrides (0 = the
      family's default; n_features / n_hidden only where the family allows other widths).
    seed: root of all randomness.
    mesh: `--mesh` spec.
    data: feature sampling (PRNG, bits per sample, feature sets).
    log_every: metrics cadence (0 = 20 rows per run).
    checkpoint_every: save every this many steps.
    quick: the family's tiny settings (smoke tests); overrides still apply.
  """

  family: Family
  workdir: str
  num_steps: int = 0
  lr: float = 0.0
  seeds: int = 0
  grid: int = 0
  n_features: int = 0
  n_hidden: int = 0
  batch_size: int = 0
  seed: int = 0
  mesh: str = mesh_lib.DEFAULT_MESH
  data: data_lib.DataConfig = data_lib.DataConfig()
  log_every: int = 0
  checkpoint_every: int = 2000
  quick: bool = False

  def __post_init__(self):
    object.__setattr__(self, "family", data_lib.choice(Family, self.family, "--family"))
    for name in ("num_steps", "lr", "seeds", "grid", "n_features", "n_hidden", "batch_size",
                 "log_every", "seed"):
      value = getattr(self, name)
      if not (math.isfinite(value) and value >= 0):  # `not` so that NaN is refused too
        raise ValueError(f"--{name}={value}: must be a finite number >= 0 (0 = the family's "
                         "default)")
    if self.checkpoint_every <= 0:
      raise ValueError(f"--checkpoint_every={self.checkpoint_every}: must be a positive integer")
    if (self.n_features or self.n_hidden) and self.family != Family.GEOMETRY:
      raise ValueError(f"--n_features/--n_hidden apply to the geometry family only; the "
                       f"{self.family.value} family's widths are the paper's")

  def settings(self) -> Settings:
    spec = families()[self.family]
    base = spec.quick if self.quick else spec.defaults
    overrides = {k: getattr(self, k) for k in ("num_steps", "lr", "seeds", "grid", "n_features",
                                               "n_hidden", "batch_size") if getattr(self, k)}
    return dataclasses.replace(base, **overrides)

  def train_config(self, settings: Settings) -> train_lib.ToyTrainConfig:
    return train_lib.ToyTrainConfig.make(
        workdir=self.workdir, model=model_lib.ToyModelConfig(settings.n_features,
                                                             settings.n_hidden),
        data=self.data, batch_size=settings.batch_size, num_steps=settings.num_steps,
        lr=settings.lr, seed=self.seed, mesh=self.mesh,
        log_every=self.log_every or max(1, settings.num_steps // 20),
        checkpoint=CheckpointConfig(every_steps=self.checkpoint_every, keep=2))

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out["family"] = self.family.value
    out["data"] = self.data.to_dict()
    return out


def run_family(config: ToyExperimentConfig, devices: Sequence | None = None) -> dict:
  """Trains (or resumes) the family's sweep, analyses it, draws its figures.

  Returns:
    The results (also in <workdir>/results.json): status, settings, training speed, data-path
    choices, figure paths and the family's quantities under "quantities".
  """
  start = time.perf_counter()
  spec = families()[config.family]
  settings = config.settings()
  sweep = spec.sweep(settings)
  train_config = config.train_config(settings)
  run = train_lib.train_toy(train_config, sweep, devices)
  results = {"family": config.family.value, "title": spec.title, "status": run.status,
             "step": run.step, "settings": dataclasses.asdict(settings),
             "config": config.to_dict(), "n_instances": sweep.n_instances,
             "data_path": {**config.data.to_dict(), "words_per_sample":
                           config.data.words_per_sample(settings.n_features),
                           "sampled_on": "device, inside the step, per instance chunk",
                           "chunk": run.timing["chunk"],
                           "contraction": "gram" if train_config.model.gram else "factored"},
             "training": {**run.timing, "final_metrics": run.final_metrics,
                          "eval_loss_mean": float(np.mean(run.eval_loss))},
             "devices": [str(d) for d in (devices or jax.devices())][:8]}
  if run.status != "completed":
    return results
  results["data_path"]["measured"] = speed.time_sampling(config.data, sweep,
                                                         settings.batch_size, 0.3, 1)
  results["quantities"] = spec.analyze(settings, sweep, run)
  if jax.process_index() == 0:  # every process holds the parameters; one writes
    os.makedirs(config.workdir, exist_ok=True)
    np.savez(os.path.join(config.workdir, "params.npz"), W=run.params["W"], b=run.params["b"],
             eval_loss=run.eval_loss)
    results["figures"] = spec.figures(settings, sweep, run, results["quantities"],
                                      config.workdir)
  results["wall_seconds"] = round(time.perf_counter() - start, 3)
  results = jsonio.jsonable(results, digits=6)
  if jax.process_index() == 0:
    path = os.path.join(config.workdir, "results.json")
    jsonio.write_json_atomic(path, results)
    logging.info("wrote %s", path)
  return results
