"""The compiled program of a toy run: config, shardings, the pure step, the evaluation.

The step (`make_step`) is pure: (TrainState, step index) -> (TrainState, per-instance metrics).
Inside it, each device walks its own instances (the `instance` axis is sharded over the mesh's
`data` axis by `shard_map`) with `lax.map`, `chunk` instances at a time (vmapped): it samples
the chunk's batch from fold_in(fold_in(train key, step), instance) and takes the gradient of
each instance's own loss. Instances are independent, so these per-instance gradients are the
gradient of the summed loss; no [instance, batch, feature] array ever exists, which matters on
CPU, where a buffer of hundreds of MB costs more in page faults than the arithmetic on it.
The optimizer then updates all instances at once. Because an instance's data and init depend
only on (seed, step, instance index), its numbers do not depend on the mesh or on the sweep's
size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from interp import choices
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd
from interp.toy import data as data_lib
from interp.toy import model as model_lib
from interp.toy.sweep import Sweep
from interp.train import loop
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig
from interp.train.run_config import EmbedsRun, RunConfig

# The instance axis shards over `data`; W's and b's other axes stay whole on each device.
RULES = shd.override(shd.PARAM_RULES, instance="data")
# lax.map chunk: about this many sampled floats per vmapped chunk. On CPU, chunks of about 1 MB
# stay in cache yet are big enough for XLA to spread over the cores. Measured on 2 idle cores,
# one device, model-steps/s at n=20, batch 1024 (20k floats per instance) by instances per
# chunk: 1: 7.2k, 4: 9.5k, 20: 12.1k, 50: 12.8k, 100: 7.7k, 1000 (no loop): 4.2k; with one
# device per core, 1 to 50 all give ~17k. At n=2 the best is 32 (60k vs 47k at 128), at n=200
# (batch 256) 5. Accelerators want wide vmaps instead: up to 2^26 floats (256 MB) per chunk,
# i.e. usually every local instance at once (not measured here).
CHUNK_FLOATS = {"cpu": 1 << 18}
ACCELERATOR_CHUNK_FLOATS = 1 << 26


# The toy runs' defaults for the settings every run shares: AdamW at a constant rate, as in the
# paper's notebook, and no gradient clipping (a global norm would couple the independent
# instances).
DEFAULT_RUN = RunConfig(
    num_steps=10_000, log_every=500,
    optimizer=OptimizerConfig(lr=1e-3, warmup_steps=0, weight_decay=0.0, grad_clip=0.0, b1=0.9,
                              b2=0.999),
    checkpoint=CheckpointConfig(every_steps=2000, keep=2))


@dataclasses.dataclass(frozen=True)
class ToyTrainConfig(EmbedsRun):
  """Attributes:
    model: widths and contraction.
    run: the run folder ("" = none: no records, no checkpoints; for benchmarks and tests),
      seed (root of the init, train and eval keys), mesh (instances shard over `data`),
      num_steps, log_every, optimizer (lr, weight_decay), checkpoint (`interp.train.run_config`).
    data: PRNG, bits per sample, feature sets.
    batch_size: samples per instance per step.
    eval_batches: batches per instance in the final evaluation (fresh samples).
    chunk: instances per vmapped chunk within a device (0 = by CHUNK_FLOATS for the platform).
  """

  model: model_lib.ToyModelConfig
  run: RunConfig = DEFAULT_RUN
  data: data_lib.DataConfig = data_lib.DataConfig()
  batch_size: int = 1024
  eval_batches: int = 8
  chunk: int = 0

  def __post_init__(self):
    choices.check_int("batch_size", self.batch_size)
    choices.check_int("eval_batches", self.eval_batches)
    opt = self.run.optimizer
    if opt.weight_decay < 0 or self.chunk < 0 or opt.grad_clip:
      raise ValueError(f"weight_decay ({opt.weight_decay}) and chunk ({self.chunk}) must be "
                       f"non-negative and grad_clip ({opt.grad_clip}) 0: a global norm would "
                       "couple the independent instances")

  def resolved_chunk(self, platform: str = "cpu") -> int:
    floats = CHUNK_FLOATS.get(platform, ACCELERATOR_CHUNK_FLOATS)
    return self.chunk or max(1, floats // (self.batch_size * self.model.n_features))


@dataclasses.dataclass
class Program:
  """Everything compiled for one (config, sweep, mesh): the pieces `train_toy` and the
  benchmarks share."""

  config: ToyTrainConfig
  mesh: Any
  sweep: Sweep                 # padded to a multiple of the data axis
  n_real: int                  # instances before padding
  chunk: int                   # instances per vmapped chunk
  init: Callable[[], state_lib.TrainState]
  state_shardings: state_lib.TrainState
  step: Callable               # jitted (state, step index) -> (state, per-instance metrics)
  evaluate: Callable           # jitted params -> [instances] eval loss


def _per_instance(config: ToyTrainConfig, mesh, sweep: Sweep, fn: Callable):
  """shard_map(lax.map(fn)) over the instances: fn(params_i, importance_i, density_i, relu_i,
  id_i, key) -> outputs of instance i; `key` is replicated."""
  arrays = (jnp.asarray(sweep.importance), jnp.asarray(sweep.density),
            jnp.asarray(sweep.relu), jnp.arange(sweep.n_instances))
  chunk = config.resolved_chunk(mesh.devices.flat[0].platform)

  def local(params, imp, dens, relu, ids, key):
    return jax.lax.map(lambda a: fn(*a, key), (params, imp, dens, relu, ids), batch_size=chunk)

  mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("data"),) * 5 + (P(),),
                         out_specs=P("data"))
  return lambda params, key: mapped(params, *arrays, key)


def _init_params(cfg: model_lib.ToyModelConfig, mesh, key: jax.Array, n_instances: int):
  """`model.init_params`, each device initialising its own instances (no device computes, or
  holds, another's parameters)."""
  local = lambda ids: jax.vmap(lambda i: model_lib.init_instance(
      cfg, jax.random.fold_in(key, i)))(ids)
  return jax.shard_map(local, mesh=mesh, in_specs=P("data"), out_specs=P("data"))(
      jnp.arange(n_instances))


def make_step(config: ToyTrainConfig, mesh, sweep: Sweep, optimizer, train_key: jax.Array):
  """The pure train step (see the module docstring); the batch argument is the step index.

  Its metrics are per instance ([instances] arrays sharded like the parameters: `loss`, and
  `grad_sq`, the squared norm of the instance's gradient), so the step needs no collective at
  all. (On a multi-device CPU client, steps queued asynchronously that each all-reduce can
  starve each other's rendezvous and abort; `host_metrics` reduces them on the host instead.)
  """
  cfg, dcfg, batch = config.model, config.data, config.batch_size

  def instance(params, imp, dens, relu, idx, key):
    x = data_lib.sample(data_lib.fold_in(key, idx, dcfg), dens, batch, dcfg)
    loss, grads = jax.value_and_grad(lambda p: model_lib.loss(cfg, p, x, imp, relu))(params)
    return grads, loss, sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))

  grads_fn = _per_instance(config, mesh, sweep, instance)

  def step(state: state_lib.TrainState, index: jax.Array):
    grads, losses, grad_sq = grads_fn(state.params, data_lib.fold_in(train_key, index, dcfg))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state_lib.TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": losses, "grad_sq": grad_sq}

  return step


class _HostScalar:
  """A metric reduced on the host when (and only if) a hook converts it with float()."""

  def __init__(self, values: jax.Array, reduce: Callable[[np.ndarray], float], n_real: int):
    self.values, self.reduce, self.n_real = values, reduce, n_real

  def __float__(self) -> float:
    if jax.process_count() > 1:
      values = multihost_utils.process_allgather(self.values, tiled=True)
    else:
      values = jax.device_get(self.values)
    return float(self.reduce(np.asarray(values)[:self.n_real]))


def host_metrics(step: Callable, n_real: int) -> Callable:
  """Wraps the jitted step so hooks see the shared loop's scalar metrics (`loss` the mean over
  real instances, `loss_max`, `grad_norm` of all instances together), computed lazily on host."""
  def wrapped(state, index):
    state, per = step(state, index)
    return state, {"loss": _HostScalar(per["loss"], np.mean, n_real),
                   "loss_max": _HostScalar(per["loss"], np.max, n_real),
                   "grad_norm": _HostScalar(per["grad_sq"], lambda g: np.sqrt(np.sum(g)),
                                            n_real)}
  wrapped.traces = step.traces
  wrapped.jitted = step
  return wrapped


def compile_step(step_fn: Callable, state_shardings: state_lib.TrainState, mesh):
  """The shared `loop.compile_step`, with per-instance metrics kept sharded over `data`."""
  return loop.compile_step(step_fn, state_shardings, NamedSharding(mesh, P()),
                           metrics_sharding=NamedSharding(mesh, P("data")))


def make_evaluate(config: ToyTrainConfig, mesh, sweep: Sweep, eval_key: jax.Array):
  """params -> [instances] loss, each averaged over `eval_batches` fresh batches."""
  cfg, dcfg, batch = config.model, config.data, config.batch_size

  def instance(params, imp, dens, relu, idx, key):
    key = data_lib.fold_in(key, idx, dcfg)
    def one(j):
      x = data_lib.sample(data_lib.fold_in(key, j, dcfg), dens, batch, dcfg)
      return model_lib.loss(cfg, params, x, imp, relu)
    return jnp.mean(jax.lax.map(one, jnp.arange(config.eval_batches)))

  fn = _per_instance(config, mesh, sweep, instance)
  return jax.jit(lambda params: fn(params, eval_key))


def build(config: ToyTrainConfig, sweep: Sweep, devices: Sequence | None = None) -> Program:
  """Mesh, padded sweep, shardings and the compiled step and evaluation."""
  if sweep.n_features != config.model.n_features:
    raise ValueError(f"the sweep has {sweep.n_features} features, the model "
                     f"{config.model.n_features}")
  data_lib.FeatureSets.parse(config.data.sets).resolve(config.model.n_features)
  mesh = mesh_lib.make_mesh(config.run.mesh_config, devices)
  if mesh.size > 1 and config.data.prng in (data_lib.Prng.PHILOX2X32, data_lib.Prng.PHILOX4X32):
    raise ValueError(f"--prng={config.data.prng.value} runs on one device only (its mulhi does not "
                     f"lower under the Shardy partitioner in jax {jax.__version__}); this mesh "
                     f"has {mesh.size}. Use --prng=threefry2x32 or a one-device mesh.")
  padded = sweep.padded(mesh.shape["data"])
  root = data_lib.root_key(config.run.seed, config.data.prng)
  init_key, train_key, eval_key = (jax.random.fold_in(root, i) for i in range(3))
  optimizer = config.run.optimizer.build()
  init = state_lib.init_fn(lambda: _init_params(config.model, mesh, init_key,
                                                padded.n_instances), optimizer)
  abstract_params = jax.eval_shape(init).params
  param_shardings = mesh_lib.param_shardings(mesh, model_lib.PARAM_AXES, abstract_params, RULES)
  state_shardings = state_lib.shardings(optimizer, abstract_params, param_shardings, mesh)
  step = compile_step(make_step(config, mesh, padded, optimizer, train_key), state_shardings,
                      mesh)
  evaluate = make_evaluate(config, mesh, padded, eval_key)
  chunk = config.resolved_chunk(mesh.devices.flat[0].platform)
  return Program(config, mesh, padded, sweep.n_instances, chunk, init, state_shardings, step,
                 evaluate)
