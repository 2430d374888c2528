"""Orbax checkpoints: when to save, keep the latest N, restore-or-init with fallback.

A checkpoint directory holds one folder per saved step (`<dir>/<step>/`), each with three items:
`state` (the TrainState, written by every process for its own shards), `data` (the data
position as JSON: the step and what was being read) and `checksums` (JSON: {"format", "leaves":
{leaf path: checksum}}, see `interp.parallel.checksum`). Orbax writes into a temporary folder and
renames it when complete, so a run killed mid-save leaves the previous checkpoint intact and the
partial one is cleaned up on the next start.

Checkpoints are verified, not trusted: a restored state's checksums are recomputed on device and
compared with the saved ones, so bytes changed on disk (which Orbax and TensorStore read back
without complaint) make the step unreadable, like a truncated one: it is set aside into
`<dir>_unreadable/` and the previous step is restored. Steps written before checksums were
recorded restore unverified, with a warning. A state holding NaN or Inf is never saved.

Orbax decides when to save: every `every_steps` steps, at a preemption, and optionally every
`every_secs` seconds (the last two policies are in `interp.train.save_policy`).
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import math
import os
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as orbax_policies

from interp import choices
from interp.parallel import checksum
from interp.train import metrics as metrics_lib
from interp.train.loop import StopTraining
from interp.train.save_policy import PreemptionPolicy, TimeIntervalPolicy


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Attributes:
    every_steps: save when the step count is a multiple of this.
    keep: how many of the latest checkpoints to keep.
    every_secs: also save when this many seconds passed since the last save (0 = off).
    async_save: write in a background thread (the device-to-host copy still blocks the step).
  """

  every_steps: int = dataclasses.field(default=100, metadata={"flag": "checkpoint_every"})
  keep: int = dataclasses.field(default=3, metadata={"flag": "keep_checkpoints"})
  every_secs: float = dataclasses.field(default=0.0, metadata={"flag": "checkpoint_every_secs"})
  async_save: bool = dataclasses.field(default=True, metadata={"flag": None})

  def __post_init__(self):
    choices.check_int("checkpoint_every", self.every_steps)
    choices.check_int("keep_checkpoints", self.keep)
    # Written so that NaN fails too (NaN < 0 is False).
    if not (math.isfinite(self.every_secs) and self.every_secs >= 0):
      raise ValueError(f"--checkpoint_every_secs={self.every_secs}: must be a finite number >= 0 "
                       "(0 = off)")


class CheckpointMismatchError(ValueError):
  """A checkpoint was written by a model of a different shape than the one being restored."""


def shape_mismatches(have, want, have_name: str, want_name: str) -> list[str]:
  """Human-readable differences in leaf names and shapes between two parameter trees."""
  def shapes(tree):
    return {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  a, b = shapes(have), shapes(want)
  return ([f"params{k} has shape {a[k]} in {have_name} but {b[k]} in {want_name}"
           for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
          + [f"params{k} is missing from {have_name}" for k in sorted(b.keys() - a.keys())]
          + [f"params{k} is in {have_name} but not in {want_name}"
             for k in sorted(a.keys() - b.keys())])


class _HideOrbaxInfo(std_logging.Filter):
  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logs() -> None:
  """Hides orbax's INFO lines (dozens per save); its warnings and errors still show."""
  absl_logger = std_logging.getLogger("absl")
  if not any(isinstance(f, _HideOrbaxInfo) for f in absl_logger.filters):
    absl_logger.addFilter(_HideOrbaxInfo())




def _handlers():
  return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
          "checksums": ocp.JsonCheckpointHandler()}


def _refuse_non_finite(step: int, non_finite: tuple[str, ...]) -> None:
  more = f" and {len(non_finite) - 4} more" if len(non_finite) > 4 else ""
  others = (f" (also: {', '.join('state' + p for p in non_finite[1:4])}{more})"
            if non_finite[1:] else "")
  raise metrics_lib.NonFiniteMetricError(
      f"state{non_finite[0]} holds NaN or Inf after step {step}{others}; not saving it, "
      f"stopping. Checkpoints written before this step are kept (the last one is intact); try "
      f"a lower learning rate.")


class Checkpointer:
  """A CheckpointManager for TrainStates plus the data position, with restore-or-init."""

  def __init__(self, directory: str, config: CheckpointConfig = CheckpointConfig(),
               clock: Callable[[], float] = time.monotonic, catch_sigterm: bool = True):
    self.directory = os.path.abspath(directory)
    self.preemption = PreemptionPolicy(catch_sigterm)
    self.timer = TimeIntervalPolicy(config.every_secs, clock) if config.every_secs else None
    save_policies = [orbax_policies.FixedIntervalPolicy(config.every_steps), self.preemption]
    if self.timer is not None:
      save_policies.append(self.timer)
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=orbax_policies.AnySavePolicy(save_policies),
        preservation_policy=orbax_policies.LatestN(config.keep),
        cleanup_tmp_directories=True,  # partial saves of a killed run
        enable_async_checkpointing=config.async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=_handlers())
    self._warned_unverified = False

  def should_save(self, step: int) -> bool:
    return self.manager.should_save(step)

  def save(self, step: int, state, data_position: dict) -> None:
    """Saves `state` with its data position and checksums.

    Raises:
      NonFiniteMetricError: a floating-point leaf of `state` holds NaN or Inf (nothing saved).
    """
    prints = checksum.fingerprint(state)
    if prints.non_finite:
      _refuse_non_finite(step, prints.non_finite)
    sums = {"format": checksum.FORMAT, "leaves": prints.checksums}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position),
        checksums=ocp.args.JsonSave(sums)), force=True)
    if self.timer is not None:
      self.timer.saved()

  def preempted(self, step: int) -> bool:
    return self.preemption.signalled or self.manager.reached_preemption(step)

  def restore(self, target) -> tuple[Any, dict] | None:
    """Restores the newest readable checkpoint into `target`'s shapes and shardings.

    Args:
      target: a TrainState of ShapeDtypeStructs with shardings (`interp.train.state.abstract`).
    Returns:
      (state, data position), or None when there is no checkpoint yet.
    Raises:
      CheckpointMismatchError: the checkpoint holds parameters of other names or shapes.
      RuntimeError: checkpoints exist but none could be read (or verified).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    failed = []
    for step in steps:
      path = os.path.join(self.directory, str(step))
      self._check_params(step, path, target.params)
      items = {"state": ocp.args.StandardRestore(target), "data": ocp.args.JsonRestore()}
      verified = os.path.isdir(os.path.join(path, "checksums"))
      if verified:
        items["checksums"] = ocp.args.JsonRestore()
      elif not self._warned_unverified:
        self._warned_unverified = True
        logging.warning("checkpoint %s has no checksums (written before they were recorded); "
                        "restoring it unverified", path)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if verified:
          self._verify(path, restored.state, restored.checksums)
      except Exception as e:  # pylint: disable=broad-except
        if "not compatible with the stored shape" in str(e):
          raise CheckpointMismatchError(f"checkpoint {path} does not match this model: {e}") from e
        logging.warning("checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                        path, type(e).__name__, str(e).splitlines()[0][:300])
        failed.append((step, e))
        continue
      self._set_aside([s for s, _ in failed])
      logging.info("restored %s (data position %s)", path, restored.data)
      return restored.state, restored.data
    if failed:
      details = "; ".join(f"step {s}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                          for s, e in failed)
      raise RuntimeError(f"no checkpoint in {self.directory} could be restored ({details})")
    return None

  @staticmethod
  def _verify(path: str, state, saved: dict) -> None:
    """Raises CorruptCheckpointError naming the first leaf whose checksum differs."""
    if not isinstance(saved, dict) or saved.get("format") != checksum.FORMAT:
      raise checksum.CorruptCheckpointError(f"{path}/checksums is not a {checksum.FORMAT} record")
    bad = checksum.first_mismatch(saved["leaves"], checksum.fingerprint(state).checksums)
    if bad is not None:
      raise checksum.CorruptCheckpointError(f"state{bad} does not match the checksum saved with it "
                                   "(the files changed on disk)")

  def _check_params(self, step: int, path: str, target_params) -> None:
    """Compares parameter names and shapes with the checkpoint's metadata, before reading."""
    try:
      stored = self.manager.item_metadata(step)["state"].tree["params"]
    except Exception:  # pylint: disable=broad-except
      return  # unreadable metadata: let the restore itself decide whether the step is corrupt
    problems = shape_mismatches(stored, target_params, "the checkpoint", "this model")
    if problems:
      more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
      raise CheckpointMismatchError(
          f"checkpoint {path} was written by a different model config: "
          f"{'; '.join(problems[:3])}{more}. Use a new --workdir, or the original model flags.")

  def _set_aside(self, steps) -> None:
    """Moves unreadable checkpoints out of the way (kept for inspection, not deleted), so the
    run can save those steps again."""
    if not steps:
      return
    aside = self.directory.rstrip("/") + "_unreadable"
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        dest = os.path.join(aside, f"{step}-{int(time.time())}")
        os.rename(os.path.join(self.directory, str(step)), dest)
        logging.warning("moved unreadable checkpoint %d to %s", step, dest)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("interp_checkpoint_set_aside")
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for any save in flight, so what was started is complete on disk."""
    try:
      self.manager.wait_until_finished()
      self.manager.close()
    finally:
      self.preemption.close()


class CheckpointHook:
  """Loop hook: saves when orbax says so and at the last step; stops after a preemption save.

  A state is only saved once its metrics are finite and its own arrays are too (the metrics are
  measured before the update that made the state), so a diverged run never overwrites its last
  good checkpoint.
  """

  def __init__(self, checkpointer: Checkpointer, num_steps: int,
               data_position: Callable[[int], dict]):
    self.ckpt, self.num_steps, self.data_position = checkpointer, num_steps, data_position

  def __call__(self, step: int, state, metrics) -> None:
    final = step == self.num_steps
    if not (final or self.ckpt.should_save(step)):
      return
    metrics_lib.check_finite(metrics_lib.to_host(metrics), step)
    self.ckpt.save(step, state, self.data_position(step))
    if not final and self.ckpt.preempted(step):
      self.ckpt.wait()
      raise StopTraining(f"preempted: saved step {step} in {self.ckpt.directory}; run the same "
                         "command again to resume")

  def close(self) -> None:
    self.ckpt.close()
