"""The peers' side of the device check (torch): SAELens's train step and TransformerLens's
forward with cache, on the same device, sizes and hook set as ours. Imports no JAX.

Device memory is `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (None on
CPU, where the host's peak RSS is reported instead). bf16 runs the same step under
`torch.autocast(dtype=torch.bfloat16)`, as SAELens's own trainer does with autocast on.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from interp.bench import device_report, device_sizes, forward_sides, measure, sae_sides
from interp.bench.device_items import shape
from interp.bench.device_sizes import Sizes


def device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(out=None):
  if torch.cuda.is_available():
    torch.cuda.synchronize()
  return out


def _autocast(precision: str):
  if precision == "float32":
    return contextlib.nullcontext()
  return torch.autocast(device_type=device().type, dtype=torch.bfloat16)


def _timed(call, reps: int, warmup: int) -> list[float]:
  measure.time_calls(call, _sync, warmup)
  return measure.time_calls(call, _sync, reps)


def memory_fields() -> dict:
  cuda = torch.cuda.is_available()
  return {"device_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
          "host_peak_rss_gib": measure.ru_maxrss() / 2**30}


def _reset_peak():
  if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()


def versions() -> dict:
  from importlib import metadata
  out = {"torch": torch.__version__, "device": str(device()),
         "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
  for name in ("sae-lens", "transformer-lens"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def peak_tflops():
  name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
  return device_report.peak_bf16_tflops(name)


def saelens_step(arch: str, precision: str, sizes: Sizes) -> dict:
  """SAELens's training step (`sae_sides.saelens_runner`) on this machine's device."""
  cfg = device_sizes.sae_config(arch, sizes, torch_device=str(device()))
  _reset_peak()
  runner = sae_sides.saelens_runner(arch, cfg)
  with _autocast(precision):
    times = _timed(runner.call, cfg.steps, max(cfg.warmup, 1))
    rep = runner.report()
  return {**device_report.sae_rates(cfg, times, peak_tflops()), **rep, "versions": versions(),
          **memory_fields()}


def tl_config(s, ctx: int):
  """A TransformerLens native config of a shape. gemma3: RMSNorm, rotary, grouped-query,
  gated MLP with gelu_new; TL's native model has no post-norms, QK-norm or sliding windows."""
  from transformer_lens.config import TransformerBridgeConfig
  s = shape(s)
  common = dict(d_model=s.d_model, d_head=s.d_head, n_layers=s.n_layers, n_ctx=ctx,
                n_heads=s.n_heads, d_vocab=s.vocab, act_fn="gelu_new", d_mlp=s.d_mlp, seed=0)
  if s.family == "gpt2":
    return TransformerBridgeConfig(**common, normalization_type="LN",
                                   positional_embedding_type="standard")
  return TransformerBridgeConfig(**common, normalization_type="RMS",
                                 positional_embedding_type="rotary",
                                 n_key_value_heads=s.n_kv_heads, gated_mlp=True)


def tl_forward_cache(name: str, precision: str, sizes: Sizes) -> dict:
  """TransformerLens's `run_with_cache` with the same hooks, tokens and shapes as ours."""
  import numpy as np
  from transformer_lens import TransformerBridge
  import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
  spec = shape(sizes.forward_models[name])
  dev = device()
  _reset_peak()
  model = TransformerBridge.boot_native(tl_config(spec, sizes.forward_ctx))
  model = model.to(dev, print_details=False).eval()
  names = forward_sides.captured_names(model.hook_dict)
  rows = np.random.default_rng(0).integers(0, spec.vocab,
                                           (sizes.forward_batch, sizes.forward_ctx), np.int64)
  tokens = torch.from_numpy(rows).to(dev)

  def call():
    with torch.inference_mode(), _autocast(precision):
      return model.run_with_cache(tokens, names_filter=names)
  t0 = time.perf_counter()
  _sync(call())
  first = time.perf_counter() - t0
  times = _timed(call, sizes.forward_reps, 1)
  _, cache = call()
  sec = statistics.median(times)
  return {"first_call_s": first, "hooks": len(names), "tokens_per_call": int(rows.size),
          "seconds": times, "seconds_median": sec, "tokens_per_s": rows.size / sec,
          "cache_bytes": int(sum(cache[n].nbytes for n in names)),
          "params": int(sum(p.numel() for p in model.parameters())), "versions": versions(),
          **memory_fields()}
