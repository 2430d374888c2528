"""Our side of the device check, part 2 (JAX): SAE steps, forward with cache, attribution graphs.

Each reuses a benchmark's runner or the library call it times (`sae_sides.ours_runner`,
`forward_sides.captured_names`, `graphs.attribute.build`) at the device check's sizes, and adds
the device's numbers: peak device memory (`memory_stats()["peak_bytes_in_use"]`: lifetime, so
the driver gives every memory measurement its own process at full size) and the fraction of
the device's dense bf16 peak.

Definitions (copied into the JSON by `device_report.DEFINITIONS`):
  SAE step FLOPs   12 * batch * d_in * d_sae: the six dense matmuls of forward and backward
                   (`interp.bench.sae.SAEBenchConfig.flops_per_step`).
  forward cache    every hook_resid_pre/mid/post, attn.hook_q/k/v/attn_scores/pattern/z and
                   hook_attn_out (`forward_sides.captured_names`), the set TransformerLens
                   caches too; tokens/s = batch * ctx / median seconds per call.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import numpy as np

from interp.bench import device_report, forward_sides, sae_sides
from interp.bench.device_items import Unavailable, bf16_policy, shape
from interp.bench.device_jax import (memory_fields, model_config, peak_tflops, precision_kwargs,
                                     timed)
from interp.bench import device_sizes as sizes_lib
from interp.bench.device_sizes import Sizes
from interp.models import hooks as hooks_lib
from interp.models import sharded, transformer
from interp.parallel import mesh as mesh_lib


def sae_step(arch: str, precision: str, sizes: Sizes) -> dict:
  """Our jitted, donated SAE train step (`interp.sae.train.programs`) at research sizes, in
  `precision` (bfloat16: the encoder and decoder products, with float32 state and losses)."""
  cfg = sizes_lib.sae_config(arch, sizes)
  runner = sae_sides.ours_runner(arch, cfg, bf16_policy() if precision != "float32" else None)
  res = runner.setup()
  times = timed(runner.call, cfg.steps, max(cfg.warmup, 1))
  res.update(device_report.sae_rates(cfg, times, peak_tflops()))
  res.update(runner.report())
  res.update(memory_fields())
  return res


def forward_fn(mcfg, mesh, shardings, names, precision: str):
  """The library's jitted forward with cache; with a bf16 policy, `transformer.forward`'s."""
  kwargs = precision_kwargs(precision)
  if not kwargs:
    return sharded.make_forward(mcfg, mesh, shardings, capture=names)
  hooks = hooks_lib.Hooks(capture=tuple(names))
  return jax.jit(lambda p, t: transformer.forward(mcfg, p, t, hooks, **kwargs))


def forward_cache(name: str, precision: str, sizes: Sizes) -> dict:
  """Forward with cache at a model's real shapes (random weights): tokens/s and peak memory."""
  spec = shape(sizes.forward_models[name])
  mcfg = model_config(spec, sizes.forward_ctx)
  names = forward_sides.captured_names(hooks_lib.hook_names(mcfg))
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  params, shardings = forward_sides.random_params(mcfg, mesh)  # shared by both precisions
  rows = np.random.default_rng(0).integers(0, spec.vocab,
                                           (sizes.forward_batch, sizes.forward_ctx), np.int32)
  tokens = mesh_lib.global_batch(mesh, rows)
  fwd = forward_fn(mcfg, mesh, shardings, names, precision)
  t0 = time.perf_counter()
  compiled = fwd.lower(params, tokens).compile()
  res = {"compile_s": time.perf_counter() - t0, "hooks": len(names),
         "tokens_per_call": rows.size, "params": transformer.count_params(mcfg)}
  times = timed(lambda: compiled(params, tokens), sizes.forward_reps)
  # The compiled call returns an aliased hook (resid_post L = resid_pre L+1) once; the Forward
  # hands it back under every name, as TransformerLens does, so cache_bytes counts like TL's and
  # cache_unique_bytes is what is held.
  _, cache = fwd(params, tokens)
  unique = {id(v): v.nbytes for v in cache.values()}
  sec = statistics.median(times)
  res.update({"seconds": times, "seconds_median": sec, "tokens_per_s": rows.size / sec,
              "cache_bytes": int(sum(v.nbytes for v in cache.values())),
              "cache_unique_bytes": int(sum(unique.values())), **memory_fields()})
  return res


def graph_build(length: str, precision: str, sizes: Sizes) -> dict:
  """One attribution graph of a random `length`-token prompt on a random-weight model of
  `sizes.graph_model`'s shapes with a random TopK transcoder (cost depends on the weights only
  through the number of active features, which TopK fixes at k per layer and token)."""
  from interp.graphs import attribute
  from interp.sae import transcoder as tc
  if precision != "float32":
    raise Unavailable("bf16: graphs are built in float32")
  n = int(length)
  mcfg = model_config(sizes.graph_model, max(n, 16))
  # Lengths up to 16 share one model (and its compiled init) in --quick's single worker.
  params, _ = forward_sides.random_params(mcfg, mesh_lib.make_mesh(
      mesh_lib.MeshConfig.parse("data:1,model:1")))
  tc_cfg = tc.TranscoderConfig(n_layers=mcfg.n_layers, d_model=mcfg.d_model,
                               d_latent=sizes.graph_d_latent, k=sizes.graph_k)
  tc_params = tc.init(tc_cfg, jax.random.key(1))
  tokens = np.random.default_rng(0).integers(0, mcfg.vocab_size, n, np.int32)
  config = attribute.GraphConfig(max_feature_nodes=sizes.graph_max_feature_nodes,
                                 chunk=sizes.graph_chunk)
  t0 = time.perf_counter()
  graph = attribute.build(mcfg, params, tc_cfg, tc_params, tokens, config)
  first = time.perf_counter() - t0
  return {"tokens": n, "seconds": first, "timings": graph.timings,
          "active_features": int(len(graph.active["act"])),
          "feature_rows": int(graph.layout.n_features), "logit_rows": int(graph.layout.n_logits),
          "nodes": int(graph.layout.n), "config": dataclasses.asdict(config),
          "transcoder": {"d_latent": tc_cfg.d_latent, "k": tc_cfg.k}, **memory_fields()}
