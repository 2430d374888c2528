"""Timing the toy's compiled step and its data path (for `experiments/bench_toy.py`, the
`toy_summary` suite entry and the `data_path` block of a family's results.json).

Rates are model-steps per second: instances x steps / wall seconds. Each measurement repeats
`reps` times and keeps every repetition, with the median as the headline, because the machines
these run on are often shared; CPU seconds (process time, all threads) are reported beside wall
seconds since they are less sensitive to other processes.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from interp.toy import data as data_lib
from interp.toy import program as program_lib
from interp.toy.sweep import Sweep


def calibrated(step: Callable[[], object], block: Callable[[object], object], seconds: float,
               reps: int, work: float) -> dict:
  """Times `step` in `reps` repetitions of about `seconds` each, after a warm-up call and a
  probe call that sizes the repetitions; `work` is what one call does (model-steps)."""
  block(step())
  t0 = time.perf_counter()
  block(step())
  probe = max(time.perf_counter() - t0, 1e-5)
  count = max(1, int(seconds / probe))
  walls, cpus = [], []
  for _ in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(count):
      out = step()
    block(out)
    walls.append((time.perf_counter() - t0) / count)
    cpus.append((time.process_time() - c0) / count)
  return {"per_s": work / statistics.median(walls), "per_s_best": work / min(walls),
          "per_cpu_s": work / statistics.median(cpus), "calls_per_rep": count,
          "seconds_per_call": [round(w, 6) for w in walls]}


def interp_rate(sweep: Sweep, config: program_lib.ToyTrainConfig, seconds: float, reps: int,
                devices: Sequence | None = None) -> dict:
  """Model-steps per second of `train.build(config, sweep)`'s step (compile excluded)."""
  t0 = time.perf_counter()
  program = program_lib.build(config, sweep, devices)
  state = {"s": jax.jit(program.init, out_shardings=program.state_shardings)(), "i": 0}

  def step():
    state["s"], metrics = program.step(state["s"], np.int32(state["i"]))
    state["i"] += 1
    return metrics

  jax.block_until_ready(step())
  compile_s = time.perf_counter() - t0
  out = calibrated(step, jax.block_until_ready, seconds, reps, program.sweep.n_instances)
  out.update(compile_and_first_step_s=round(compile_s, 3), instances=program.sweep.n_instances,
             mesh=dict(program.mesh.shape), chunk=program.chunk,
             contraction="gram" if config.model.gram else "factored", **config.data.to_dict())
  return out


def time_sampling(config: data_lib.DataConfig, sweep: Sweep, batch_size: int,
                  seconds: float = 0.5, reps: int = 3) -> dict:
  """Feature samples per second of the data path alone, in the step's shape: one instance's
  batch per `lax.map` iteration, reduced to a scalar so nothing large is written back."""
  density = jnp.asarray(sweep.density)
  root = data_lib.root_key(0, config.prng)

  @jax.jit
  def sample_all(index):
    key = data_lib.fold_in(root, index, config)
    one = lambda a: jnp.sum(data_lib.sample(data_lib.fold_in(key, a[0], config), a[1],
                                            batch_size, config))
    return jnp.sum(jax.lax.map(one, (jnp.arange(sweep.n_instances), density)))

  counter = iter(range(1 << 30))
  samples = sweep.n_instances * batch_size * sweep.n_features
  out = calibrated(lambda: sample_all(next(counter)), jax.block_until_ready, seconds, reps,
                   samples)
  return {**config.to_dict(), "words_per_sample": config.words_per_sample(sweep.n_features),
          "ns_per_feature_sample": 1e9 / out["per_s"],
          "ns_per_feature_sample_cpu": 1e9 / out["per_cpu_s"],
          "calls_per_rep": out["calls_per_rep"]}


def data_table(sweep: Sweep, batch_size: int, seconds: float = 0.5, reps: int = 3,
               prngs: Sequence[data_lib.Prng] = tuple(data_lib.Prng)) -> list[dict]:
  """`time_sampling` for every PRNG x bits choice (and jax's own threefry lowering)."""
  configs = [data_lib.DataConfig(prng=p, bits=b) for p in prngs for b in data_lib.Bits]
  configs += [dataclasses.replace(c, fused=False) for c in configs
              if c.prng == data_lib.Prng.THREEFRY2X32]
  return [time_sampling(c, sweep, batch_size, seconds, reps) for c in configs]
