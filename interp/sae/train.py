"""Sharded dictionary training through the shared loop: the library behind experiments/train_sae.py.

Dictionary parameters are sharded along `latent` (mesh axis `model`: each device holds
d_sae / n_model latents of the encoder, decoder and their Adam moments), batches along `data`.
The step is pure; it applies the decoder-norm constraint, updates the dead-latent counters and
the BatchTopK threshold (buffers carried in the parameter dict, not optimised) and, with
`dead_mitigation=resample`, resamples dead latents every `resample_every` steps (Bricken et al.
2023: new directions from badly reconstructed inputs, their Adam moments reset).

The run folder holds flags.json, sae_config.json, data.json, metrics.jsonl, checkpoints/ and
results.json, like every run (`interp.train.run_folder`); a rerun resumes exactly, because batch
`s` is a pure function of (seed, s) in every activation store.

Precision (`--precision`, `interp.precision`): the step runs the dictionary's encoder and
decoder products in the compute dtype with float32 sums (`interp.sae.dictionary`); the
parameters, Adam's moments, the buffers, pre-activations, losses and metrics stay float32.
results.json records the resolved policy (`precision`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interp import jsonio
from interp import choices
from interp import precision as precision_lib
from interp.data import sources
from interp.models import zoo
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd
from interp.precision import Precision
from interp.sae import dictionary as dic
from interp.sae.config import Activation, DeadMitigation, SAEConfig
from interp.train import compile_only as compile_lib
from interp.train import loop
from interp.train import run_folder
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointMismatchError
from interp.train.optim import OptimizerConfig
from interp.train.run_config import EmbedsRun, RunConfig
from interp.train.session import Session


class Store(Protocol):
  """What the trainer reads: `batch(step)` [batch_size, d_in], a pure function of the step."""
  d_in: int

  def batch(self, step: int) -> jax.Array: ...

  def sample(self, n: int) -> np.ndarray: ...

  def describe(self) -> dict: ...


# The dictionaries' defaults for the settings every run shares.
DEFAULT_RUN = RunConfig(num_steps=1000, log_every=50,
                        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=50, grad_clip=0.0))


@dataclasses.dataclass(frozen=True)
class TrainSAEConfig(EmbedsRun):
  """Attributes:
    sae: the dictionary (`interp.sae.config.SAEConfig`).
    run: the run folder, seed (dictionary init; the store has its own data seed), mesh (`model`
      shards the latents), num_steps, log_every, optimizer, checkpoint
      (`interp.train.run_config`).
    batch_size: activations per step (global); a multiple of the data axis.
    init_sample: activations read before training for the input scale and the geometric median.
    precision: compute dtype of the encoder and decoder products, with parameters, optimizer
      state, pre-activations, losses and metrics kept float32 (auto = float32 on CPU, bfloat16
      on GPU/TPU).
  """

  sae: SAEConfig
  run: RunConfig = DEFAULT_RUN
  batch_size: int = 4096
  init_sample: int = 4096
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    Precision.parse(self.precision)  # a bad value fails here, naming --precision
    choices.check_int("batch_size", self.batch_size)
    choices.check_int("init_sample", self.init_sample)
    if (self.sae.activation.value == "batchtopk"
        and self.batch_size * self.sae.d_sae > 2**31 - 1):
      # `dictionary.kth_largest` counts the batch's [batch, d_sae] values in int32.
      raise ValueError(f"--activation=batchtopk counts --batch_size x --d_sae = "
                       f"{self.batch_size * self.sae.d_sae} values in int32; use a smaller batch")

  @property
  def policy(self) -> Precision:
    """The precision policy `precision` names on this machine's backend."""
    return Precision.parse(self.precision)


# ---------------------------------------------------------------------------------------------
# The step


def _latent_axis(name: str) -> int | None:
  axes = dic.PARAM_AXES[name]
  return axes.index("latent") if "latent" in axes else None


def _where_latent(dead: jax.Array, name: str, new, old):
  axis = _latent_axis(name)
  if axis is None:
    return old
  shape = [1] * old.ndim
  shape[axis] = -1
  return jnp.where(dead.reshape(shape), new, old)


def resample(cfg: SAEConfig, trainable: dict, buffers: dict, x: jax.Array, key: jax.Array,
             precision: Precision | None = None):
  """Bricken resampling: each dead latent gets a new direction, an input drawn with probability
  proportional to its squared reconstruction error, as decoder row and (scaled to 0.2 x the mean
  alive encoder norm) encoder column; its biases go to zero; the errors are measured under
  `precision` (default float32). Returns (trainable, dead mask)."""
  params = {**trainable, **buffers}
  dead = buffers["fired_ago"] >= cfg.dead_steps
  x_n = x * buffers["norm_scale"]
  err = jnp.sum((x_n - dic.reconstruct(cfg, params, x, precision) * buffers["norm_scale"]) ** 2, -1)
  rows = jax.random.categorical(key, jnp.log(err ** 2 + 1e-30), shape=(cfg.d_sae,))
  dirs = x_n[rows] - trainable["b_dec"]
  dirs = dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=-1, keepdims=True), 1e-8)
  enc_norm = jnp.linalg.norm(trainable["W_enc"], axis=0)
  alive_norm = jnp.sum(jnp.where(dead, 0.0, enc_norm)) / jnp.maximum(jnp.sum(~dead), 1)
  new = {"W_dec": dirs, "W_enc": dirs.T * 0.2 * alive_norm}
  out = {}
  for name, value in trainable.items():
    fresh = new.get(name, jnp.zeros_like(value))
    out[name] = _where_latent(dead, name, fresh, value)
  return out, dead


def _reset_moments(optimizer, opt_state, trainable, dead):
  """Zeroes Adam's moments of the resampled latents."""
  names = {k: k for k in trainable}  # each leaf's name, to find its latent axis
  return optax.tree_map_params(
      optimizer, lambda leaf, name: _where_latent(dead, name, jnp.zeros_like(leaf), leaf),
      opt_state, names, transform_non_params=lambda x: x)


def make_step(cfg: SAEConfig, optimizer: optax.GradientTransformation,
              precision: Precision = precision_lib.FLOAT32):
  """The pure train step (state, batch [B, d_in]) -> (state, metrics); the loss under
  `precision`, the gradients, update and state float32.

  With relu's `sparse_cap`, the step first runs on the sparse codes (`dic.loss(sparse=True)`);
  if some token of the batch reached the cap (or the packed codes filled their slots), that
  result is dropped and the dense step runs on the same state and batch instead (`lax.cond`:
  only the taken branch runs). The metric `sparse_step` is 1 where the sparse result was kept.
  (`compile_only`'s memory estimate counts the dense step alone.)"""
  def one_step(state: state_lib.TrainState, batch: jax.Array, sparse: bool):
    trainable, buffers = dic.split(state.params)
    (loss, (metrics, buffers)), grads = jax.value_and_grad(
        functools.partial(dic.loss, cfg, precision=precision, sparse=sparse), has_aux=True)(
            trainable, buffers, batch)
    grads = dic.project_grads(cfg, grads, trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    trainable = dic.renormalise(cfg, optax.apply_updates(trainable, updates))
    if cfg.dead_mitigation == DeadMitigation.RESAMPLE:
      due = (state.step + 1) % cfg.resample_every == 0

      def do(args):
        trainable, buffers, opt_state = args
        key = jax.random.fold_in(jax.random.key(0), state.step)
        trainable, dead = resample(cfg, trainable, buffers, batch, key, precision)
        opt_state = _reset_moments(optimizer, opt_state, trainable, dead)
        return trainable, dict(buffers, fired_ago=jnp.where(dead, 0, buffers["fired_ago"])), \
            opt_state

      trainable, buffers, opt_state = jax.lax.cond(due, do, lambda a: a,
                                                   (trainable, buffers, opt_state))
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
    return state_lib.TrainState(step=state.step + 1, params={**trainable, **buffers},
                                opt_state=opt_state), metrics

  if not (cfg.activation == Activation.RELU and cfg.sparse_cap):
    return lambda state, batch: one_step(state, batch, False)

  def step(state: state_lib.TrainState, batch: jax.Array):
    new, metrics = one_step(state, batch, True)
    overflow = metrics.pop("sparse_overflow")

    def dense(_):
      redone, m = one_step(state, batch, False)
      return redone, dict(m, sparse_step=jnp.float32(0))
    return jax.lax.cond(overflow, dense,
                        lambda _: (new, dict(metrics, sparse_step=jnp.float32(1))), None)
  return step


# ---------------------------------------------------------------------------------------------
# Programs: init, step, restore target — for one dictionary, optimizer and mesh


class Programs(NamedTuple):
  init: Callable          # jitted (key, sample) -> TrainState in its shardings
  step: Callable          # jitted donating (state, batch) -> (state, metrics)
  target: state_lib.TrainState
  batch: jax.sharding.Sharding


def _init_fn(cfg: SAEConfig, optimizer):
  def init(key, sample):
    params = dic.init(cfg, key, sample)
    trainable, _ = dic.split(params)
    return state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                opt_state=optimizer.init(trainable))
  return init


def dictionary_programs(init, step, optimizer, split, axes, mesh, sample) -> Programs:
  """Sharded, compiled init and step for a dictionary (an SAE or a transcoder set).

  Args:
    init: (key, sample) -> TrainState; step: (state, batch) -> (state, metrics).
    optimizer: the optax transformation `init` used for the trainable params.
    split: params -> (trainable, buffers); axes: params -> logical axes per leaf.
    mesh: the mesh; sample: the abstract init sample, [N, ...] like a batch.
  """
  key = jax.random.key(0)
  abstract = jax.eval_shape(init, key, sample)
  param_sh = mesh_lib.param_shardings(mesh, axes(abstract.params), abstract.params,
                                      shd.PARAM_RULES)
  trainable_sh, _ = split(param_sh)
  state_sh = state_lib.shardings(optimizer, split(abstract.params)[0], trainable_sh, mesh)
  state_sh = state_lib.TrainState(step=state_sh.step, params=param_sh,
                                  opt_state=state_sh.opt_state)
  batch_sh = mesh_lib.batch_sharding(mesh, len(sample.shape))
  replicated = shd.replicated(mesh)

  def step_fn(state, batch):
    with shd.activation_rules(mesh, shd.ACT_RULES):
      return step(state, batch)

  return Programs(
      init=jax.jit(init, in_shardings=(replicated, replicated), out_shardings=state_sh),
      step=loop.compile_step(step_fn, state_sh, batch_sh),
      target=state_lib.abstract(init, state_sh, key, sample),
      batch=batch_sh)


@functools.lru_cache(maxsize=8)
def programs(cfg: SAEConfig, optim: OptimizerConfig, mesh, init_sample: int = 8,
             precision: Precision = precision_lib.FLOAT32) -> Programs:
  """Compiled init and step (memoised per shapes and precision, so sweeps and tests reuse
  them); the state is float32 whatever the precision."""
  optimizer = optim.build()
  sample = jax.ShapeDtypeStruct((init_sample, cfg.d_in), jnp.float32)
  return dictionary_programs(_init_fn(cfg, optimizer), make_step(cfg, optimizer, precision), optimizer,
                             dic.split, dic.param_axes, mesh, sample)


# ---------------------------------------------------------------------------------------------
# A run


def _check_sae_config(workdir: str, cfg: SAEConfig) -> None:
  changes = run_folder.config_changes(workdir, "sae_config.json", cfg.to_dict())
  if changes:
    raise CheckpointMismatchError(
        f"--workdir={workdir} holds a dictionary with another config "
        f"({os.path.join(workdir, 'sae_config.json')}): {', '.join(changes)}. Use a new "
        f"--workdir, or the original flags.")


def train_sae(config: TrainSAEConfig, store: Store, mesh=None) -> tuple[dict, dict]:
  """Trains (or resumes) the dictionary in `config.run.workdir` on `store`'s activations.

  Args:
    config: the run; store: the activations (built on `mesh`).
    mesh: the run's mesh (default: built from `config.run.mesh`).
  Returns:
    (results, params): results has status, step, the final logged metrics and wall time;
    params are the trained dictionary (sharded arrays, buffers included).
  """
  cfg, run = config.sae, config.run
  if store.d_in != cfg.d_in:
    raise ValueError(f"--d_in={cfg.d_in} but the activations at the hook site are "
                     f"{store.d_in} wide")
  with Session(run, mesh, check=lambda w: _check_sae_config(w, cfg),
               label="SAE training") as session:
    progs = session.programs(lambda: _checked_programs(config, session.mesh))
    state, stopped = train_dictionary(session, progs, store, config, "dictionary",
                                      {"sae_config.json": cfg.to_dict()})
    return session.finish(state, stopped, precision=config.policy.name), state.params


def train_dictionary(session: Session, progs: Programs, store: Store, config, what: str,
                     records: dict, hooks=()):
  """Opens `session` (a new dictionary from a sample of `store`) and trains it on `store`.

  What an SAE run and a transcoder run share: the init sample (refused if not finite), the data
  position (the store's description and the seed), the records beside flags.json.

  Args:
    session: the run's session; progs: its compiled programs.
    store: the activations; config: the trainer's config (`init_sample`, `to_dict()`).
    what: the dictionary's name in the error for a non-finite sample.
    records: the dictionary's config record(s); data.json is added.
    hooks: the trainer's own loop hooks.
  Returns:
    (final state, stopped early).
  """
  seed = session.run.seed

  def init():
    sample = np.asarray(store.sample(config.init_sample), np.float32)
    if not np.all(np.isfinite(sample)):
      raise FloatingPointError(f"the initial activation sample ({store.describe()}) holds "
                               f"NaN or Inf; cannot initialise the {what}")
    return progs.init(jax.random.key(seed), sample)

  state = session.open(progs.target, init,
                       lambda s: {"step": s, "data": store.describe(), "seed": seed},
                       flags=config.to_dict(),
                       records={**records, "data.json": store.describe()})
  return session.train(progs.step, state, store.batch, hooks)


def _checked_programs(config: TrainSAEConfig, mesh) -> Programs:
  sources.check_batch_size(config.batch_size, mesh)
  return programs(config.sae, config.run.optimizer, mesh, config.init_sample, config.policy)


def compile_only(config: TrainSAEConfig, capacity_gb: float = compile_lib.TPU_V5P_HBM_GB,
                 capacity_name: str = "TPU v5p HBM") -> compile_lib.MemoryReport:
  """Lowers and compiles the SAE step for `config.run.mesh`; reports per-device memory. Nothing
  is allocated or trained (plan pods with XLA_FLAGS=--xla_force_host_platform_device_count=N).
  The step is compiled for `config.precision` (resolved on this backend: `--precision=bfloat16`
  plans a GPU/TPU run from a CPU), which the report names."""
  progs = _checked_programs(config, mesh_lib.make_mesh(config.run.mesh_config))
  batch = jax.ShapeDtypeStruct((config.batch_size, config.sae.d_in), jnp.float32,
                               sharding=progs.batch)
  report = compile_lib.compile_and_report(progs.step, progs.target, batch,
                                          capacity_gb=capacity_gb, capacity_name=capacity_name)
  return dataclasses.replace(report, precision=config.policy.name,
                             kept_for_backward=_kept_for_backward(config, report.mesh))


def _kept_for_backward(config: TrainSAEConfig, mesh: dict[str, int]) -> int:
  """Activation bytes one device keeps for the backward pass: the loss's residuals at one
  device's shapes (its rows of the batch, its share of the latents). Matryoshka's prefix losses
  are left out (their prefixes span shards); TopK keeps k candidates per shard, as
  `sparse_sharded.topk` does."""
  cfg = config.sae
  latents = max(cfg.d_sae // mesh.get("model", 1), 1)
  local = dataclasses.replace(cfg, d_sae=latents, k=min(cfg.k, latents),
                              aux_k=min(cfg.aux_k, latents), matryoshka=())
  params = jax.eval_shape(lambda key: dic.init(local, key), jax.random.key(0))
  trainable, buffers = dic.split(params)
  rows = jax.ShapeDtypeStruct((max(config.batch_size // mesh.get("data", 1), 1), cfg.d_in),
                              jnp.float32)
  return compile_lib.kept_for_backward(
      lambda t, b, x: dic.loss(local, t, b, x, config.policy), trainable, buffers, rows)


def load_params(workdir: str) -> tuple[SAEConfig, dict[str, Any]]:
  """The dictionary of a run folder's newest checkpoint, as host arrays, with its config."""
  cfg = SAEConfig.from_dict(jsonio.read_json(os.path.join(workdir, "sae_config.json")))
  _, state, _ = zoo.read_latest(os.path.join(workdir, "checkpoints"))
  return cfg, state["params"]
