"""The two sides of `interp.bench.sae`: our jitted SAE train step and SAELens's, each built as a
`harness.Runner` whose call is one training step, plus JAX's float32 matmul of the step's shape.

Both train the same shapes on the same fixed random batch (`batch_data`). JAX and torch are
imported inside the functions, so a worker running one side never imports the other's library.
Runners take a `sae.Arch` (`arch`) and a `sae.SAEBenchConfig` (`cfg`); those are not
imported here because `sae` imports this module.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import time

from interp.bench.harness import Runner

# The checkout root: SAELens is imported through its tests' compatibility shim.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def batch_data(cfg):
  """The fixed batch both sides train on (numpy float32 [batch, d_in])."""
  import numpy as np
  return np.random.default_rng(0).normal(size=(cfg.batch, cfg.d_in)).astype(np.float32)


def l0_shift(pre, target_l0: float):
  """The constant that, taken off every encoder bias, leaves `target_l0` of the pre-activations
  [batch, d_sae] (numpy) positive per token on average."""
  import numpy as np
  return float(np.quantile(np.asarray(pre, np.float32).reshape(-1),
                           1.0 - target_l0 / pre.shape[-1]))


def ours_runner(arch, cfg, precision=None) -> Runner:
  """Our compiled SAE step; `precision` an `interp.precision.Precision` (None: float32)."""
  import jax
  from interp import precision as precision_lib
  from interp.parallel import mesh as mesh_lib
  from interp.sae import train as sae_train
  from interp.sae.config import SAEConfig
  from interp.train.optim import OptimizerConfig

  if arch in ("relu", "relu_sparse"):
    sae_cfg = SAEConfig(cfg.d_in, cfg.d_sae, activation="relu", l1_coeff=cfg.l1_coeff,
                        decoder_norm=cfg.decoder_norm,
                        sparse_cap=cfg.sparse_cap if arch == "relu_sparse" else 0)
  else:
    sae_cfg = SAEConfig(cfg.d_in, cfg.d_sae, activation="topk", k=cfg.k, dead_mitigation="auxk")
  optim = OptimizerConfig(lr=cfg.lr, warmup_steps=0, grad_clip=1.0, b2=0.999)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  data = batch_data(cfg)
  n_sample = min(cfg.batch, 1024)
  progs = sae_train.programs(sae_cfg, optim, mesh, n_sample,
                             precision or precision_lib.FLOAT32)
  state = progs.init(jax.random.key(0), data[:n_sample])
  if arch == "relu_sparse":  # the encoder bias lowered to --sparse_l0 codes a token
    p = state.params
    pre = (data * p["norm_scale"] - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    state = state.replace(params=jax.device_put(
        dict(p, b_enc=p["b_enc"] - l0_shift(pre, cfg.sparse_l0)),
        jax.tree.map(lambda x: x.sharding, progs.target.params)))
  holder = {"state": jax.block_until_ready(state)}
  batch = jax.block_until_ready(jax.device_put(data, progs.batch))

  def setup():
    t0 = time.perf_counter()
    holder["compiled"] = progs.step.lower(holder["state"], batch).compile()
    res = {"compile_seconds": time.perf_counter() - t0}
    ma = holder["compiled"].memory_analysis()
    if ma is not None:
      res["xla_memory_analysis"] = {"temp_bytes": ma.temp_size_in_bytes,
                                    "argument_bytes": ma.argument_size_in_bytes,
                                    "output_bytes": ma.output_size_in_bytes,
                                    "alias_bytes": ma.alias_size_in_bytes}
    return res

  def step():
    holder["state"], metrics = holder["compiled"](holder.pop("state"), batch)
    return holder["state"], metrics

  def report():
    return {"final_metrics": {k: float(v) for k, v in step()[1].items()},
            "sae_config": sae_cfg.to_dict(),
            "precision": (precision or precision_lib.FLOAT32).name,
            "versions": {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                         "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                         "path": "interp.sae.train.programs(...).step, AOT-compiled"}}

  return Runner(setup, step, jax.block_until_ready, report)


def matmul_runner(cfg) -> Runner:
  """float32 [batch x d_in] @ [d_in x d_sae] with JAX: the machine's matmul limit."""
  import jax
  import jax.numpy as jnp
  ka, kb = jax.random.split(jax.random.key(1))
  a = jax.random.normal(ka, (cfg.batch, cfg.d_in), jnp.float32)
  b = jax.random.normal(kb, (cfg.d_in, cfg.d_sae), jnp.float32)
  mm = jax.jit(jnp.matmul).lower(a, b).compile()
  jax.block_until_ready(mm(a, b))
  return Runner(dict, lambda: mm(a, b), jax.block_until_ready, dict)


# ----- SAELens (torch).

def import_sae_lens():
  """sae_lens through tests/saelens_compat.py (loaded by path: importing the `tests` package
  would give this process 8 simulated JAX devices)."""
  path = os.path.join(ROOT, "tests", "saelens_compat.py")
  spec = importlib.util.spec_from_file_location("saelens_compat", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.import_sae_lens()


def saelens_runner(arch, cfg) -> Runner:
  from importlib import metadata

  import torch
  torch.set_num_threads(cfg.threads)
  sae_lens = import_sae_lens()
  from sae_lens.saes.sae import TrainStepInput
  torch.manual_seed(0)
  if arch in ("relu", "relu_sparse"):
    sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
        d_in=cfg.d_in, d_sae=cfg.d_sae, l1_coefficient=cfg.l1_coeff, device=cfg.torch_device))
    coefficients = {"l1": cfg.l1_coeff}
  else:
    sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
        d_in=cfg.d_in, d_sae=cfg.d_sae, k=cfg.k, device=cfg.torch_device))
    coefficients = {}
  device = torch.device(cfg.torch_device)
  sae.to(device).train()
  optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
  x = torch.from_numpy(batch_data(cfg)).to(device)
  if arch == "relu_sparse":  # the same starting sparsity as ours (its step is dense anyway)
    with torch.no_grad():
      pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
      sae.b_enc.sub_(l0_shift(pre.cpu().numpy(), cfg.sparse_l0))
  since_fired = torch.zeros(cfg.d_sae, device=device)
  dead_window = 1000  # SAELens's default dead_feature_window
  count = [0]

  def step():
    """SAETrainer._train_step without autocast, logging and schedulers (constant here)."""
    out = sae.training_forward_pass(TrainStepInput(
        sae_in=x, coefficients=coefficients, dead_neuron_mask=(since_fired > dead_window).bool(),
        n_training_steps=count[0], is_logging_step=False))
    with torch.no_grad():
      firing = out.feature_acts.bool().float()
      did_fire = firing.sum(-2).bool()
      since_fired.add_(1)
      since_fired[did_fire] = 0
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    count[0] += 1
    return out.loss.detach()

  def report():
    return {"final_loss": float(step()),
            "versions": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                         "sae_lens": sae_lens.__version__,
                         "transformer_lens": metadata.version("transformer-lens"),
                         "class": type(sae).__name__, "jax_imported": "jax" in sys.modules}}

  def block(out):
    if device.type == "cuda":  # kernels run asynchronously: a step ends when the device is done
      torch.cuda.synchronize(device)
    return out

  return Runner(lambda: {"compile_seconds": 0.0}, step, block, report)


# ----- Where our step's time goes: its phases as separately jitted pieces.

PHASES = ("encode_matmul", "select", "decode", "code_grad", "decoder_grad", "encoder_grad",
          "optimizer")


def phase_programs(arch, cfg) -> dict:
  """{phase: (jitted fn, args)}: the products and selections our step does, each alone, at the
  step's shapes (float32; the encoder bias, clipping and metrics left out):
    encode_matmul  x_c @ W_enc, dense [batch, d_sae]
    select         topk: lax.top_k of the pre-activations; relu: ReLU over them
    decode         topk: the k decoder rows per token gathered and summed; relu: acts @ W_dec
    code_grad      the gradient reaching the codes: topk g . (the decode's gathered rows),
                   relu g @ W_dec^T
    decoder_grad   topk: a scatter-add of batch*k rows into [d_sae, d_in]; relu: acts^T @ g
    encoder_grad   topk: the same scatter of x_c rows; relu: x_c^T @ g_pre
    optimizer      one AdamW update of W_enc, b_enc, W_dec, b_dec
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  k_enc, k_g = jax.random.split(jax.random.key(2))
  x = jnp.asarray(batch_data(cfg))
  w_enc = jax.random.normal(k_enc, (cfg.d_in, cfg.d_sae), jnp.float32) / np.sqrt(cfg.d_in)
  w_dec = w_enc.T
  g = jax.random.normal(k_g, (cfg.batch, cfg.d_in), jnp.float32)  # d loss / d x_hat
  pre = jax.jit(jnp.matmul)(x, w_enc)
  out = {"encode_matmul": (jax.jit(jnp.matmul), (x, w_enc))}
  if arch == "relu_sparse":  # its sparse step's work is at most TopK's with k = the cap
    cfg, arch = dataclasses.replace(cfg, k=cfg.sparse_cap), "topk"
  if arch == "relu":
    acts = jax.nn.relu(pre)
    out.update(select=(jax.jit(jax.nn.relu), (pre,)),
               decode=(jax.jit(jnp.matmul), (acts, w_dec)),
               code_grad=(jax.jit(lambda g, w: g @ w.T), (g, w_dec)),
               decoder_grad=(jax.jit(lambda a, g: a.T @ g), (acts, g)),
               encoder_grad=(jax.jit(lambda x, gp: x.T @ gp), (x, acts)))
  else:
    values, indices = jax.jit(jax.lax.top_k, static_argnums=1)(pre, cfg.k)

    def scatter(v, i, rows):  # sum_b v[b, j] rows[b] into row i[b, j]
      summed = (v[..., None] * rows[:, None, :]).reshape(-1, rows.shape[-1])
      return jnp.zeros((cfg.d_sae, rows.shape[-1]), rows.dtype).at[i.reshape(-1)].add(summed)

    out.update(select=(jax.jit(jax.lax.top_k, static_argnums=1), (pre, cfg.k)),
               decode=(jax.jit(lambda v, i, w: jnp.einsum(
                   "bk,bkd->bd", v, jnp.take(w, i, axis=0))), (values, indices, w_dec)),
               # The step keeps the decode's gathered rows for this product: not gathered again.
               code_grad=(jax.jit(lambda g, rows: jnp.einsum("bd,bkd->bk", g, rows)),
                          (g, jnp.take(w_dec, indices, axis=0))),
               decoder_grad=(jax.jit(scatter), (values, indices, g)),
               encoder_grad=(jax.jit(scatter), (values, indices, x)))
  params = {"W_enc": w_enc, "W_dec": w_dec, "b_enc": jnp.zeros(cfg.d_sae),
            "b_dec": jnp.zeros(cfg.d_in)}
  opt = optax.adamw(cfg.lr, b2=0.999)

  def update(grads, state, params):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  out["optimizer"] = (jax.jit(update), (params, opt.init(params), params))
  return out


def phase_seconds(arch, cfg, reps: int = 3) -> dict:
  """{phase: median wall seconds over `reps` calls} of `phase_programs` (after one warm call)."""
  import statistics

  import jax
  seconds = {}
  for name, (fn, args) in phase_programs(arch, cfg).items():
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t0)
    seconds[name] = statistics.median(times)
  return seconds
