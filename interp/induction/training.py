"""Train a small LM while keeping snapshots of analysis metrics: `interp.train.lm.run` plus a
snapshot hook.

A snapshot function of the parameters (head scores, ICL, ...) is evaluated at step 0, every
`snapshot_every` steps and at the end; its values are appended to `snapshots.jsonl` beside what
every LM run keeps (flags.json, model_config.json, data.json, metrics.jsonl, checkpoints/,
results.json; `interp.train.lm`). Running the same config again resumes from the latest
checkpoint; snapshot rows past it are dropped first, so the records read like one run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, NamedTuple

import jax
import numpy as np

from interp import choices
from interp.data import sources
from interp.models.config import TransformerConfig
from interp.train import lm
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig
from interp.train.run_config import EmbedsRun, RunConfig

Snapshot = Callable[[dict], dict]  # params -> {name: array}


# The induction runs' defaults for the settings every run shares.
DEFAULT_RUN = RunConfig(num_steps=1000, log_every=10, optimizer=OptimizerConfig(lr=1e-2),
                        checkpoint=CheckpointConfig(every_steps=500, keep=1))


@dataclasses.dataclass(frozen=True)
class TrainConfig(EmbedsRun):
  """Attributes:
    model: the architecture.
    run: the run folder (required), seed, mesh, num_steps, log_every, optimizer, checkpoint
      (`interp.train.run_config`).
    data: `pairs:MIN-MAX` or any `--data` spec of `interp.data.sources`.
    batch_size: as in `interp.train.lm.TrainLMConfig`.
    snapshot_every: evaluate the snapshot function every this many steps (0 = only at the end).
  """

  model: TransformerConfig
  run: RunConfig = DEFAULT_RUN
  data: str = "pairs:4-16"
  batch_size: int = 32
  snapshot_every: int = 25

  def __post_init__(self):
    sources.make_source(self.data, self.model.vocab_size)  # fails early on a bad spec
    choices.check_int("batch_size", self.batch_size)
    if self.snapshot_every < 0:
      raise ValueError(f"--snapshot_every={self.snapshot_every} must be non-negative")


class Trained(NamedTuple):
  params: dict          # host numpy arrays
  step: int
  status: str           # "completed" | "preempted"
  metrics: list[dict]   # rows of metrics.jsonl
  snapshots: list[dict]  # rows of snapshots.jsonl


def read_rows(path: str) -> list[dict]:
  """The rows of a JSONL file (a row cut short by a kill is skipped)."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:
        pass
  return rows


class SnapshotHook:
  """Loop hook: evaluates `fn(params)` every `every` steps and at the last, appends a row."""

  def __init__(self, fn: Snapshot, every: int, num_steps: int, path: str, start: int):
    self.fn, self.every, self.num_steps, self.path = fn, every, num_steps, path
    self.enabled = jax.process_index() == 0
    if self.enabled:  # drop rows past the resumed step
      rows = [r for r in read_rows(path) if r["step"] <= start]
      with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
      os.replace(path + ".tmp", path)

  def record(self, step: int, params) -> None:
    values = jax.tree.map(lambda x: np.asarray(x).tolist(), jax.device_get(self.fn(params)))
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": step, **values}) + "\n")

  def __call__(self, step: int, state, metrics) -> None:
    del metrics
    if (self.every and step % self.every == 0) or step == self.num_steps:
      self.record(step, state.params)

  def close(self) -> None:
    pass


def train(config: TrainConfig, snapshot: Snapshot | None = None) -> Trained:
  """Trains (or resumes) `config.model` in `config.workdir`, snapshotting as it goes."""
  workdir = os.path.abspath(config.run.workdir)
  snap_path = os.path.join(workdir, "snapshots.jsonl")

  def hooks(start, state):
    if snapshot is None:
      return []
    snap = SnapshotHook(snapshot, config.snapshot_every, config.run.num_steps, snap_path, start)
    if start == 0:
      snap.record(0, state.params)
    return [snap]

  lm_config = lm.TrainLMConfig(model=config.model, run=config.run.replace(workdir=workdir),
                               data=config.data, batch_size=config.batch_size)
  results, state = lm.run(lm_config, hooks)
  params = jax.tree.map(np.asarray, jax.device_get(state.params))
  return Trained(params=params, step=int(state.step), status=results["status"],
                 metrics=read_rows(os.path.join(workdir, "metrics.jsonl")),
                 snapshots=read_rows(snap_path))
