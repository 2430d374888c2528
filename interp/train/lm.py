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

Precision (`interp.precision`, `--precision`): parameters and Adam's moments are stored in
float32; each step casts the parameters to the compute dtype inside the jitted step, so the
forward and backward passes run in it, and the gradients arrive back in float32 (the cast's
transpose), where the update is applied. The loss, log-softmax and metrics are float32.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from interp import choices
from interp import jsonio
from interp import precision as precision_lib
from interp.data import sources
from interp.models import sharded, transformer
from interp.models.config import TransformerConfig
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd
from interp.precision import Precision
from interp.train import compile_only as compile_lib
from interp.train import loop
from interp.train import run_folder
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointMismatchError, shape_mismatches
from interp.train.optim import OptimizerConfig
from interp.train.run_config import EmbedsRun, RunConfig
from interp.train.session import Session


# This trainer's defaults for the settings every run shares.
DEFAULT_RUN = RunConfig(num_steps=300, log_every=20)


@dataclasses.dataclass(frozen=True)
class TrainLMConfig(EmbedsRun):
  """Attributes:
    model: the architecture (vocab_size 256 for byte-level text).
    run: the run folder, seed (parameter init and data order), mesh, num_steps,
      log_every, optimizer and checkpoint (`interp.train.run_config`).
    data: a `--data` spec (`interp.data.sources`).
    batch_size: global batch size (rows of n_ctx + 1 tokens); a multiple of the data axis.
    precision: compute dtype of the forward and backward passes, with parameters, optimizer
      state, logits, loss and metrics kept float32 (auto = float32 on CPU, bfloat16 on GPU/TPU).
  """

  model: TransformerConfig
  run: RunConfig = DEFAULT_RUN
  data: str = "corpus"
  batch_size: int = 16
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    Precision.parse(self.precision)  # a bad value fails here, naming --precision
    sources.DataSpec.parse(self.data)
    choices.check_int("batch_size", self.batch_size)
    choices.check_int("n_ctx", self.model.n_ctx)

  @property
  def policy(self) -> Precision:
    """The precision policy `precision` names on this machine's backend."""
    return Precision.parse(self.precision)


def lm_loss(cfg: TransformerConfig, mesh, act_rules: shd.Rules = shd.ACT_RULES,
            precision: Precision | None = None):
  """Next-token cross-entropy (nats) on [batch, n_ctx + 1] token windows, plus accuracy.

  The forward runs in `precision`'s compute dtype (default float32); its logits, and so the
  log-softmax, the loss and the accuracy, are float32.
  """
  def loss_fn(params, batch):
    with shd.activation_rules(mesh, act_rules):  # inside the traced function, as it must be
      logits, _ = transformer.forward(cfg, params, batch[:, :-1], precision=precision)
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
  saved = jsonio.read_json(path)
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
def _programs(model: TransformerConfig, optim: OptimizerConfig, mesh,
              precision: Precision = precision_lib.FLOAT32) -> _Programs:
  """Init and step for one model, optimizer, mesh and precision, memoised so that another run
  of the same shapes in this process (a notebook, a sweep, the tests) reuses the compiled
  programs. The state (parameters, optimizer) is float32 whatever the precision."""
  optimizer = optim.build()
  init = state_lib.init_fn(lambda key: transformer.init_params(model, key), optimizer)
  key = jax.random.key(0)  # shapes only
  abstract_params = jax.eval_shape(init, key).params
  rules = sharded.rules_for(model, mesh, shd.PARAM_RULES)
  param_shardings = mesh_lib.param_shardings(mesh, transformer.param_axes(abstract_params),
                                             abstract_params, rules)
  state_shardings = state_lib.shardings(optimizer, abstract_params, param_shardings, mesh)
  step = loop.compile_step(state_lib.make_step(lm_loss(model, mesh, precision=precision),
                                               optimizer), state_shardings,
                           mesh_lib.batch_sharding(mesh))
  return _Programs(init=jax.jit(init, out_shardings=state_shardings), step=step,
                   target=state_lib.abstract(init, state_shardings, key))


def _checked_programs(config: TrainLMConfig, mesh) -> _Programs:
  sources.check_batch_size(config.batch_size, mesh)
  return _programs(config.model, config.run.optimizer, mesh, config.policy)


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
  run_cfg = config.run
  source = sources.make_source(config.data, config.model.vocab_size)
  with Session(run_cfg, check=lambda w: check_model_config(w, config.model)) as session:
    mesh = session.mesh
    programs = session.programs(lambda: _checked_programs(config, mesh))
    state = session.open(
        programs.target, lambda: programs.init(jax.random.key(run_cfg.seed)),
        position=lambda s: {"step": s, "data": config.data, "seed": run_cfg.seed},
        flags=config.to_dict(),
        records={"model_config.json": config.model.to_dict(), "data.json": source.describe()},
        warn=("data", "seed"))
    hooks = extra_hooks(session.start, state) if extra_hooks else []
    batches = sources.make_batches(source, mesh, run_cfg.seed, config.batch_size,
                                   config.model.n_ctx + 1)
    state, stopped = session.train(programs.step, state, batches, hooks, tensorboard=True)
    return session.finish(state, stopped), state


def compile_only(config: TrainLMConfig, capacity_gb: float = compile_lib.TPU_V5P_HBM_GB,
                 capacity_name: str = "TPU v5p HBM") -> compile_lib.MemoryReport:
  """Lowers and compiles the train step for `config.run.mesh`; reports per-device memory.

  Nothing is allocated, trained or written; the workdir is not touched. Run with simulated
  devices to plan a pod: XLA_FLAGS=--xla_force_host_platform_device_count=256. The step is
  compiled for `config.precision` (resolved on this backend: pass `--precision=bfloat16` to
  plan a GPU/TPU run from a CPU), which the report names.
  """
  mesh = mesh_lib.make_mesh(config.run.mesh_config)
  programs = _checked_programs(config, mesh)
  batch = jax.ShapeDtypeStruct((config.batch_size, config.model.n_ctx + 1), jnp.int32,
                               sharding=mesh_lib.batch_sharding(mesh))
  report = compile_lib.compile_and_report(programs.step, programs.target, batch,
                                          capacity_gb=capacity_gb, capacity_name=capacity_name)
  return dataclasses.replace(report, precision=config.policy.name)

