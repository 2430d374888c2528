"""Sharded transcoder training through the shared loop, optimizer, checkpoints and stores.

Vocabulary (beyond `interp.sae.transcoder`):
  paired row  one token's [2L, d] activations: the L MLP inputs, then the L MLP outputs. A
              `ModelStore` over `sites_in + sites_out` (all of width d) serves batches
              [B, 2L, d] of them with the SAE machinery unchanged (`transcoder_store`); the
              step splits each batch into x_in = rows[:, :L] and x_out = rows[:, L:].

Parameters are sharded along `latent` (mesh axis `model`), batches along `data`, and the step
is `interp.train.loop.compile_step` (jit with in/out shardings, the state donated). With a
`workdir`, the run folder holds flags.json, transcoder_config.json, data.json, metrics.jsonl,
Orbax checkpoints and results.json (`interp.train.session`), and a rerun resumes exactly
(batch s is a pure function of the store's seed and s); without one nothing is written (tests,
notebooks).

Precision (`interp.precision`): the step runs the transcoder's products in the compute dtype
with float32 sums (`interp.sae.transcoder`); parameters, Adam's moments, the loss and metrics
stay float32, and the results record the resolved policy (`precision`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from interp import choices
from interp import precision as precision_lib
from interp.data import sources
from interp.sae import store as store_lib
from interp.sae import train as sae_train
from interp.sae import transcoder as tc
from interp.train import metrics as metrics_lib
from interp.train import run_folder
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointMismatchError
from interp.precision import Precision
from interp.train.optim import OptimizerConfig
from interp.train.run_config import EmbedsRun, RunConfig
from interp.train.session import Session


@dataclasses.dataclass(frozen=True)
class TrainTranscoderConfig(EmbedsRun):
  """Attributes:
    transcoder: the dictionary (`interp.sae.transcoder.TranscoderConfig`).
    run: the run folder ("" = no checkpoints or files), seed (dictionary init; the store has
      its own data seed), num_steps, log_every (metrics also recorded at steps 1 and
      num_steps), optimizer, checkpoint (`interp.train.run_config`); the defaults are the
      SAEs' (`interp.sae.train.DEFAULT_RUN`). The mesh is the caller's.
    batch_size: tokens per step (global); a multiple of the data axis.
    init_sample: tokens read before training for the scales and b_dec.
    precision: compute dtype of the encoder, decoder and skip products, with parameters,
      optimizer state, pre-activations, loss and metrics kept float32 (auto = float32 on CPU,
      bfloat16 on GPU/TPU).
  """

  transcoder: tc.TranscoderConfig
  run: RunConfig = sae_train.DEFAULT_RUN
  batch_size: int = 1024
  init_sample: int = 1024
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    Precision.parse(self.precision)  # a bad value fails here, naming --precision
    choices.check_int("batch_size", self.batch_size)
    choices.check_int("init_sample", self.init_sample)

  @property
  def policy(self) -> Precision:
    """The precision policy `precision` names on this machine's backend."""
    return Precision.parse(self.precision)


def transcoder_store(model_cfg, model_params, mesh, source, **store_kwargs):
  """A `ModelStore` of paired rows [2L, d] (MLP inputs, then outputs) for every layer.

  Args:
    model_cfg, model_params: the model.
    mesh: the (data, model) mesh.
    source: token windows (`interp.data.sources`).
    **store_kwargs: batch_size, context_length, model_batch_size, buffer_batches, seed, ...
  """
  ins, outs = tc.sites(model_cfg)
  return store_lib.ModelStore(model_cfg, model_params, mesh, ins + outs, source, **store_kwargs)


def array_store(x_in, x_out, batch_size: int, mesh, seed: int = 0):
  """An in-memory store of paired rows from x_in, x_out [N, L, d]."""
  return store_lib.ArrayStore(np.concatenate([np.asarray(x_in), np.asarray(x_out)], axis=1),
                              batch_size, mesh, seed, name="transcoder")


def make_step(cfg: tc.TranscoderConfig, optimizer: optax.GradientTransformation,
              precision: Precision = precision_lib.FLOAT32):
  """The pure step (state, paired rows [B, 2L, d]) -> (state, scalar metrics); the loss under
  `precision`, gradients, update and state float32."""
  L = cfg.n_layers

  def step(state: state_lib.TrainState, batch: jax.Array):
    trainable, buffers = tc.split(state.params)
    loss_fn = lambda t: tc.loss(cfg, {**t, **buffers}, batch[:, :L], batch[:, L:], precision)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    trainable = tc.constrain(cfg, optax.apply_updates(trainable, updates))
    vectors = {name: metrics.pop(name + "_layer") for name in ("fvu", "l0")}
    per_layer = {f"{name}_{l}": v[l] for name, v in vectors.items() for l in range(L)}
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics, **per_layer}
    return state_lib.TrainState(step=state.step + 1, params={**trainable, **buffers},
                                opt_state=opt_state), metrics
  return step


@functools.lru_cache(maxsize=8)
def programs(cfg: tc.TranscoderConfig, optim: OptimizerConfig, mesh, init_sample: int = 8,
             precision: Precision = precision_lib.FLOAT32) -> sae_train.Programs:
  """Compiled init and step for one transcoder, optimizer, mesh and precision (memoised); init
  and the batches take samples [N, 2L, d] (inputs then targets)."""
  optimizer = optim.build()
  L = cfg.n_layers

  def init(key, sample):
    params = tc.init(cfg, key, sample[:, :L], sample[:, L:])
    return state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                opt_state=optimizer.init(tc.split(params)[0]))

  sample = jax.ShapeDtypeStruct((init_sample, 2 * L, cfg.d_model), jnp.float32)
  return sae_train.dictionary_programs(init, make_step(cfg, optimizer, precision), optimizer, tc.split,
                                       lambda p: tc.param_axes(cfg, p), mesh, sample)


class HistoryHook:
  """Loop hook: host copies of the metrics at step 1, every `every` steps and the last."""

  def __init__(self, every: int, num_steps: int):
    self.every, self.num_steps, self.rows = every, num_steps, []

  def __call__(self, step: int, state, metrics) -> None:
    del state
    if step == 1 or step % self.every == 0 or step == self.num_steps:
      values = metrics_lib.to_host(metrics)
      metrics_lib.check_finite(values, step)
      self.rows.append({"step": step, **values})

  def close(self) -> None:
    pass


def _check_transcoder_config(workdir: str, cfg: tc.TranscoderConfig) -> None:
  if run_folder.config_changes(workdir, "transcoder_config.json", cfg.to_dict()):
    raise CheckpointMismatchError(f"--workdir={workdir} holds a transcoder with another "
                                  f"config; use a new --workdir or the original flags")


def train_transcoder(config: TrainTranscoderConfig, store_or_arrays, mesh) -> tuple[dict, dict]:
  """Trains (or, with a workdir, resumes) a transcoder on paired activations.

  Args:
    config: the run.
    store_or_arrays: a store serving paired rows [B, 2L, d] (`transcoder_store`,
      `array_store`), or a tuple (x_in, x_out) of arrays [N, L, d].
    mesh: the (data, model) mesh (`interp.parallel.mesh.make_mesh`); `model` shards latents.
  Returns:
    (results, params): results has status, step, wall_s, history (metrics at the logged
    steps) and final; params are the trained transcoder with its scales folded in
    (`transcoder.fold_scales`), sharded like the training state.
  """
  cfg, run = config.transcoder, config.run
  store = store_or_arrays
  if isinstance(store_or_arrays, (tuple, list)):
    store = array_store(*store_or_arrays, config.batch_size, mesh, seed=run.seed)
  want = (2 * cfg.n_layers, cfg.d_model)
  if tuple(store.source.row_shape) != want:
    raise ValueError(f"the store serves rows {tuple(store.source.row_shape)}; a transcoder of "
                     f"{cfg.n_layers} layers and d_model {cfg.d_model} reads paired rows {want}")
  with Session(run, mesh, check=lambda w: _check_transcoder_config(w, cfg),
               label="transcoder training") as session:
    sources.check_batch_size(config.batch_size, mesh)
    progs = programs(cfg, run.optimizer, mesh, config.init_sample, config.policy)
    history = HistoryHook(run.log_every, run.num_steps)
    state, stopped = sae_train.train_dictionary(
        session, progs, store, config, "transcoder",
        {"transcoder_config.json": cfg.to_dict()}, [history])
    results = session.finish(state, stopped, history=history.rows,
                             # A rerun of a finished run trains no step: its final metrics
                             # are the last row on disk (the figure suite reuses runs).
                             final=history.rows[-1] if history.rows else
                             session.final_metrics(),
                             precision=config.policy.name)
    return results, tc.fold_scales(cfg, state.params)
