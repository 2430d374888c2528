"""The two sides of `interp.bench.patching`: interp's vmapped patching sweeps and
TransformerLens's `transformer_lens.patching` functions, on the same weights and prompts.

Weights: the driver writes one `.npz` of random float32 tensors keyed by the TL-native model's
state-dict names (`tl_weight_shapes`); TL loads it with `load_state_dict(strict=True)` and interp
maps it with `params_from_tl` (torch's Linear stores [out, in]; interp's einsum weights are
[in, ..., out]). Prompts: `prompts` draws base (corrupted) and source (clean) tokens and the
(correct, wrong) answer ids from a seed, so both sides patch the same runs.

Site kinds and TL's function for each (TL iterates sites in Python, one hooked forward each):
  resid     get_act_patch_resid_pre               [l, p]
  heads     get_act_patch_attn_head_out_all_pos   [l, h]  (hook_z, every position)
  attn_out  get_act_patch_attn_out                [l, p]
  mlp_out   get_act_patch_mlp_out                 [l, p]  (models with MLPs)
JAX and torch are imported inside the functions, so a worker never imports the other's library.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from interp.bench import forward_sides
from interp.bench.measure import time_calls

KINDS = ("resid", "heads", "attn_out", "mlp_out")
TL_FUNCTIONS = {"resid": "get_act_patch_resid_pre",
                "heads": "get_act_patch_attn_head_out_all_pos",
                "attn_out": "get_act_patch_attn_out", "mlp_out": "get_act_patch_mlp_out"}


def kinds_for(spec) -> tuple[str, ...]:
  """The site kinds a model has (no `mlp_out` without MLPs)."""
  return tuple(k for k in KINDS if not (k == "mlp_out" and spec.attn_only))


def tl_weight_shapes(spec) -> dict[str, tuple[int, ...]]:
  """TL-native state-dict names and shapes of a `forward.ModelShape`, without torch."""
  d, v, m = spec.d_model, spec.vocab, spec.d_mlp
  out = {"embed.weight": (v, d), "pos_embed.weight": (spec.ctx, d)}
  for layer in range(spec.n_layers):
    pre = f"blocks.{layer}."
    if not spec.attn_only:
      out.update({pre + "ln1.weight": (d,), pre + "ln1.bias": (d,)})
    for p in "qkvo":
      out.update({f"{pre}attn.{p}.weight": (d, d), f"{pre}attn.{p}.bias": (d,)})
    if not spec.attn_only:
      out.update({pre + "ln2.weight": (d,), pre + "ln2.bias": (d,),
                  pre + "mlp.in.weight": (m, d), pre + "mlp.in.bias": (m,),
                  pre + "mlp.out.weight": (d, m), pre + "mlp.out.bias": (d,)})
  if not spec.attn_only:
    out.update({"ln_final.weight": (d,), "ln_final.bias": (d,)})
  out.update({"unembed.weight": (v, d), "unembed.bias": (v,)})
  return out


def random_weights(spec, seed: int) -> dict[str, np.ndarray]:
  """Random weights for both sides: GPT-2's init scale, norm gains near 1, small biases."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in tl_weight_shapes(spec).items():
    w = rng.normal(0.0, 0.02, shape).astype(np.float32)
    if ".ln" in "." + name and name.endswith(".weight"):  # ln1, ln2, ln_final gains
      w += 1.0
    out[name] = w
  return out


def prompts(spec, seed: int) -> dict[str, np.ndarray]:
  """Base (corrupted) and source (clean) tokens [batch, ctx] and answers [batch, 2]."""
  rng = np.random.default_rng(seed + 1)
  shape = (spec.batch, spec.ctx)
  return {"base": rng.integers(0, spec.vocab, shape).astype(np.int32),
          "source": rng.integers(0, spec.vocab, shape).astype(np.int32),
          "answers": rng.integers(0, spec.vocab, (spec.batch, 2)).astype(np.int32)}


def interp_model_config(spec):
  """interp's config for the TL-native model: untied unembedding, biases everywhere TL has them."""
  return dataclasses.replace(forward_sides.interp_config(spec), attn_bias=True,
                             unembed_bias=True, tied_embeddings=False)


def params_from_tl(spec, weights: dict[str, np.ndarray]) -> dict:
  """interp parameters (numpy) from TL-native weights."""
  h, e = spec.n_heads, spec.d_model // spec.n_heads
  w = weights
  params = {"embed": {"W_E": w["embed.weight"]}, "pos_embed": {"W_pos": w["pos_embed.weight"]},
            "unembed": {"W_U": w["unembed.weight"].T, "b_U": w["unembed.bias"]}}
  for layer in range(spec.n_layers):
    pre, blk = f"blocks.{layer}.", {}
    attn = {f"W_{p.upper()}": w[f"{pre}attn.{p}.weight"].T.reshape(-1, h, e) for p in "qkv"}
    attn.update({f"b_{p.upper()}": w[f"{pre}attn.{p}.bias"].reshape(h, e) for p in "qkv"})
    attn["W_O"] = w[pre + "attn.o.weight"].T.reshape(h, e, -1)
    attn["b_O"] = w[pre + "attn.o.bias"]
    blk["attn"] = attn
    if not spec.attn_only:
      for ln in ("ln1", "ln2"):
        blk[ln] = {"w": w[f"{pre}{ln}.weight"], "b": w[f"{pre}{ln}.bias"]}
      blk["mlp"] = {"W_in": w[pre + "mlp.in.weight"].T, "b_in": w[pre + "mlp.in.bias"],
                    "W_out": w[pre + "mlp.out.weight"].T, "b_out": w[pre + "mlp.out.bias"]}
    params[f"blocks_{layer}"] = blk
  if not spec.attn_only:
    params["ln_final"] = {"w": w["ln_final.weight"], "b": w["ln_final.bias"]}
  return params


def run_interp(spec, cfg, weights, data) -> dict:
  """interp's sweep per kind: compile apart, then `cfg.reps` timed calls; plus one plain forward
  (the cost of a single unpatched run) for the time breakdown."""
  import jax
  import jax.numpy as jnp
  from interp.circuits import patching
  from interp.models import transformer

  mcfg = interp_model_config(spec)
  params = jax.tree.map(jnp.asarray, params_from_tl(spec, weights))
  base, source = jnp.asarray(data["base"]), jnp.asarray(data["source"])
  answers = jnp.asarray(data["answers"])
  metric = patching.logit_diff(answers)
  last = jnp.full((spec.batch, 1), spec.ctx - 1, jnp.int32)
  out = {}
  for kind in kinds_for(spec):
    sweep = jax.jit(lambda p, b, s, kind=kind: patching.activation_patching(
        mcfg, p, b, s, metric, kind, logits_at=last, chunk=cfg.chunk or None))
    t0 = time.perf_counter()
    compiled = sweep.lower(params, base, source).compile()
    compile_s = time.perf_counter() - t0
    values = np.asarray(compiled(params, base, source))
    times = time_calls(lambda: compiled(params, base, source), jax.block_until_ready, cfg.reps)
    out[kind] = {"values": values.tolist(), "seconds": times, "compile_seconds": compile_s,
                 "n_sites": int(values.size)}
  one = jax.jit(lambda p, t: metric(transformer.forward(mcfg, p, t, logits_at=last)[0]))
  one(params, base).block_until_ready()
  out["one_forward_seconds"] = time_calls(lambda: one(params, base), jax.block_until_ready,
                                          max(cfg.reps, 3))
  out["versions"] = {"jax": jax.__version__}
  return out


def run_tl(spec, cfg, weights, data) -> dict:
  """TL's patching function per kind (timed `cfg.tl_reps` times), on TL's native model."""
  from importlib import metadata

  import torch
  from transformer_lens import patching
  torch.set_num_threads(cfg.threads)
  model = forward_sides.tl_model(spec)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  base = torch.from_numpy(data["base"]).long()
  source = torch.from_numpy(data["source"]).long()
  answers = torch.from_numpy(data["answers"]).long()
  rows = torch.arange(spec.batch)

  def metric(logits):
    last = logits[:, -1]
    return (last[rows, answers[:, 0]] - last[rows, answers[:, 1]]).mean()

  out = {}
  with torch.inference_mode():
    _, clean_cache = model.run_with_cache(source)
    for kind in kinds_for(spec):
      fn = getattr(patching, TL_FUNCTIONS[kind])
      result = {}
      times = time_calls(lambda: result.setdefault("v", fn(model, base, clean_cache, metric)),
                         lambda o: o, 1)
      for _ in range(cfg.tl_reps - 1):
        times += time_calls(lambda: fn(model, base, clean_cache, metric), lambda o: o, 1)
      values = result["v"].numpy()
      out[kind] = {"values": values.tolist(), "seconds": times, "n_sites": int(values.size),
                   "function": f"transformer_lens.patching.{TL_FUNCTIONS[kind]}"}
    out["one_forward_seconds"] = time_calls(lambda: metric(model(base)), lambda o: o,
                                            max(cfg.tl_reps, 3))
    hook = "blocks.0.hook_resid_pre"
    out["one_hooked_forward_seconds"] = time_calls(
        lambda: metric(model.run_with_hooks(base, fwd_hooks=[(hook, lambda x, hook: x)])),
        lambda o: o, max(cfg.tl_reps, 3))
  out["versions"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "transformer_lens": metadata.version("transformer-lens")}
  return out
