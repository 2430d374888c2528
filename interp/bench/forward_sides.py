"""The two sides of `interp.bench.forward`: interp's jitted forward-with-cache and TransformerLens's
`run_with_cache`, each built as a `harness.Runner`, plus each library's n x n float32 GEMM rate.

Both build the same random-weight model (`ModelShape`) on the same [batch, ctx] tokens and capture
the same hooks (`captured_names`). JAX and torch are imported inside the functions, so a worker
running one side never imports the other's library.
Runners take a `forward.ModelShape` (`spec`) and a `forward.ForwardBenchConfig` (`cfg`); those
are not imported here because `forward` imports this module.
"""

from __future__ import annotations

import functools
import os
import re
import statistics
import sys
import time

from interp.bench.harness import Runner
from interp.bench.measure import time_calls


def captured_names(names, skip_scores: bool = False) -> list[str]:
  """The benchmarked hook set, filtered from a model's hook names (TransformerLens spelling)."""
  attn = "q|k|v|pattern|z" if skip_scores else "q|k|v|attn_scores|pattern|z"
  pat = re.compile(rf"blocks\.\d+\.(hook_resid_(pre|mid|post)|hook_attn_out|attn\.hook_({attn}))$")
  return [n for n in names if pat.match(n)]


@functools.lru_cache(maxsize=1)
def random_params(mcfg, mesh, seed: int = 0):
  """`sharded.init(mcfg, jax.random.key(seed), mesh)`: (params, shardings), the last call's
  kept. A worker that measures one model several times (--quick's single worker: a side and
  then the pair; the device check's precisions and graph lengths) compiles the init once
  (about 3 s on CPU, most of a tiny model's set-up); a worker with one item pays the same as
  before. Nothing donates these parameters, so sharing them is safe."""
  import jax
  from interp.models import sharded
  return sharded.init(mcfg, jax.random.key(seed), mesh)


def interp_config(spec):
  """The interp TransformerConfig of a shape: attn-only toy or GPT-2 family."""
  from interp.models import config as mc
  if spec.attn_only:
    return mc.attn_only(n_layers=spec.n_layers, d_model=spec.d_model, n_heads=spec.n_heads,
                        n_ctx=spec.ctx, vocab_size=spec.vocab)
  return mc.gpt2("small", vocab_size=spec.vocab, n_ctx=spec.ctx, d_model=spec.d_model,
                 n_layers=spec.n_layers, n_heads=spec.n_heads, d_head=spec.d_model // spec.n_heads,
                 d_mlp=spec.d_mlp)


def gemm_stats(n: int, times: list[float]) -> dict:
  """GFLOP/s of an n x n GEMM from its timings (median and best)."""
  flop = 2 * n**3
  return {"n": n, "gflop_per_s": flop / statistics.median(times) / 1e9,
          "gflop_per_s_best": flop / min(times) / 1e9}


def jax_gemm(n: int, reps: int) -> dict:
  import jax
  import jax.numpy as jnp
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  mm(a, b).block_until_ready()
  return gemm_stats(n, time_calls(lambda: mm(a, b), jax.block_until_ready, max(reps, 5)))


def torch_gemm(n: int, reps: int) -> dict:
  import torch
  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  return gemm_stats(n, time_calls(lambda: torch.mm(a, b), lambda o: o, max(reps, 5)))


def interp_runner(spec, cfg) -> Runner:
  import jax
  import numpy as np
  from interp.models import hooks, sharded
  from interp.parallel import mesh as mesh_lib

  mcfg = interp_config(spec)
  names = captured_names(hooks.hook_names(mcfg), cfg.skip_scores)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(cfg.mesh))
  params, shardings = random_params(mcfg, mesh)
  tokens = mesh_lib.global_batch(
      mesh, np.random.default_rng(0).integers(0, spec.vocab, (spec.batch, spec.ctx), np.int32))
  jax.block_until_ready((params, tokens))
  fwd = sharded.make_forward(mcfg, mesh, shardings, capture=names,
                             reuse_outputs=cfg.interp_reuse_outputs)

  def setup():
    t0 = time.perf_counter()
    fwd.lower(params, tokens)
    t1 = time.perf_counter()
    mem = fwd.compile(params, tokens) or None  # lowers again: compile_seconds includes it
    t2 = time.perf_counter()
    return {"lower_seconds": t1 - t0, "compile_seconds": t2 - t1, "xla_memory_analysis": mem}

  def call():
    return fwd(params, tokens)

  def report():
    _, cache = call()
    unique = {id(v): v for v in cache.values()}  # aliased hooks share one array
    res = {"cache_bytes": int(sum(v.nbytes for v in cache.values())), "hooks": sorted(cache),
           "cache_unique_bytes": int(sum(v.nbytes for v in unique.values())),
           "hooks_sharing_storage": sorted(n for n, v in cache.items()
                                           if any(v is cache[o] for o in cache if o < n)),
           "donated_calls": fwd.donated_calls,
           "path": ("sharded.make_forward (reuse_outputs: donates unheld previous outputs)"
                    if cfg.interp_reuse_outputs else "sharded.make_forward(reuse_outputs=False)"),
           "versions": {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                        "mesh": dict(mesh.shape), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                        "matmul_precision": str(jax.config.jax_default_matmul_precision)}}
    return res

  return Runner(setup, call, jax.block_until_ready, report)


def tl_model(spec):
  """A random-weight TL-native model; TL 4's replacement for HookedTransformer(cfg)."""
  from transformer_lens import TransformerBridge
  from transformer_lens.config import TransformerBridgeConfig
  import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
  tcfg = TransformerBridgeConfig(
      d_model=spec.d_model, d_head=spec.d_model // spec.n_heads, n_layers=spec.n_layers,
      n_ctx=spec.ctx, n_heads=spec.n_heads, d_vocab=spec.vocab, act_fn="gelu_new",
      attn_only=spec.attn_only, d_mlp=None if spec.attn_only else spec.d_mlp,
      normalization_type=None if spec.attn_only else "LN", positional_embedding_type="standard",
      seed=0)
  return TransformerBridge.boot_native(tcfg).eval()


def tl_runner(spec, cfg) -> Runner:
  from importlib import metadata

  import numpy as np
  import torch
  torch.set_num_threads(cfg.threads)
  model = tl_model(spec)
  names = captured_names(model.hook_dict, cfg.skip_scores)
  tokens = torch.from_numpy(
      np.random.default_rng(0).integers(0, spec.vocab, (spec.batch, spec.ctx), np.int64))

  def call():
    with torch.inference_mode():
      return model.run_with_cache(tokens, names_filter=names)

  def report():
    _, cache = call()
    ptr = {n: cache[n].untyped_storage().data_ptr() for n in names}
    sizes = {ptr[n]: cache[n].untyped_storage().nbytes() for n in names}
    return {"cache_bytes": int(sum(cache[n].nbytes for n in names)),
            "cache_unique_bytes": int(sum(sizes.values())),  # hooks may share one tensor
            "hooks_sharing_storage": sorted(n for n in names
                                            if any(ptr[n] == ptr[o] for o in names if o < n)),
            "hooks": sorted(names),
            "versions": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                         "transformer_lens": metadata.version("transformer-lens"),
                         "jax_imported": "jax" in sys.modules}}

  return Runner(lambda: {}, call, lambda out: out, report)
