"""Metric writers (JSONL, optional TensorBoard), a progress line, and the NaN/Inf guard.

Rows of `metrics.jsonl` are `{"step": s, "loss": ..., ...}` where `s` counts the updates applied:
the row for s = 1 holds the loss of the first batch, measured before the first update. Only
process 0 writes files; every process checks for NaN/Inf so they all stop together.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from typing import Callable

import jax
from absl import logging

from interp import jsonio


def flatten(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}: nested results and flags as flat columns."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


class NonFiniteMetricError(FloatingPointError):
  """A logged metric was NaN or Inf."""


def to_host(metrics) -> dict[str, float]:
  """Scalar metrics (device arrays) as Python floats; blocks until the step has run."""
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def check_finite(metrics: dict[str, float], step: int) -> None:
  """Raises NonFiniteMetricError naming the NaN/Inf metric (the loss first) and the step."""
  bad = sorted((k for k, v in metrics.items() if not math.isfinite(v)), key=lambda k: k != "loss")
  if bad:
    others = ", ".join(f"{k}={metrics[k]}" for k in bad[1:])
    raise NonFiniteMetricError(
        f"metric {bad[0]!r} is {metrics[bad[0]]} at step {step}"
        f"{f' (also non-finite: {others})' if others else ''}; stopping. Checkpoints written "
        f"before this step are kept (the last one is intact); try a lower learning rate.")


class MetricWriter:
  """Appends metric rows to <workdir>/metrics.jsonl and, if tensorboardX imports, to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool | None = None, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled and tensorboard:
      try:
        import tensorboardX  # optional: not a dependency of interp
      except ImportError:
        logging.info("tensorboardX is not installed; writing metrics.jsonl only")
      else:
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """Drops rows past `step`, so a resumed run's log reads like an uninterrupted one."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [line for line in f if line.strip()]
    kept = []
    for line in rows:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line)
      except (ValueError, KeyError):
        pass  # a row cut short by a kill mid-write
    jsonio.write_text_atomic(self.path, "".join(kept))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    if self._tb is not None:
      for name, value in metrics.items():
        self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Progress:
  """A one-line progress report: step, main metrics, steps/s since the last report, ETA."""

  def __init__(self, num_steps: int, start_step: int,
               clock: Callable[[], float] = time.perf_counter):
    self.num_steps = num_steps
    self._clock = clock
    self._last = (start_step, clock())

  def line(self, step: int, metrics: dict[str, float]) -> str:
    now = self._clock()
    last_step, last_time = self._last
    self._last = (step, now)
    rate = (step - last_step) / max(now - last_time, 1e-9)
    eta = datetime.timedelta(seconds=round((self.num_steps - step) / max(rate, 1e-9)))
    shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    return f"step {step}/{self.num_steps} | {shown} | {rate:.1f} steps/s | ETA {eta}"


class MetricsHook:
  """Loop hook: every `every` steps (and at the last), fetch metrics, check, write, report."""

  def __init__(self, writer: MetricWriter, every: int, num_steps: int, start_step: int,
               clock: Callable[[], float] = time.perf_counter):
    self.writer, self.every, self.num_steps = writer, every, num_steps
    self.progress = Progress(num_steps, start_step, clock)
    self.last: dict[str, float] | None = None

  def __call__(self, step: int, state, metrics) -> None:
    del state
    if step % self.every and step != self.num_steps:
      return
    values = to_host(metrics)
    check_finite(values, step)
    self.writer.write(step, values)
    self.last = {"step": step, **values}
    if jax.process_index() == 0:
      logging.info("%s", self.progress.line(step, values))

  def close(self) -> None:
    self.writer.close()
