"""Orbax save-decision policies beyond a fixed interval: preemption and wall-clock time.

Both follow orbax's `SaveDecisionPolicy` protocol (`should_save(step, previous_steps, *,
context)`) and are combined with `FixedIntervalPolicy` under an `AnySavePolicy`. Every process
must reach the same decision at the same step, or a multi-process save would hang; each policy
says how it ensures that.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class TimeIntervalPolicy:
  """Orbax save policy: save when `seconds` passed on `clock` since the last save.

  On multi-process runs process 0's clock decides and the decision is broadcast, so every
  process saves at the same step.
  """

  def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
    self.seconds, self.clock = seconds, clock
    self.last = clock()

  def should_save(self, step, previous_steps, *, context) -> bool:
    del step, previous_steps, context
    due = self.clock() - self.last >= self.seconds
    if jax.process_count() > 1:
      due = bool(multihost_utils.broadcast_one_to_all(np.int32(due)))
    return due

  def saved(self) -> None:
    self.last = self.clock()


class PreemptionPolicy:
  """Orbax save policy: save at a preemption.

  Multi-process runs use orbax's signal (jax's preemption service, which every process agrees
  on). A single process has no such service, so this also catches SIGTERM (what SLURM and
  Kubernetes send before a kill): the next step saves and the run stops cleanly. A second
  SIGTERM kills at once.
  """

  def __init__(self, catch_sigterm: bool):
    self.signalled = False
    self._previous = None
    if (catch_sigterm and jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del frame
    if self.signalled:  # asked twice: stop waiting for the step to end
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
    logging.warning("SIGTERM: will save a checkpoint after the current step and stop")
    self.signalled = True

  def should_save(self, step, previous_steps, *, context) -> bool:
    del step, previous_steps
    return bool(context.reached_preemption or self.signalled)

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
