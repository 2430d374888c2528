"""Reference implementations of the same toy training, for speed comparisons.

The training (every side): n=20 features, m=5 hidden, I_i = 0.7^i, ReLU output, batch 1024 per
instance, densities log-spaced over [0.01, 1] across instances, AdamW(lr=1e-3, betas=(0.9,
0.999), no weight decay), loss mean_batch sum_i I_i (x_i - x'_i)^2, a fresh batch every step.

  torch_notebook  the paper notebook's PyTorch loop: torch.rand for values and for the mask,
                  einsum forward, loss.backward(), AdamW; `group` instances per model, so 1,000
                  instances train as sequential groups of 10 and the rate is the group's.
  naive_jax       the straightforward JAX port: jax.vmap over instances of the whole-batch loss,
                  default threefry keys, two uniform draws per sample, one jitted step.
  interp          `interp.toy.train.build`'s step (`interp.toy.speed.interp_rate`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from interp.toy import model as model_lib
from interp.toy import program as program_lib
from interp.toy import speed
from interp.toy import sweep as sweep_lib

N_FEATURES, N_HIDDEN, BATCH, LR = 20, 5, 1024, 1e-3


def sweep_for(instances: int) -> sweep_lib.Sweep:
  return sweep_lib.Sweep(importance=np.tile(0.7 ** np.arange(N_FEATURES), (instances, 1)),
                         density=np.repeat(np.geomspace(1, 0.01, instances)[:, None],
                                           N_FEATURES, 1),
                         relu=np.ones(instances, bool))


def train_config(**changes) -> program_lib.ToyTrainConfig:
  base = program_lib.ToyTrainConfig.make(
      model=model_lib.ToyModelConfig(N_FEATURES, N_HIDDEN), batch_size=BATCH, num_steps=1, lr=LR)
  return base.replace(**changes)


def torch_notebook(instances: int, threads: int, seconds: float, reps: int) -> dict:
  """The notebook's loop with `instances` in one model, on `threads` torch threads."""
  import torch
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  std = (2.0 / (N_FEATURES + N_HIDDEN)) ** 0.5
  w = torch.nn.Parameter(std * torch.randn(instances, N_FEATURES, N_HIDDEN))
  b = torch.nn.Parameter(torch.zeros(instances, N_FEATURES))
  importance = torch.tensor(0.7 ** np.arange(N_FEATURES), dtype=torch.float32)
  prob = torch.tensor(np.geomspace(1, 0.01, instances)[:, None], dtype=torch.float32)
  opt = torch.optim.AdamW([w, b], lr=LR, betas=(0.9, 0.999), weight_decay=0.0)

  def step():
    feat = torch.rand((BATCH, instances, N_FEATURES))
    x = torch.where(torch.rand((BATCH, instances, N_FEATURES)) <= prob, feat, torch.zeros(()))
    hidden = torch.einsum("bif,ifh->bih", x, w)
    recon = torch.relu(torch.einsum("bih,ifh->bif", hidden, w) + b)
    loss = (importance * (x - recon) ** 2).mean(dim=0).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  out = speed.calibrated(step, lambda l: l.item(), seconds, reps, instances)
  out.update(threads=threads, torch=torch.__version__)
  return out


def naive_jax(instances: int, seconds: float, reps: int) -> dict:
  """The straightforward JAX version (one device)."""
  import jax
  import jax.numpy as jnp
  import optax
  imp = jnp.asarray(np.tile(0.7 ** np.arange(N_FEATURES), (instances, 1)), jnp.float32)
  prob = jnp.asarray(np.geomspace(1, 0.01, instances)[:, None, None], jnp.float32)
  key = jax.random.key(0)
  std = (2.0 / (N_FEATURES + N_HIDDEN)) ** 0.5
  params = {"W": std * jax.random.normal(key, (instances, N_HIDDEN, N_FEATURES)),
            "b": jnp.zeros((instances, N_FEATURES))}
  opt = optax.adamw(LR, b1=0.9, b2=0.999, weight_decay=0.0)

  def loss(p, x, i):
    recon = jax.nn.relu((x @ p["W"].T) @ p["W"] + p["b"])
    return jnp.sum(i * jnp.mean((x - recon) ** 2, axis=0))

  def step(state, k):
    p, s = state
    k1, k2 = jax.random.split(k)
    feat = jax.random.uniform(k1, (instances, BATCH, N_FEATURES))
    x = jnp.where(jax.random.uniform(k2, (instances, BATCH, N_FEATURES)) <= prob, feat, 0.0)
    l, g = jax.value_and_grad(lambda p: jnp.sum(jax.vmap(loss)(p, x, imp)))(p)
    u, s = opt.update(g, s, p)
    return (optax.apply_updates(p, u), s), l

  jstep = jax.jit(step, donate_argnums=0)
  holder = {"state": (params, opt.init(params)), "i": 0}

  def call():
    holder["state"], l = jstep(holder["state"], jax.random.fold_in(key, holder["i"]))
    holder["i"] += 1
    return l

  return speed.calibrated(call, jax.block_until_ready, seconds, reps, instances)


def interp_vs_torch(instances: Sequence[int] = (10, 1000), seconds: float = 1.0, reps: int = 3,
                    group: int = 10) -> dict:
  """In-process comparison for the figure suite: interp's step (this process's devices) against
  the notebook loop in groups of `group` on 1 torch thread (torch skipped when missing). The
  benchmark binary measures more carefully, each side in its own process."""
  out = {"sizes": {}, "note": ""}
  try:
    torch_rate = torch_notebook(group, 1, seconds, reps)["per_s"]
  except ImportError:
    torch_rate = None
    out["note"] = "torch is not installed (requirements-dev.txt): interp timed alone."
  for n in instances:
    rate = speed.interp_rate(sweep_for(n), train_config(), seconds, reps)
    out["sizes"][str(n)] = {"interp": rate["per_s"], "torch_notebook": torch_rate,
                            "mesh": rate["mesh"]}
  out["cpu_count"] = os.cpu_count()
  return out
