"""Train (or resume) every instance of a sweep: the compiled program of `interp.toy.program`
run through the shared train loop, with its records and checkpoints.

The run folder (`workdir`) holds:
  flags.json           this run's ToyTrainConfig (a resume with other flags logs what changed)
  sweep.json           the sweep's shape and digest (a resumed run refuses a different sweep)
  metrics.jsonl        loss (mean over instances), loss_max, grad_norm every `log_every` steps
  checkpoints/<step>/  Orbax checkpoints of the TrainState and the data position
The order of checks, restore and records is `interp.train.session`'s.
Running again with the same workdir resumes from the latest checkpoint, bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from interp import jsonio
from interp.toy.program import ToyTrainConfig, build, host_metrics  # noqa: F401 (re-exported)
from interp.toy.sweep import Sweep
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointMismatchError
from interp.train.session import Session


@dataclasses.dataclass
class ToyRun:
  """A finished (or preempted) run, on the host, real instances only."""

  params: dict                 # {"W": [I, m, n], "b": [I, n]} numpy
  eval_loss: np.ndarray        # [I]
  status: str                  # "completed" | "preempted"
  step: int
  timing: dict                 # wall, compile and train seconds, steps/s, model-steps/s
  final_metrics: dict | None


class _TimingHook:
  """Times the steps after the first (which includes compilation)."""

  def __init__(self, num_steps: int):
    self.num_steps, self.first, self.last = num_steps, None, None

  def __call__(self, step: int, state, metrics) -> None:
    del metrics
    if self.first is None:
      jax.block_until_ready(state.params)
      self.first = (step, time.perf_counter())
    elif step == self.num_steps:
      jax.block_until_ready(state.params)
      self.last = (step, time.perf_counter())

  def close(self) -> None:
    pass

  def rates(self, n_instances: int) -> dict:
    if self.first is None or self.last is None or self.last[0] == self.first[0]:
      return {}
    steps = self.last[0] - self.first[0]
    seconds = self.last[1] - self.first[1]
    return {"train_seconds": round(seconds, 3), "steps_per_s": steps / seconds,
            "model_steps_per_s": n_instances * steps / seconds}


def _to_host(tree):
  """The whole (global) arrays on every process's host."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def _check_sweep(workdir: str, sweep: Sweep) -> None:
  path = os.path.join(workdir, "sweep.json")
  if not os.path.exists(path):
    return
  saved = jsonio.read_json(path)
  if saved.get("digest") != sweep.digest():
    raise CheckpointMismatchError(
        f"--workdir={workdir} holds a run of another sweep ({path}: {saved}; this one: "
        f"{sweep.describe()}). Use a new --workdir, or the original flags.")


def train_toy(config: ToyTrainConfig, sweep: Sweep, devices: Sequence | None = None) -> ToyRun:
  """Trains (or resumes) every instance of `sweep`, then evaluates each on fresh samples.

  Args:
    config: the run; `config.run.workdir` "" trains without records or checkpoints.
    sweep: the per-instance table.
    devices: devices for the mesh (default all).
  Returns:
    The run's parameters and per-instance eval losses, real instances only.
  """
  start_time = time.perf_counter()
  program = build(config, sweep, devices)
  run = config.run
  with Session(run, program.mesh, check=lambda w: _check_sweep(w, sweep),
               label="toy run") as session:
    state = session.open(
        state_lib.abstract(program.init, program.state_shardings),
        lambda: jax.jit(program.init, out_shardings=program.state_shardings)(),
        lambda s: {"step": s, "seed": run.seed, "sweep": sweep.digest()},
        flags=config.to_dict(), records={"sweep.json": sweep.describe()},
        strict=("step", "sweep"))
    logging.info("toy run: %d instances (%d padded), chunk %d", program.n_real,
                 program.sweep.n_instances, program.chunk)
    timing_hook = _TimingHook(run.num_steps)
    state, stopped = session.train(host_metrics(program.step, program.n_real), state,
                                   lambda i: np.int32(i), [timing_hook])
  eval_loss = np.asarray(_to_host(program.evaluate(state.params)))[:program.n_real]
  params = {k: np.asarray(v)[:program.n_real] for k, v in _to_host(state.params).items()}
  timing = {"wall_seconds": round(time.perf_counter() - start_time, 3),
            "steps_this_call": run.num_steps - session.start, "chunk": program.chunk,
            "mesh": dict(program.mesh.shape), **timing_hook.rates(program.sweep.n_instances)}
  return ToyRun(params=params, eval_loss=eval_loss,
                status="preempted" if stopped else "completed", step=int(state.step),
                timing=timing,
                final_metrics=session.metrics_hook.last if session.metrics_hook else None)
