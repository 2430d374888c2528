"""Our side of the device check, part 1 (JAX): the environment, parity and the LM step's MFU.

Vocabulary:
  device       `jax.devices()[0]`, the default backend's first device (the accelerator there,
               a CPU here); `cpu` is `jax.devices("cpu")[0]`, the reference.
  parity       the same computation on the device and on the CPU from the same inputs:
               max_abs_diff = max |device - cpu| over every leaf, rel_diff = the largest
               per-leaf ratio of max |device - cpu| to max |cpu| (masked attention scores
               left out; a train step's parameters use the whole tree's max instead). float32 runs under `jax.default_matmul_precision("highest")` (XLA
               may otherwise use TF32 on GPUs; that default is reported beside it) and passes at
               rel_diff <= 1e-4; bfloat16 (through `interp.precision`) against the float32
               reference at <= 5e-2 (see TOLERANCE).
  MFU          model FLOPs utilisation = 6 * params * tokens / step_seconds / bf16 peak: the
               6 N T count of forward and backward matmul FLOPs (attention's quadratic part is
               left out), over the device's dense bf16 peak (`device_report.PEAK_BF16_TFLOPS`).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

from interp import precision as precision_lib
from interp.bench import device_report, measure
from interp.bench.device_items import Unavailable, bf16_policy, shape
from interp.bench.device_sizes import ModelShape, Sizes
from interp.models import config as mc
from interp.models import hooks as hooks_lib
from interp.models import transformer
from interp.parallel import mesh as mesh_lib

# Largest per-leaf |diff| / max|reference| allowed. bfloat16 rounds to 2^-8 = 3.9e-3 relative; a
# forward of a few layers and its backward compound a handful of such roundings (measured on CPU
# against the float32 reference: 1.6e-2 forward, 2.0e-2 gradients), so 5e-2 passes bf16 arithmetic
# and still fails a wrong cast or a dropped float32 accumulation (errors of order 1).
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


# ----- Helpers shared with `device_workloads`.

def model_config(s: ModelShape, n_ctx: int):
  """The TransformerConfig of a shape (see `device_sizes`)."""
  s = shape(s)
  if s.family == "gpt2":
    return mc.gpt2("small", vocab_size=s.vocab, n_ctx=n_ctx, d_model=s.d_model,
                   n_layers=s.n_layers, n_heads=s.n_heads, d_head=s.d_head, d_mlp=s.d_mlp)
  window = s.window or max(n_ctx // 2, 1)
  return mc.gemma3_270m(vocab_size=s.vocab, d_model=s.d_model, n_layers=s.n_layers,
                        n_heads=s.n_heads, n_kv_heads=s.n_kv_heads, d_head=s.d_head,
                        d_mlp=s.d_mlp, sliding_window=window, global_every=min(6, s.n_layers))


def device_memory() -> dict | None:
  """The device's allocator counters (None on CPU, which keeps none)."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
  return {k: int(stats[k]) for k in keys if k in stats}


def memory_fields() -> dict:
  """Peak device memory (GiB, or None on CPU) and the host's peak RSS (GiB) so far."""
  mem = device_memory()
  return {"device_peak_gib": None if mem is None else mem.get("peak_bytes_in_use", 0) / 2**30,
          "host_peak_rss_gib": measure.ru_maxrss() / 2**30}


def peak_tflops() -> float | None:
  return device_report.peak_bf16_tflops(jax.devices()[0].device_kind)


def precision_kwargs(precision: str) -> dict:
  """The keyword arguments that run a model function in `precision`: {} for float32 (the
  functions' default), else {"precision": the policy}."""
  return {} if precision == "float32" else {"precision": bf16_policy()}


def timed(call, reps: int, warmup: int = 1) -> list[float]:
  measure.time_calls(call, jax.block_until_ready, warmup)
  return measure.time_calls(call, jax.block_until_ready, reps)


# ----- env.

def matmul_tflops(n: int, dtype, reps: int = 10) -> float:
  """Best TFLOP/s of an n x n x n matmul in `dtype` (the achievable peak, not the datasheet's)."""
  ka, kb = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (n, n), jnp.float32).astype(dtype) for k in (ka, kb))
  mm = jax.jit(jnp.matmul)
  return 2 * n**3 / min(timed(lambda: mm(a, b), reps)) / 1e12


def environment(what: str, precision: str, sizes: Sizes) -> dict:
  del what, precision
  dev = jax.devices()[0]
  versions = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "sae-lens",
               "transformer-lens"):
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  peak = peak_tflops()
  bf16 = matmul_tflops(sizes.matmul_n, jnp.bfloat16)
  f32 = matmul_tflops(sizes.matmul_n, jnp.float32)
  return {"versions": versions, "python": platform.python_version(),
          "backend": jax.default_backend(), "device_kind": dev.device_kind,
          "devices": [str(d) for d in jax.devices()], "device_count": jax.device_count(),
          "device_memory": device_memory(), "cpu_count": os.cpu_count(),
          "host_memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
          "peak_bf16_tflops_datasheet": peak,
          "matmul_n": sizes.matmul_n, "bf16_matmul_tflops": bf16, "f32_matmul_tflops": f32,
          "bf16_matmul_fraction_of_peak": None if peak is None else bf16 / peak,
          "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


# ----- parity.

# Entries this large are masks (attention scores set to the dtype's lowest value), not values:
# they would make every relative difference vanish, so they are left out of both.
_SENTINEL = 1e30


def compare(got, want, per_leaf: bool = True) -> dict:
  """max |got - want| over every leaf of two pytrees (masked entries left out), and its ratio
  to max |want|: the largest per-leaf ratio, or (per_leaf=False) over the whole tree."""
  got, want = jax.tree.leaves(jax.device_get(got)), jax.tree.leaves(jax.device_get(want))
  diff, rel, scale = 0.0, 0.0, 0.0
  for g, w in zip(got, want):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    keep = np.abs(w) < _SENTINEL
    if not keep.any():
      continue
    d, s = float(np.max(np.abs(g - w)[keep])), float(np.max(np.abs(w[keep])))
    diff, rel, scale = max(diff, d), max(rel, d / max(s, 1e-30)), max(scale, s)
  if not per_leaf:
    rel = diff / max(scale, 1e-30)
  return {"max_abs_diff": diff, "rel_diff": rel, "leaves": len(want)}


def parity_model(sizes: Sizes):
  """A tiny Gemma-3-shaped model: RoPE, GQA, RMSNorm, post-norms, local and global layers."""
  return model_config(ModelShape("gemma3", 64, 2, 4, 1, 16, 128, 256), sizes.parity_ctx + 1)


def parity_inputs(cfg, sizes: Sizes):
  """Parameters (made on the CPU, so both sides start from the same bits) and token rows."""
  with jax.default_device(jax.devices("cpu")[0]):
    params = jax.jit(lambda: transformer.init_params(cfg, jax.random.key(0)))()
  rows = np.random.default_rng(0).integers(0, cfg.vocab_size,
                                           (sizes.parity_batch, sizes.parity_ctx + 1), np.int32)
  return params, rows


def _on(device, tree):
  return jax.device_put(tree, device)


def parity(what: str, precision: str, sizes: Sizes) -> dict:
  dev, cpu = jax.devices()[0], jax.devices("cpu")[0]
  cfg = parity_model(sizes)
  if what == "sharded_step":
    return sharded_step_parity(cfg, sizes, precision)
  names = hooks_lib.hook_names(cfg)
  jitted = {}  # one function per (device, precision): a second run on the same device reuses it
  if what == "forward":
    kwargs = precision_kwargs(precision)

    def make(d, **kw):
      del d
      hooks = hooks_lib.Hooks(capture=names)
      return jax.jit(lambda p, t: transformer.forward(cfg, p, t, hooks, **kw))
    args = lambda d: (_on(d, params), _on(d, rows[:, :-1]))
  elif what == "gradients":
    from interp.train import lm
    kwargs = precision_kwargs(precision)

    def make(d, **kw):
      mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"), devices=[d])
      return jax.jit(jax.value_and_grad(lm.lm_loss(cfg, mesh, **kw), has_aux=True))
    args = lambda d: (_on(d, params), _on(d, rows))
  else:
    raise ValueError(f"unknown parity item {what!r}; valid: forward, gradients, sharded_step")

  def run(d, **kw):
    key = (d, bool(kw))
    if key not in jitted:
      jitted[key] = make(d, **kw)
    return jitted[key](*args(d))

  params, rows = parity_inputs(cfg, sizes)  # after the checks above: a skip costs nothing
  with jax.default_matmul_precision("highest"):
    want = run(cpu)
  with jax.default_matmul_precision("highest") if precision == "float32" else \
      contextlib.nullcontext():
    got = run(dev, **kwargs)
  res = {"device": str(dev), "reference": str(cpu), **compare(got, want),
         "tolerance_rel": TOLERANCE[precision]}
  if precision == "float32" and dev.platform != "cpu":
    res["default_precision"] = compare(run(dev), want)  # TF32 on GPUs where XLA picks it
  res["within_tolerance"] = res["rel_diff"] <= TOLERANCE[precision]
  return res


def sharded_step_parity(cfg, sizes: Sizes, precision: str) -> dict:
  """One LM train step on every device of the default backend (data x model mesh) against the
  same step on one CPU device, from the same state and batch."""
  from interp.train import lm
  from interp.train.optim import OptimizerConfig
  policy = precision_lib.FLOAT32 if precision == "float32" else bf16_policy()
  _, rows = parity_inputs(cfg, sizes)
  devices, cpu = jax.devices(), jax.devices("cpu")[0]
  n = len(devices)
  text = f"data:{n // 2},model:2" if n % 2 == 0 and cfg.n_heads % 2 == 0 else f"data:{n}"
  optim = OptimizerConfig(lr=1e-3, warmup_steps=0)
  results, start = {}, None
  for name, mesh in (("cpu", mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"),
                                                devices=[cpu])),
                     ("device", mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(text), devices))):
    progs = lm._programs(cfg, optim, mesh, policy)  # the trainer's own init and step, memoised
    if start is None:  # made once, on the CPU: both steps start from the same bits
      start = jax.device_get(progs.init(jax.random.key(0)))
    state = jax.device_put(start, jax.tree.map(lambda x: x.sharding, progs.target))
    batch = jax.device_put(rows, mesh_lib.batch_sharding(mesh))
    with jax.default_matmul_precision("highest") if precision == "float32" else \
        contextlib.nullcontext():
      state, metrics = progs.step(state, batch)
    results[name] = (state.params, metrics["loss"])
  # Adam's first update is about lr * sign(g): an entry whose gradient is near zero may move
  # either way under another reduction order (bf16: leaves that start at zero then differ by
  # 2 lr, a per-leaf ratio of ~2 that says nothing), so parameters use the whole tree's scale.
  res = {"mesh": text, "devices": n,
         "params": compare(results["device"][0], results["cpu"][0], per_leaf=False),
         "loss": compare(results["device"][1], results["cpu"][1]),
         "tolerance_rel": TOLERANCE[precision]}
  res["max_abs_diff"] = max(res["params"]["max_abs_diff"], res["loss"]["max_abs_diff"])
  res["rel_diff"] = max(res["params"]["rel_diff"], res["loss"]["rel_diff"])
  res["within_tolerance"] = res["rel_diff"] <= TOLERANCE[precision]
  return res


# ----- lm.

def lm_step(what: str, precision: str, sizes: Sizes) -> dict:
  """The LM trainer's step at ~1B parameters: compile, memory check, timed steps, MFU."""
  del what
  from interp.train import lm
  from interp.train.optim import OptimizerConfig
  policy = precision_lib.FLOAT32 if precision == "float32" else bf16_policy()
  cfg = model_config(sizes.lm_model, sizes.lm_ctx)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  progs = lm._programs(cfg, OptimizerConfig(lr=1e-4, warmup_steps=0), mesh, policy)
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(progs.target.params))
  batch_spec = jax.ShapeDtypeStruct((sizes.lm_batch, sizes.lm_ctx + 1), jnp.int32,
                                    sharding=mesh_lib.batch_sharding(mesh))
  t0 = time.perf_counter()
  compiled = progs.step.lower(progs.target, batch_spec).compile()
  res = {"params": n_params, "tokens_per_step": sizes.lm_batch * sizes.lm_ctx,
         "compile_s": time.perf_counter() - t0, "config": cfg.to_dict()}
  ma, mem = compiled.memory_analysis(), device_memory()
  if ma is not None:
    need = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + \
        ma.temp_size_in_bytes
    res["xla_bytes_needed"] = int(need)
    if mem and "bytes_limit" in mem and need > mem["bytes_limit"]:
      raise Unavailable(f"does not fit: XLA needs {need / 2**30:.1f} GiB, the device allows "
                        f"{mem['bytes_limit'] / 2**30:.1f} GiB")
  state = progs.init(jax.random.key(0))
  rows = np.random.default_rng(0).integers(0, cfg.vocab_size, batch_spec.shape, np.int32)
  batch = jax.device_put(rows, batch_spec.sharding)
  holder = {"state": state}

  def step():
    holder["state"], metrics = compiled(holder.pop("state"), batch)
    return metrics
  times = timed(step, sizes.lm_steps)
  sec = statistics.median(times)
  flops = 6 * n_params * res["tokens_per_step"]
  peak = peak_tflops()
  res.update({"step_seconds": times, "step_seconds_median": sec,
              "tokens_per_s": res["tokens_per_step"] / sec, "model_tflops": flops / sec / 1e12,
              "mfu": None if peak is None else flops / sec / 1e12 / peak,
              "peak_bf16_tflops": peak, "loss": float(step()["loss"]), **memory_fields()})
  return res
