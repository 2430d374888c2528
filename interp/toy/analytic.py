"""The minimum-loss configuration of the n=2, m=1 ReLU-output model, from its exact expected loss.

Two features x_1, x_2, each 0 with probability 1 - p else uniform on [0, 1], importances 1 and r,
one hidden dimension: h = w_1 x_1 + w_2 x_2, x'_i = ReLU(w_i h + b_i). Three candidates:

  not represented  w = (1, 0): x_1 is exact; x'_2 = ReLU(b_2) is best at E[x_2] = p / 2, so
                   the loss is r Var(x_2) = r (p/3 - p^2/4).
  dedicated        w = (0, 1): likewise 1 (p/3 - p^2/4).
  superposition    w_1, w_2 of opposite signs (an antipodal pair) with negative biases that hide
                   the interference; its loss has no simple closed form, so its four parameters
                   are found by gradient descent on the exact expected loss
                       (1-p)^2 L(0,0) + p(1-p) [E L(x_1,0) + E L(0,x_2)] + p^2 E L(x_1,x_2),
                   the integrals over [0,1] and [0,1]^2 taken by the midpoint rule.

`solve` evaluates every (r, p) cell in one vmapped, jitted optimisation and labels each cell
with the lowest-loss candidate (ties go to the simpler, unsuperposed one).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

LABELS = ("not represented", "superposition", "dedicated")
NEITHER = "neither"  # an empirical model with neither feature represented
QUAD_1D, QUAD_2D = 64, 32  # within 3e-4 (relative) of 512 x 128^2 points
STEPS, LR = 500, 0.05
TIE = 1e-5  # superposition must beat the others by this much (relative) to count


def classify(w1: float, w2: float, threshold: float = 0.5) -> str:
  """The label of a learned (or optimal) w = (w_1, w_2): which features have |w_i| > threshold."""
  a, b = abs(w1) > threshold, abs(w2) > threshold
  if a and b:
    return "superposition"
  if a:
    return "not represented"
  return "dedicated" if b else NEITHER


def _points(quad_1d: int = QUAD_1D, quad_2d: int = QUAD_2D):
  """Quadrature points and, per point, which case it belongs to (0: none, 1: x_1 only,
  2: x_2 only, 3: both) and its weight within the case."""
  g1 = (np.arange(quad_1d) + 0.5) / quad_1d
  g2 = (np.arange(quad_2d) + 0.5) / quad_2d
  a, b = np.meshgrid(g2, g2, indexing="ij")
  x = np.concatenate([np.zeros((1, 2)), np.c_[g1, 0 * g1], np.c_[0 * g1, g1],
                      np.c_[a.ravel(), b.ravel()]])
  case = np.r_[0, np.full(quad_1d, 1), np.full(quad_1d, 2), np.full(quad_2d ** 2, 3)]
  weight = np.r_[1.0, np.full(2 * quad_1d, 1 / quad_1d), np.full(quad_2d ** 2, 1 / quad_2d ** 2)]
  return jnp.asarray(x, jnp.float32), jnp.asarray(case), jnp.asarray(weight, jnp.float32)


def expected_loss(theta: jax.Array, r: jax.Array, p: jax.Array, points=None) -> jax.Array:
  """Exact (up to quadrature) expected loss of theta = (w_1, w_2, b_1, b_2)."""
  x, case, weight = _points() if points is None else points
  w, b = theta[:2], theta[2:]
  h = x @ w
  out = jax.nn.relu(h[:, None] * w + b)
  per = (x[:, 0] - out[:, 0]) ** 2 + r * (x[:, 1] - out[:, 1]) ** 2
  prob = jnp.stack([(1 - p) ** 2, p * (1 - p), p * (1 - p), p ** 2])[case]
  return jnp.sum(prob * weight * per)


def unsuperposed_loss(r, p):
  """(not represented, dedicated) losses in closed form."""
  var = p / 3 - p ** 2 / 4
  return r * var, var


@functools.partial(jax.jit, static_argnames=("quad_1d", "quad_2d", "steps", "lr"))
def _superposition(r: jax.Array, p: jax.Array, quad_1d: int, quad_2d: int, steps: int,
                   lr: float):
  """Optimal antipodal parameters and loss for every cell (r, p are flat [cells])."""
  points = _points(quad_1d, quad_2d)
  opt = optax.adam(optax.cosine_decay_schedule(lr, steps))  # decays: converges, no jitter
  starts = jnp.array([[1.0, -1.0, -0.1, -0.1], [1.0, -0.5, -0.2, 0.0], [0.5, -1.0, 0.0, -0.2]])

  def fit(theta, r, p):
    def body(carry, _):
      theta, state = carry
      g = jax.grad(expected_loss)(theta, r, p, points)
      upd, state = opt.update(g, state, theta)
      return (optax.apply_updates(theta, upd), state), None
    (theta, _), _ = jax.lax.scan(body, (theta, opt.init(theta)), None, length=steps)
    return theta, expected_loss(theta, r, p, points)

  thetas, losses = jax.vmap(lambda t: jax.vmap(fit, (None, 0, 0))(t, r, p))(starts)
  best = jnp.argmin(losses, axis=0)
  pick = lambda a: jnp.take_along_axis(a, best[None, :, None] if a.ndim == 3 else best[None],
                                       axis=0)[0]
  return pick(thetas), pick(losses)


def solve(importance: np.ndarray, density: np.ndarray, quad_1d: int = QUAD_1D,
          quad_2d: int = QUAD_2D, steps: int = STEPS, lr: float = LR) -> dict:
  """Minimum-loss configuration over a grid.

  Args:
    importance: [R] relative importances r of feature 2.
    density: [D] densities p (both features).
  Returns:
    "label" [D, R] (strings from LABELS), "loss" [D, R, 3] per candidate in LABELS order,
    "theta" [D, R, 4] the superposition candidate's (w_1, w_2, b_1, b_2).
  """
  p, r = np.meshgrid(np.asarray(density, np.float32), np.asarray(importance, np.float32),
                     indexing="ij")
  theta, sup = (np.asarray(a) for a in _superposition(
      jnp.asarray(r.ravel()), jnp.asarray(p.ravel()), quad_1d, quad_2d, steps, lr))
  not_rep, dedicated = unsuperposed_loss(r.ravel(), p.ravel())
  losses = np.stack([not_rep, sup, dedicated], -1)
  simple = np.minimum(not_rep, dedicated)
  label = np.where(not_rep <= dedicated, LABELS[0], LABELS[2]).astype(object)
  wins = (sup < simple * (1 - TIE)) & (np.abs(theta[:, 0]) > 0.5) & (np.abs(theta[:, 1]) > 0.5)
  label[wins] = LABELS[1]
  shape = p.shape
  return {"label": label.reshape(shape), "loss": losses.reshape(shape + (3,)),
          "theta": theta.reshape(shape + (4,))}
