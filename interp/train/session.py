"""One training run from start to results: the session every trainer runs through.

Vocabulary:
  run folder     `RunConfig.workdir`; holds flags.json, the records, metrics.jsonl,
                 checkpoints/<step>/ and results.json (`interp.train.run_folder`)
  records        JSON files that say what is trained (model or dictionary config, data, sweep);
                 a trainer's `check` refuses a run folder whose records describe another run
  data position  what the checkpointed state has read (`step` plus, e.g., data spec and seed),
                 saved beside it; on resume the `strict` keys must equal this run's and the
                 `warn` keys are only logged when they differ
  no-workdir     a session without a run folder (tests, notebooks, benchmarks): nothing is
                 restored or written, and only the trainer's own hooks run

The order is fixed, and it is the point of having one session: check the records, build the
programs (`programs`), restore or initialise (`open`), write the records (only now, and only on
process 0, so that a refused run never overwrites the records of the real one), run the loop with
the metrics hook first and the checkpoint hook last (`train`), write results.json (`finish`).
The checkpointer is closed on every path out, also when a restore, an init or a check fails.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import jax
from absl import logging

from interp.parallel import mesh as mesh_lib
from interp.train import loop
from interp.train import metrics as metrics_lib
from interp.train import run_folder
from interp.train.checkpoint import CheckpointHook, CheckpointMismatchError, Checkpointer
from interp.train.run_config import RunConfig
from interp.train.state import TrainState


class Session:
  """A run of one trainer: see the module docstring for the order of its calls.

  Attributes:
    run: the shared settings.
    mesh: the mesh (built once here, unless the caller passes the one it already has).
    workdir: the absolute run folder, or "" for a run without one.
    start: the step the loop starts from (after `open`).
    restored: whether `open` resumed from a checkpoint.
    metrics_hook: the run folder's metrics hook (after `train`; None without a workdir).
  """

  def __init__(self, run: RunConfig, mesh=None, check: Callable[[str], None] | None = None,
               label: str = ""):
    """Builds the mesh (unless given) and checks the run folder's records.

    Args:
      run: the shared settings.
      mesh: the mesh to use; default `make_mesh(run.mesh_config)`.
      check: workdir -> None; raises when the folder's records describe another run.
      label: what the start-up log line calls the run ("resuming <label> at step ...").
    """
    self.label = label
    self.start_time = time.time()
    self.run = run
    self.mesh = mesh_lib.make_mesh(run.mesh_config) if mesh is None else mesh
    self.workdir = os.path.abspath(run.workdir) if run.workdir else ""
    self.primary = jax.process_index() == 0
    self.ckpt: Checkpointer | None = None
    self.start, self.restored, self.metrics_hook = 0, False, None
    self._position: Callable[[int], dict] | None = None
    if self.workdir:
      run_folder.check_writable(run.workdir)
    if self.workdir and check is not None:
      check(self.workdir)

  def _saved_mesh(self) -> str | None:
    return run_folder.saved_flag(self.workdir, "mesh") if self.workdir else None

  def programs(self, build: Callable[[], Any]):
    """`build()`, with a mesh that cannot hold a resumed run explained against the saved one's.

    A checkpoint restores into any mesh (Orbax reads each device's slice for the new shardings,
    also with another number of processes); it cannot when the new mesh does not divide a
    parameter or the batch, and then the error names both meshes.
    """
    try:
      return build()
    except ValueError as e:
      saved = self._saved_mesh()
      if (not self.workdir or not os.path.isdir(os.path.join(self.workdir, "checkpoints"))
          or saved in (None, self.run.mesh)):
        raise
      raise CheckpointMismatchError(
          f"cannot resume --workdir={self.workdir} (checkpointed with --mesh={saved}) on "
          f"--mesh={self.run.mesh} ({dict(self.mesh.shape)}, {jax.process_count()} "
          f"process(es)): {e} Checkpoints reshard to any mesh whose axes divide the parameter "
          f"and batch dimensions; pick such a --mesh (e.g. --mesh={saved}).") from e

  def open(self, target: TrainState, init: Callable[[], TrainState],
           position: Callable[[int], dict], flags: dict, records: dict[str, Any],
           strict: Sequence[str] = ("step",), warn: Sequence[str] = ()) -> TrainState:
    """Restores the newest readable checkpoint, or initialises; then writes the records.

    Args:
      target: the abstract state with shardings (the restore target).
      init: () -> the initial state; called only when there is nothing to restore.
      position: step -> the data position saved beside that step's state.
      flags: the trainer's config as a flat dict (flags.json).
      records: file name -> JSON value, written beside flags.json.
      strict, warn: data-position keys that must match (else RuntimeError) or are logged.
    Returns:
      The state to train from.
    """
    self._position = position
    if self.workdir:
      self.ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"), self.run.checkpoint)
    try:
      restored = self.ckpt.restore(target) if self.ckpt else None
      if restored is None:
        state = init()
      else:
        state, saved = restored
        self._check_position(saved, position(int(state.step)), strict, warn)
        saved_mesh = self._saved_mesh()
        if saved_mesh not in (None, self.run.mesh):
          logging.info("resharded the checkpoint of step %d from --mesh=%s to --mesh=%s (%d "
                       "process(es))", int(state.step), saved_mesh, self.run.mesh,
                       jax.process_count())
      if self.workdir and self.primary:
        run_folder.record_flags(self.workdir, flags)
        for name, value in records.items():
          run_folder.write_json(self.workdir, name, value)
    except BaseException:
      self.close()
      raise
    self.start, self.restored = int(state.step), restored is not None
    verb = "resuming" if self.restored else "starting"
    logging.info("%s at step %d of %d on mesh %s", f"{verb} {self.label}".strip(), self.start,
                 self.run.num_steps, dict(self.mesh.shape))
    return state

  @staticmethod
  def _check_position(saved: dict, expected: dict, strict: Sequence[str],
                      warn: Sequence[str]) -> None:
    if any(saved.get(k) != expected[k] for k in strict):
      want = ", ".join(f"{k} {expected[k]}" for k in strict)
      raise RuntimeError(f"checkpoint data position {saved} does not match its state ({want}); "
                         "the checkpoint is inconsistent")
    if any(saved.get(k) != expected[k] for k in warn):
      now = " ".join(f"--{k}={expected[k]}" for k in warn)
      logging.warning("resuming with %s, but the checkpoint was trained on %s", now, saved)

  def train(self, step: Callable, state: TrainState, batches: Callable[[int], Any],
            hooks: Sequence[loop.Hook] = (), tensorboard: bool = False):
    """Runs the loop to `run.num_steps`: metrics hook, `hooks`, checkpoint hook.

    Args:
      step: the compiled step; state: from `open`; batches: step index -> global batch.
      hooks: the trainer's own hooks (run after the metrics hook, before the checkpoint).
      tensorboard: also write TensorBoard events beside metrics.jsonl.
    Returns:
      (final state, stopped early by a preemption).
    """
    all_hooks = []
    if self.workdir:
      writer = metrics_lib.MetricWriter(self.workdir, tensorboard=tensorboard)
      writer.truncate_after(self.start)
      self.metrics_hook = metrics_lib.MetricsHook(writer, self.run.log_every,
                                                  self.run.num_steps, self.start)
      all_hooks.append(self.metrics_hook)
    all_hooks += hooks
    if self.ckpt is not None:
      all_hooks.append(CheckpointHook(self.ckpt, self.run.num_steps, self._position))
    try:
      return loop.run(step, state, batches, self.run.num_steps, all_hooks)
    finally:
      self.ckpt = None  # the loop closed it with the hooks, on every path

  def final_metrics(self) -> dict | None:
    """The last logged metrics (from disk when this call trained no step of its own)."""
    if self.metrics_hook is None:
      return None
    return self.metrics_hook.last or run_folder.last_row(self.metrics_hook.writer.path)

  def finish(self, state: TrainState, stopped: bool, **extra) -> dict:
    """The results (status, step, wall_s, final metrics, `extra`); results.json on completion.

    Returns:
      The results dict; "final" is the last logged metrics unless `extra` gives it.
    """
    results = {"status": "preempted" if stopped else "completed", "step": int(state.step),
               "wall_s": round(time.time() - self.start_time, 3), **extra}
    results.setdefault("final", self.final_metrics())
    if self.workdir and self.primary and not stopped:
      run_folder.write_json(self.workdir, "results.json", results)
    return results

  def close(self) -> None:
    """Finishes any save in flight and releases the checkpointer (idempotent)."""
    ckpt, self.ckpt = self.ckpt, None
    if ckpt is not None:
      ckpt.close()

  def __enter__(self) -> Session:
    return self

  def __exit__(self, *exc) -> None:
    self.close()  # a failure between `open` and `train` still finishes the checkpointer
