"""The one training loop: a jitted pure step, a step-indexed batch function, and I/O hooks.

The step (`interp.train.state.make_step`) does no I/O. Everything with side effects (metrics,
checkpoints, progress, profiling) is a hook: `hook(step, state, metrics)` is called after every
update with `step` = number of updates applied, and `hook.close()` always runs at the end, also
when a hook raised, so a pending asynchronous checkpoint is finished before an error propagates.
A hook ends the run early and cleanly by raising `StopTraining` (e.g. after a preemption save).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import jax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P, Sharding

from interp.train.state import TrainState


class Hook(Protocol):
  def __call__(self, step: int, state: TrainState, metrics: dict) -> None: ...

  def close(self) -> None: ...


class StopTraining(Exception):
  """Raised by a hook to end training after the current step, without an error."""


class RetraceError(RuntimeError):
  """The train step was traced more often than allowed: shapes, dtypes or shardings changed."""


def compile_step(step_fn: Callable, state_shardings: TrainState, batch_sharding: Sharding,
                 max_traces: int = 1, metrics_sharding: Sharding | None = None):
  """jit(step_fn) with in/out shardings, the state donated, and a retrace guard.

  Args:
    step_fn: pure (state, batch) -> (state, metrics).
    state_shardings: TrainState-shaped NamedShardings (`interp.train.state.shardings`).
    batch_sharding: sharding of the batch (rows over `data`).
    max_traces: how many traces are allowed before RetraceError; each trace means a
      recompilation, which in a training loop is almost always a bug.
    metrics_sharding: sharding of the metrics; default replicated. Per-instance metrics (toy
      sweeps) stay sharded over `data`, so logging them needs no all-reduce per step.
  Returns:
    The jitted step; its trace count is `step.traces()`.
  """
  count = [0]

  def counted(state, batch):
    count[0] += 1
    if count[0] > max_traces:
      raise RetraceError(
          f"train step traced {count[0]} times (allowed {max_traces}): the state or batch "
          f"changed shape, dtype or sharding between steps (batch: {batch.shape} {batch.dtype})")
    return step_fn(state, batch)

  if metrics_sharding is None:
    metrics_sharding = NamedSharding(batch_sharding.mesh, P())
  jitted = jax.jit(counted, in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, metrics_sharding), donate_argnums=0)
  jitted.traces = lambda: count[0]
  return jitted


def one_step_in_flight() -> bool:
  """Whether steps must run one at a time: CPU runs with collectives (several CPU devices).

  With several steps dispatched ahead, the CPU runtime's device threads can enter the
  collectives of different steps in different orders and wait on each other until XLA's
  rendezvous timeout kills the process (seen with 2 processes x 4 devices on data:4,model:2 and
  50 steps between metric fetches, and with 1 process x 8 simulated devices when batches are
  generated on device, so nothing on the host paces the loop). Waiting for each step costs
  nothing measurable on CPU; accelerators keep async dispatch.
  """
  return jax.default_backend() == "cpu" and jax.device_count() > 1


def run(step: Callable, state: TrainState, batches: Callable[[int], Any], num_steps: int,
        hooks: Sequence[Hook] = (), sync: bool | None = None) -> tuple[TrainState, bool]:
  """Trains from `state.step` up to `num_steps`.

  Args:
    step: the jitted step from `compile_step`.
    state: the initial or restored state (donated to the first step).
    batches: step index -> global batch; a pure function of the index, so resumes are exact.
    num_steps: total number of updates of the whole run (not of this call).
    hooks: called after every update, in order; closed in order at the end.
    sync: wait for each step before dispatching the next (None: `one_step_in_flight()`).
  Returns:
    (final state, stopped_early) where stopped_early says a hook raised StopTraining.
  """
  start = int(jax.device_get(state.step))
  sync = one_step_in_flight() if sync is None else sync
  stopped = False
  try:
    for i in range(start, num_steps):
      state, metrics = step(state, batches(i))
      if sync:
        jax.block_until_ready(metrics)
      for hook in hooks:
        hook(i + 1, state, metrics)
  except StopTraining as stop:
    logging.warning("training stopped early: %s", stop)
    stopped = True
  except BaseException:
    _close_all(hooks, raise_errors=False)  # the run's own error is the one to report
    raise
  _close_all(hooks, raise_errors=True)
  return state, stopped


def _close_all(hooks: Sequence[Hook], raise_errors: bool) -> None:
  """Closes every hook, even when one fails, so the checkpoint writer always finishes."""
  errors = []
  for hook in hooks:
    try:
      hook.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("closing hook %r failed", hook)
      errors.append(e)
  if errors and raise_errors:
    raise errors[0]
