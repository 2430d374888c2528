"""Ahead-of-time compilation of a train step for a target mesh, with a per-device memory report.

The idea of maxtext's `train_compile.py`: lower and compile the step for the mesh a run will use,
from abstract state and batch (`jax.ShapeDtypeStruct`s carrying their shardings), so nothing is
allocated and nothing runs. With simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=256`) a laptop can check that a pod-scale
configuration partitions as intended and estimate what each device must hold, before anyone pays
for the pod. Any binary whose step comes from `interp.train.loop.compile_step` gets this in one
call: `report = compile_only.compile_and_report(step, abstract_state, abstract_batch)`.

Per-device memory, in bytes, as reported:
  parameters       this device's shards of `state.params` (from the shardings)
  optimizer state  the same for `state.opt_state` (Adam's mu and nu: twice the parameters)
  other state      the rest of the state (the step counter)
  batch            this device's rows of the batch
  temporaries      XLA's `memory_analysis().temp_size_in_bytes`: the activations kept for the
                   backward pass, gradients, the optimizer update and scratch buffers
  total            arguments + outputs - donated (aliased) outputs + temporaries + code: the
                   estimate of peak use that maxtext reports
  kept for backward  (when the trainer computes it, `kept_for_backward`) the values autodiff
                   keeps from the forward pass for the backward pass at one device's shapes,
                   arguments excluded: the activations part of the temporaries, from JAX's
                   trace rather than a compiler, so it is the same on every backend

Caveat: compiled for simulated CPU devices, temporaries follow the CPU compiler's fusion and
buffer assignment, not a TPU's (which fuses more, lays out differently, and may rematerialise);
treat them as an estimate within tens of percent, and parameter and optimizer bytes as exact.
On CPU a bfloat16 step's temporaries hold float32 copies of its bfloat16 product operands (CPUs
have no bfloat16 matrix unit: `interp.precision` widens them), so CPU temporaries understate
what bfloat16 saves; `kept for backward` does not depend on that.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax

GB = 1e9
TPU_V5P_HBM_GB = 95.0  # per chip (Google Cloud TPU v5p documentation)


@dataclasses.dataclass(frozen=True)
class MemoryReport:
  """Per-device bytes of one compiled step (see the module docstring for each field)."""

  mesh: dict[str, int]
  platform: str
  num_params: int
  parameters: int
  optimizer_state: int
  other_state: int
  batch: int
  temporaries: int
  arguments: int
  outputs: int
  aliased: int
  code: int
  lower_s: float
  compile_s: float
  capacity: int = 0
  capacity_name: str = ""
  precision: str = ""  # the step's compute dtype, when the trainer says (`interp.precision`)
  kept_for_backward: int = 0  # when the trainer computes it (`kept_for_backward`)

  @property
  def devices(self) -> int:
    return math.prod(self.mesh.values())

  @property
  def total(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

  @property
  def fits(self) -> bool | None:
    return None if not self.capacity else self.total <= self.capacity

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out.update(devices=self.devices, total=self.total, fits=self.fits)
    return out

  def format(self) -> str:
    """A human-readable table (what `--compile_only` prints)."""
    mesh = " x ".join(f"{k}={v}" for k, v in self.mesh.items())
    lines = [
        f"compiled the train step for mesh {mesh} ({self.devices} {self.platform} devices) "
        f"without running it: lower {self.lower_s:.1f} s, compile {self.compile_s:.1f} s",
        f"state: {_count(self.num_params)} parameters",
        "per-device memory:",
    ]
    if self.precision:
      lines.insert(2, f"precision: {self.precision} compute, float32 parameters and optimizer "
                      "state")
    rows = [("parameters", self.parameters, "this device's shards of state.params"),
            ("optimizer state", self.optimizer_state, "shards of state.opt_state"),
            ("other state", self.other_state, "step counter"),
            ("batch", self.batch, "this device's rows"),
            ("temporaries", self.temporaries,
             "activations, gradients, scratch (XLA memory_analysis)"),
            ("total", self.total, "arguments + outputs - donated + temporaries + code")]
    if self.kept_for_backward:
      rows.insert(5, ("kept for bwd", self.kept_for_backward,
                      "of which activations kept for the backward pass (JAX trace)"))
    lines += [f"  {name:<16}{_gb(value):>12}   {note}" for name, value, note in rows]
    if self.capacity:
      verdict = "fits" if self.fits else "does NOT fit"
      lines.append(f"  {'capacity':<16}{_gb(self.capacity):>12}   {self.capacity_name}: "
                   f"{verdict} ({100 * self.total / self.capacity:.0f}% used)")
    return "\n".join(lines)


def _gb(n: int) -> str:
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{n} B"


def _count(n: int) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return str(n)


def shard_bytes(tree) -> int:
  """Bytes one device holds of an abstract (or concrete) sharded pytree.

  Each leaf needs a `.sharding`; NamedShardings split evenly (the mesh code checks that sharded
  dimensions divide), so every device holds the same number of bytes of each leaf.
  """
  total = 0
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
      raise ValueError(f"shard_bytes: leaf {leaf.shape} {leaf.dtype} has no sharding; build the "
                       "abstract state with interp.train.state.abstract(...)")
    total += math.prod(sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
  return total


def kept_for_backward(loss_fn: Callable, *args) -> int:
  """Bytes of the values autodiff keeps from `loss_fn`'s forward pass for its backward pass.

  Args:
    loss_fn: differentiated in its first argument; returns a scalar (or a tuple led by one).
    *args: abstract (ShapeDtypeStruct) or concrete arguments, at one device's shapes.
  Returns:
    The residuals' bytes, the arguments themselves excluded (they are counted as state or
    batch). Nothing is compiled or run: the residuals come from tracing `jax.vjp`.
  """
  def residuals(*args):
    _, f_vjp = jax.vjp(lambda first: _scalar(loss_fn(first, *args[1:])), args[0])
    given = {id(a) for a in jax.tree.leaves(args)}
    return [r for r in jax.tree.leaves(f_vjp) if id(r) not in given]
  return sum(math.prod(r.shape) * r.dtype.itemsize for r in jax.eval_shape(residuals, *args))


def _scalar(out):
  return out[0] if isinstance(out, tuple) else out


def compile_and_report(step: Callable, state: Any, batch: Any, *, capacity_gb: float = 0.0,
                       capacity_name: str = "") -> MemoryReport:
  """Lowers and compiles `step(state, batch)` for the shardings of its abstract arguments.

  Args:
    step: the jitted step (`interp.train.loop.compile_step`), with in/out shardings.
    state: abstract TrainState (ShapeDtypeStructs with shardings; `interp.train.state.abstract`).
      Any other pytree works too; it then counts as "other state".
    batch: abstract batch, a ShapeDtypeStruct (or pytree of them) with its sharding.
    capacity_gb: per-device memory to compare against (0 = no comparison).
    capacity_name: what that capacity is, for the report (e.g. "TPU v5p HBM").
  Returns:
    The MemoryReport; `report.format()` is the printable table.
  """
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  stats = compiled.memory_analysis()
  if stats is None:
    raise RuntimeError(f"the {jax.default_backend()} backend gives no memory analysis for "
                       "compiled programs")
  params = getattr(state, "params", None)
  opt_state = getattr(state, "opt_state", None)
  parts = [x for x in (params, opt_state) if x is not None]
  all_state = shard_bytes(state)
  named = sum(shard_bytes(x) for x in parts)
  first = jax.tree.leaves(batch)[0].sharding
  mesh = getattr(first, "mesh", None)
  return MemoryReport(
      mesh=dict(mesh.shape) if mesh is not None else {"devices": len(first.device_set)},
      platform=jax.default_backend(),
      num_params=sum(math.prod(x.shape) for x in jax.tree.leaves(params if params is not None
                                                                  else state)),
      parameters=shard_bytes(params) if params is not None else 0,
      optimizer_state=shard_bytes(opt_state) if opt_state is not None else 0,
      other_state=all_state - named, batch=shard_bytes(batch),
      temporaries=int(stats.temp_size_in_bytes), arguments=int(stats.argument_size_in_bytes),
      outputs=int(stats.output_size_in_bytes), aliased=int(stats.alias_size_in_bytes),
      code=int(stats.generated_code_size_in_bytes), lower_s=lowered_at - start,
      compile_s=compiled_at - lowered_at, capacity=int(capacity_gb * GB),
      capacity_name=capacity_name)
