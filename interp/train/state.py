"""Train state, its shardings, and the pure train step.

Vocabulary:
  state      `TrainState(step, params, opt_state)`: everything a checkpoint holds. `step` counts
             the updates applied so far, so the next batch to train on is batch `step`.
  loss_fn    (params, batch) -> (loss, aux metrics dict), pure and traceable.
  shardings  a TrainState-shaped tree of NamedShardings: parameters follow the logical rules,
             optimizer leaves that mirror a parameter (Adam's mu, nu) take that parameter's
             sharding, everything else (counters, scalars) is replicated.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

LossFn = Callable[[Any, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def init_fn(init_params: Callable[..., Any], optimizer: optax.GradientTransformation):
  """(*args) -> a fresh TrainState, where init_params(*args) -> params (e.g. args = (key,))."""
  def init(*args):
    params = init_params(*args)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))
  return init


def shardings(optimizer: optax.GradientTransformation, abstract_params, param_shardings,
              mesh: Mesh) -> TrainState:
  """TrainState-shaped shardings derived from the parameter shardings (see module doc)."""
  replicated = NamedSharding(mesh, P())
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  opt = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, param_shardings,
                              transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_shardings, opt_state=opt)


def abstract(init: Callable[..., TrainState], state_shardings: TrainState, *args) -> TrainState:
  """ShapeDtypeStructs carrying their shardings: the restore target, built without allocating."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      jax.eval_shape(init, *args), state_shardings)


def make_step(loss_fn: LossFn, optimizer: optax.GradientTransformation):
  """The pure train step: (state, batch) -> (new state, metrics).

  Metrics are scalars: `loss`, `grad_norm`, and whatever `loss_fn` returns as aux.
  """
  def step(state: TrainState, batch: jax.Array):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics
  return step
