"""Train a byte-level language model: the library behind `experiments/train_lm.py`.

The run folder (`workdir`) holds:
  flags.json           this run's TrainLMConfig (the latest invocation's, if resumed)
  model_config.json    the TransformerConfig; a later run with another one is refused
  data.json            what the data source is (for text: token count and content hash)
  metrics.jsonl        one row per logged step (`interp.train.metrics`)
  checkpoints/<step>/  Orbax checkpoints: train state + data position (`interp.train.checkpoint`)
  results.json         final metrics, written when the run completes

Running the same config with the same workdir again resumes from the latest checkpoint and,
because batches are a pure function of (seed, step), ends with bit-identical parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from interp.data import sources
from interp.models import sharded, transformer
from interp.models.config import TransformerConfig
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd
from interp.train import compile_only as compile_lib
from interp.train import loop
from interp.train import metrics as metrics_lib
from interp.train import run_folder
from interp.train import state as state_lib
from interp.train.checkpoint import (CheckpointConfig, CheckpointHook, CheckpointMismatchError,
                                     Checkpointer, shape_mismatches)
from interp.train.optim import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class TrainLMConfig:
  """Attributes:
    workdir: the run folder.
    model: the architecture (vocab_size 256 for byte-level text).
    data: a `--data` spec (`interp.data.sources`).
    batch_size: global batch size (rows of n_ctx + 1 tokens); a multiple of the data axis.
    num_steps: total updates.
    seed: parameter init and data order.
    mesh: `--mesh` spec (`interp.parallel.mesh.MeshConfig.parse`).
    log_every: metrics are fetched, checked for NaN/Inf and written every this many steps.
    optimizer: AdamW settings (`interp.train.optim`).
    checkpoint: when to save and how many to keep (`interp.train.checkpoint`).
  """

  workdir: str
  model: TransformerConfig
  data: str = "corpus"
  batch_size: int = 16
  num_steps: int = 300
  seed: int = 0
  mesh: str = "data:-1,model:1"
  log_every: int = 20
  optimizer: OptimizerConfig = OptimizerConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()

  def __post_init__(self):
    sources.DataSpec.parse(self.data)
    mesh_lib.MeshConfig.parse(self.mesh)
    positive = {"num_steps": self.num_steps, "log_every": self.log_every,
                "batch_size": self.batch_size, "n_ctx": self.model.n_ctx}
    for name, value in positive.items():
      if value <= 0:
        raise ValueError(f"--{name}={value} must be positive")
    if self.seed < 0:
      raise ValueError(f"--seed={self.seed} must be non-negative")

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out["model"] = self.model.to_dict()
    return out


def lm_loss(cfg: TransformerConfig, mesh, act_rules: shd.Rules = shd.ACT_RULES):
  """Next-token cross-entropy (nats) on [batch, n_ctx + 1] token windows, plus accuracy."""
  def loss_fn(params, batch):
    with shd.activation_rules(mesh, act_rules):  # inside the traced function, as it must be
      logits, _ = transformer.forward(cfg, params, batch[:, :-1])
    targets = batch[:, 1:]
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == targets)
    return nll.mean(), {"accuracy": accuracy}
  return loss_fn


def check_model_config(workdir: str, cfg: TransformerConfig) -> None:
  """Refuses a workdir whose model_config.json describes another model, naming what differs."""
  path = os.path.join(workdir, "model_config.json")
  fields = run_folder.config_changes(workdir, "model_config.json", cfg.to_dict())
  if not fields:
    return
  with open(path) as f:
    saved = json.load(f)
  try:
    old = TransformerConfig.from_dict(saved)
    shapes = lambda c: jax.eval_shape(lambda: transformer.init_params(c, jax.random.key(0)))
    params = shape_mismatches(shapes(old), shapes(cfg), "the saved run", "this one")
  except Exception:  # pylint: disable=broad-except
    params = []  # an older config schema: the field list says enough
  detail = "; ".join(params[:3]) or "same parameter shapes"
  if len(params) > 3:
    detail += f" (and {len(params) - 3} more)"
  raise CheckpointMismatchError(
      f"--workdir={workdir} holds a run with a different model config ({path}): "
      f"{', '.join(fields)}. Parameters: {detail}. Use a new --workdir, or the original flags.")


class _Programs(NamedTuple):
  init: Callable          # jitted key -> TrainState, placed in its shardings
  step: Callable          # jitted, donating (state, batch) -> (state, metrics)
  target: state_lib.TrainState  # abstract state with shardings: the restore target


@functools.lru_cache(maxsize=4)
def _programs(model: TransformerConfig, optim: OptimizerConfig, mesh) -> _Programs:
  """Init and step for one model, optimizer and mesh, memoised so that another run of the same
  shapes in this process (a notebook, a sweep, the tests) reuses the compiled programs."""
  optimizer = optim.build()
  init = state_lib.init_fn(lambda key: transformer.init_params(model, key), optimizer)
  key = jax.random.key(0)  # shapes only
  abstract_params = jax.eval_shape(init, key).params
  rules = sharded.rules_for(model, mesh, shd.PARAM_RULES)
  param_shardings = mesh_lib.param_shardings(mesh, transformer.param_axes(abstract_params),
                                             abstract_params, rules)
  state_shardings = state_lib.shardings(optimizer, abstract_params, param_shardings, mesh)
  step = loop.compile_step(state_lib.make_step(lm_loss(model, mesh), optimizer), state_shardings,
                           mesh_lib.batch_sharding(mesh))
  return _Programs(init=jax.jit(init, out_shardings=state_shardings), step=step,
                   target=state_lib.abstract(init, state_shardings, key))


def _record_run(workdir: str, config: TrainLMConfig, source) -> None:
  """Writes flags.json, model_config.json and data.json (process 0); warns on changed flags."""
  run_folder.record_flags(workdir, config.to_dict())
  run_folder.write_json(workdir, "model_config.json", config.model.to_dict())
  run_folder.write_json(workdir, "data.json", source.describe())


def _check_position(position: dict, step: int, config: TrainLMConfig) -> None:
  if position.get("step") != step:
    raise RuntimeError(f"checkpoint data position {position} does not match its state's step "
                       f"{step}; the checkpoint is inconsistent")
  if position.get("data") != config.data or position.get("seed") != config.seed:
    logging.warning("resuming with --data=%s --seed=%d, but the checkpoint was trained on %s",
                    config.data, config.seed, position)


def _saved_mesh(workdir: str) -> str | None:
  """The --mesh of the run that last started in `workdir` (from its flags.json), if any."""
  return run_folder.saved_flag(workdir, "mesh")


def _programs_for_resume(config: TrainLMConfig, mesh, workdir: str) -> _Programs:
  """`_programs`, with a mesh that cannot hold the run explained against the saved run's.

  A checkpoint restores into any mesh (Orbax reads each device's slice for the new shardings,
  also with another number of processes); it cannot when the new mesh does not divide a
  parameter or the batch, and then the error names both meshes.
  """
  try:
    sources.check_batch_size(config.batch_size, mesh)
    return _programs(config.model, config.optimizer, mesh)
  except ValueError as e:
    saved_mesh = _saved_mesh(workdir)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")) or saved_mesh in (None,
                                                                                  config.mesh):
      raise
    raise CheckpointMismatchError(
        f"cannot resume --workdir={workdir} (checkpointed with --mesh={saved_mesh}) on "
        f"--mesh={config.mesh} ({dict(mesh.shape)}, {jax.process_count()} process(es)): {e} "
        f"Checkpoints reshard to any mesh whose axes divide the parameter and batch dimensions; "
        f"pick such a --mesh (e.g. --mesh={saved_mesh}).") from e


def train_lm(config: TrainLMConfig) -> dict:
  """Trains (or resumes) the run in `config.workdir`.

  Returns:
    The results: status ("completed" or "preempted"), step, final logged metrics, wall time.
  """
  return run(config)[0]


def run(config: TrainLMConfig,
        extra_hooks: Callable[[int, state_lib.TrainState], list] | None = None):
  """`train_lm` that also returns the final TrainState, with experiment-specific loop hooks.

  Args:
    extra_hooks: (start step, initial or restored state) -> hooks run after the metrics hook
      and before the checkpoint hook (e.g. snapshots of analysis metrics during training).
  Returns:
    (results, final state).
  """
  start_time = time.time()
  mesh = mesh_lib.make_mesh(config.mesh)
  source = sources.make_source(config.data, config.model.vocab_size)
  workdir = os.path.abspath(config.workdir)
  check_model_config(workdir, config.model)
  primary = jax.process_index() == 0

  programs = _programs_for_resume(config, mesh, workdir)
  key = jax.random.key(config.seed)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint)
  try:
    restored = ckpt.restore(programs.target)
  except BaseException:
    ckpt.close()
    raise
  if restored is None:
    state = programs.init(key)
  else:
    state, position = restored
    _check_position(position, int(state.step), config)
    if _saved_mesh(workdir) not in (None, config.mesh):
      logging.info("resharded the checkpoint of step %d from --mesh=%s to --mesh=%s (%d "
                   "process(es))", int(state.step), _saved_mesh(workdir), config.mesh,
                   jax.process_count())
  start = int(state.step)
  if primary:  # only now: a run refused above must not overwrite the records of the real one
    _record_run(workdir, config, source)
  logging.info("%s at step %d of %d on mesh %s", "resuming" if restored else "starting", start,
               config.num_steps, dict(mesh.shape))

  writer = metrics_lib.MetricWriter(workdir)
  writer.truncate_after(start)
  metrics_hook = metrics_lib.MetricsHook(writer, config.log_every, config.num_steps, start)
  position = lambda s: {"step": s, "data": config.data, "seed": config.seed}
  hooks = [metrics_hook, *(extra_hooks(start, state) if extra_hooks else []),
           CheckpointHook(ckpt, config.num_steps, position)]
  batches = sources.make_batches(source, mesh, config.seed, config.batch_size,
                                 config.model.n_ctx + 1)
  state, stopped = loop.run(programs.step, state, batches, config.num_steps, hooks)

  results = {"status": "preempted" if stopped else "completed",
             "step": int(state.step), "wall_s": round(time.time() - start_time, 3),
             "final": metrics_hook.last or run_folder.last_row(writer.path)}
  if primary and not stopped:
    run_folder.write_json(workdir, "results.json", results)
  return results, state


def compile_only(config: TrainLMConfig, capacity_gb: float = compile_lib.TPU_V5P_HBM_GB,
                 capacity_name: str = "TPU v5p HBM") -> compile_lib.MemoryReport:
  """Lowers and compiles the train step for `config.mesh` and reports per-device memory.

  Nothing is allocated, trained or written; the workdir is not touched. Run with simulated
  devices to plan a pod: XLA_FLAGS=--xla_force_host_platform_device_count=256.
  """
  mesh = mesh_lib.make_mesh(config.mesh)
  sources.check_batch_size(config.batch_size, mesh)
  programs = _programs(config.model, config.optimizer, mesh)
  batch = jax.ShapeDtypeStruct((config.batch_size, config.model.n_ctx + 1), jnp.int32,
                               sharding=mesh_lib.batch_sharding(mesh))
  return compile_lib.compile_and_report(programs.step, programs.target, batch,
                                        capacity_gb=capacity_gb, capacity_name=capacity_name)

