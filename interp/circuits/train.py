"""Train a small LM on any token source, keeping snapshots of analysis metrics as it trains.

The same compiled programs, loss, checkpoints and loop as `interp.train.lm.train_lm`; two
differences: the source may be one of `interp.circuits.data` (`pairs:MIN-MAX`), and a snapshot
function of the parameters (head scores, ICL, ...) is evaluated every `snapshot_every` steps
and at step 0, its values appended to `snapshots.jsonl`. The run folder holds:

  config.json          this run's TrainConfig
  model_config.json    the TransformerConfig; a later run with another one is refused
  metrics.jsonl        training loss, accuracy, grad norm every `log_every` steps
  snapshots.jsonl      {"step": s, name: value (nested lists for arrays)} per snapshot
  checkpoints/<step>/  Orbax checkpoints (train state + data position)

Running the same config again resumes from the latest checkpoint; rows of metrics.jsonl and
snapshots.jsonl past it are dropped first, so the records read like an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, NamedTuple

import jax
import numpy as np
from absl import logging

from interp.circuits import data as data_lib
from interp.data import sources
from interp.models.config import TransformerConfig
from interp.parallel import mesh as mesh_lib
from interp.train import lm, loop
from interp.train import metrics as metrics_lib
from interp.train.checkpoint import CheckpointConfig, CheckpointHook, Checkpointer
from interp.train.optim import OptimizerConfig

Snapshot = Callable[[dict], dict]  # params -> {name: array}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Attributes:
    workdir: the run folder.
    model: the architecture.
    data: `pairs:MIN-MAX` or any `--data` spec of `interp.data.sources`.
    batch_size, num_steps, seed, mesh, log_every: as in `interp.train.lm.TrainLMConfig`.
    snapshot_every: evaluate the snapshot function every this many steps (0 = only at the end).
    optimizer, checkpoint: AdamW and checkpoint settings.
  """

  workdir: str
  model: TransformerConfig
  data: str = "pairs:4-16"
  batch_size: int = 32
  num_steps: int = 1000
  seed: int = 0
  mesh: str = "data:-1,model:1"
  log_every: int = 10
  snapshot_every: int = 25
  optimizer: OptimizerConfig = OptimizerConfig(lr=1e-2)
  checkpoint: CheckpointConfig = CheckpointConfig(every_steps=500, keep=1)

  def __post_init__(self):
    data_lib.make_source(self.data, self.model.vocab_size)  # fails early on a bad spec
    if min(self.batch_size, self.num_steps, self.log_every) <= 0 or self.snapshot_every < 0:
      raise ValueError(f"batch_size, num_steps and log_every must be positive, snapshot_every "
                       f"non-negative: {self}")

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out["model"] = self.model.to_dict()
    return out


class Trained(NamedTuple):
  params: dict          # host numpy arrays
  step: int
  status: str           # "completed" | "preempted"
  metrics: list[dict]   # rows of metrics.jsonl
  snapshots: list[dict]  # rows of snapshots.jsonl


def _write_json(workdir: str, name: str, value) -> None:
  tmp = os.path.join(workdir, name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(workdir, name))


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
  mesh = mesh_lib.make_mesh(config.mesh)
  source = data_lib.make_source(config.data, config.model.vocab_size)
  workdir = os.path.abspath(config.workdir)
  lm.check_model_config(workdir, config.model)
  sources.check_batch_size(config.batch_size, mesh)
  programs = lm._programs(config.model, config.optimizer, mesh)  # pylint: disable=protected-access
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint)
  try:
    restored = ckpt.restore(programs.target)
  except BaseException:
    ckpt.close()
    raise
  state = programs.init(jax.random.key(config.seed)) if restored is None else restored[0]
  start = int(state.step)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    _write_json(workdir, "config.json", config.to_dict())
    _write_json(workdir, "model_config.json", config.model.to_dict())
  logging.info("%s %s at step %d of %d", "resuming" if restored else "starting", workdir, start,
               config.num_steps)

  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  writer.truncate_after(start)
  hooks = [metrics_lib.MetricsHook(writer, config.log_every, config.num_steps, start)]
  snap_path = os.path.join(workdir, "snapshots.jsonl")
  if snapshot is not None:
    snap = SnapshotHook(snapshot, config.snapshot_every, config.num_steps, snap_path, start)
    if start == 0:
      snap.record(0, state.params)
    hooks.append(snap)
  position = lambda s: {"step": s, "data": config.data, "seed": config.seed}
  hooks.append(CheckpointHook(ckpt, config.num_steps, position))
  batches = sources.make_batches(source, mesh, config.seed, config.batch_size,
                                 config.model.n_ctx + 1)
  state, stopped = loop.run(programs.step, state, batches, config.num_steps, hooks)
  params = jax.tree.map(np.asarray, jax.device_get(state.params))
  return Trained(params=params, step=int(state.step),
                 status="preempted" if stopped else "completed",
                 metrics=read_rows(writer.path), snapshots=read_rows(snap_path))
