"""The paper's toy models, one instance at a time (the instance axis is added by vmap).

  linear:       x' = W^T W x + b
  ReLU output:  x' = ReLU(W^T W x + b)
  loss:         mean over the batch of sum_i I_i (x_i - x'_i)^2

Parameters of one instance: `W` [hidden, feature] (column W_i is feature i's direction) and
`b` [feature]. A run stacks them along a leading `instance` axis; `PARAM_AXES` names the axes
for the sharding rules.

For a batch X [batch, feature] the model computes X (W^T W) + b. Two contractions give it:
GRAM forms W^T W [n, n] first (two well-shaped [batch, n] x [n, n] matmuls forward and
backward), FACTORED goes through the hidden layer (X W^T) W (five skinny matmuls of width m).
GRAM costs 4 B n^2 FLOPs against FACTORED's 10 B n m, but XLA:CPU runs the square matmuls
faster, so AUTO takes GRAM while n <= 4 m (measured 25% faster at n=20, m=5) and FACTORED for
n >> m (the geometry family's n=200, m=20).
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp

from interp.toy import data

PARAM_AXES = {"W": ("instance", "hidden", "feature"), "b": ("instance", "feature")}


class Contraction(str, enum.Enum):
  AUTO = "auto"
  GRAM = "gram"
  FACTORED = "factored"


@dataclasses.dataclass(frozen=True)
class ToyModelConfig:
  """Attributes:
    n_features: n, the input and output width.
    n_hidden: m, the bottleneck width.
    contraction: how X W^T W is computed (same numbers up to rounding; see the module doc).
  """

  n_features: int
  n_hidden: int
  contraction: Contraction = Contraction.AUTO

  def __post_init__(self):
    object.__setattr__(self, "contraction", data.choice(Contraction, self.contraction,
                                                        "contraction"))
    if self.n_features < 1 or self.n_hidden < 1:
      raise ValueError(f"n_features ({self.n_features}) and n_hidden ({self.n_hidden}) must be "
                       "positive")

  @property
  def gram(self) -> bool:
    if self.contraction == Contraction.AUTO:
      return self.n_features <= 4 * self.n_hidden
    return self.contraction == Contraction.GRAM

  def to_dict(self) -> dict:
    return {"n_features": self.n_features, "n_hidden": self.n_hidden,
            "contraction": self.contraction.value}


def init_instance(cfg: ToyModelConfig, key: jax.Array) -> dict:
  """Xavier-normal W (std sqrt(2 / (m + n))) and zero b, as the paper's notebook."""
  std = (2.0 / (cfg.n_features + cfg.n_hidden)) ** 0.5
  w = std * jax.random.normal(key, (cfg.n_hidden, cfg.n_features), jnp.float32)
  return {"W": w, "b": jnp.zeros((cfg.n_features,), jnp.float32)}


def init_params(cfg: ToyModelConfig, key: jax.Array, n_instances: int) -> dict:
  """Stacked parameters; instance i's depend only on (key, i), not on how many there are."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_instances))
  return jax.vmap(lambda k: init_instance(cfg, k))(keys)


def reconstruct(cfg: ToyModelConfig, params: dict, x: jax.Array, relu: jax.Array) -> jax.Array:
  """x' for one instance.

  Args:
    params: {"W": [m, n], "b": [n]}.
    x: [batch, n].
    relu: scalar bool, True for the ReLU-output model (a traced flag, so linear and ReLU
      instances share one compiled program).
  Returns:
    [batch, n].
  """
  w = params["W"]
  if cfg.gram:
    pre = x @ (w.T @ w) + params["b"]
  else:
    pre = (x @ w.T) @ w + params["b"]
  return jnp.where(relu, jnp.maximum(pre, 0.0), pre)


def loss(cfg: ToyModelConfig, params: dict, x: jax.Array, importance: jax.Array,
         relu: jax.Array) -> jax.Array:
  """Mean over the batch of sum_i I_i (x_i - x'_i)^2, for one instance."""
  err = x - reconstruct(cfg, params, x, relu)
  return jnp.sum(importance * jnp.mean(err * err, axis=0))
