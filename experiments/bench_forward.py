r"""Forward-with-cache throughput and memory: interp (JAX) against TransformerLens (torch).

  python experiments/bench_forward.py --out runs/bench_forward.json
  python experiments/bench_forward.py --quick --out /tmp/bench_forward.json   # tiny, 1 rep
  python experiments/bench_forward.py --interp_reuse_outputs --out runs/bench_forward_reuse.json
  python experiments/bench_forward.py --models=gpt2_small \
      --xla_flags=--xla_cpu_experimental_ynn_fusion_type=   # XLA's Eigen dots instead of YNNPACK

Both sides run the same random-weight model on the same [batch, ctx] tokens and capture the same
hooks: every `hook_resid_pre/mid/post`, every `attn.hook_q/k/v/attn_scores/pattern/z` and every
`hook_attn_out`. interp runs `sharded.make_forward` (jit with in/out shardings on a `data` mesh,
AOT-compiled so compile time is reported apart); TransformerLens runs
`TransformerBridge.boot_native(TransformerBridgeConfig(...)).run_with_cache(tokens, names_filter=)`
(TransformerLens 4 removed `HookedTransformer`; `boot_native` is its random-weight replacement) in
float32 under `torch.inference_mode()` with `torch.set_num_threads(--threads)`.

Memory: each (round, model, side) runs alone in a subprocess (`--worker=interp|tl`), sides
alternating, so neither framework's libraries, allocator or thread pools pollute the other's RSS;
memory is the worst round, every number defined in `MEMORY_DEFINITIONS` (copied into the JSON).
Speed: the headline ratio comes from one more subprocess per model (`--worker=pair`) that builds
both sides and alternates their calls, so other tenants' drifting load hits both alike; it is the
median over pairs of t_TL / t_interp. The isolated workers' tokens/s and CPU seconds are reported
too. --quick runs all of it in a single subprocess (a smoke test: its memory is not isolated).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

from absl import app, flags

# Memory and CPU probes (Linux; no JAX or torch), shared with the other benchmarks.
from interp.bench.measure import peak, reset_peak, rss, settle, time_calls

# Goals, and TransformerLens' numbers measured on this machine (2 CPU cores) for reference.
GOALS = {"attn_only": 1.5, "gpt2_small": 1.2}   # interp tokens/s over TL tokens/s, at least
MEMORY_GOAL = 0.7                                # interp peak_rss_forward_delta over TL's, at most
REFERENCE = {"tl_attn_only_tokens_per_s": 12_000, "tl_gpt2_small_tokens_per_s": 600,
             "tl_gpt2_small_peak_bytes": 4.2e9, "jax_over_torch_f32_matmul": 0.8}

MEMORY_DEFINITIONS = {
    "rss_after_setup_untrimmed": "process RSS once imports, random weights and tokens exist",
    "rss_baseline": "the same once pending frees finished and malloc_trim(0) ran, on both "
                    "sides, so allocator-cached memory freed during setup (e.g. interp's jitted "
                    "init temporaries) is not counted as live; every *_delta is relative to this",
    "peak_rss_setup": "high-water RSS (VmHWM, reset via /proc/self/clear_refs) over setup: "
                      "JAX lowering + XLA compile; nothing for TL",
    "peak_rss_first_forward": "high-water RSS over the first forward-with-cache call: the working "
                              "set of one call on a clean heap (logits + cache + temporaries)",
    "peak_rss_forward": "high-water RSS over the timed repetitions (outputs of one call are "
                        "dropped before the next): steady state, including allocator "
                        "fragmentation and buffers whose release is still pending",
    "peak_rss_forward_delta": "peak_rss_forward - rss_baseline: what repeated forward-with-cache "
                              "calls cost on top of the model; the memory goal compares this",
    "peak_rss_forward_absolute_ratio_interp_over_tl": "peak_rss_forward of interp over TL's: "
        "whole-process peaks, weights and libraries included (the kind REFERENCE's 4.2 GB is)",
    "ru_maxrss": "getrusage(RUSAGE_SELF).ru_maxrss in bytes: the worker's lifetime peak",
    "cache_bytes": "sum of nbytes of the captured hook activations (logits excluded)",
    "xla_memory_analysis": "compiled.memory_analysis() of interp's jitted forward: temp_bytes = "
                           "XLA scratch, output_bytes = logits + cache, argument_bytes = params + "
                           "tokens; temp_plus_output_bytes is XLA's own forward working set",
    "pooling": "per side, the worst (max) value over rounds",
}


NOTES = [
    "TransformerLens 4 removed HookedTransformer/HookedTransformerConfig; the TL side is "
    "TransformerBridge.boot_native(TransformerBridgeConfig(...)), TL's random-weight native model, "
    "with attn_only / normalization_type / act_fn='gelu_new' / standard positions as asked.",
    "TL 4.3's bridge fires blocks.L.attn.hook_attn_scores with the post-softmax pattern (the very "
    "tensor cached as hook_pattern; see tl.hooks_sharing_storage): TL never materialises "
    "pre-softmax scores, while interp caches real masked scores. cache_unique_bytes shows the gap; "
    "--skip_scores drops that hook on both sides for a like-for-like run.",
    "TL also shares blocks.L.hook_resid_post with blocks.L+1.hook_resid_pre (one tensor); interp "
    "returns two buffers.",
]


class Side(str, enum.Enum):
  NONE = ""
  INTERP = "interp"
  TL = "tl"
  PAIR = "pair"  # both in one process, calls alternating: paired timings only
  ALL = "all"    # --quick: everything in one process (smoke test; memory not isolated)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Shapes of one benchmarked model; `attn_only` picks the family (toy vs GPT-2)."""
  name: str
  d_model: int
  n_layers: int
  n_heads: int
  d_mlp: int
  vocab: int
  ctx: int
  batch: int
  attn_only: bool

  @property
  def tokens(self) -> int:
    return self.batch * self.ctx


MODELS = {
    "attn_only": ModelSpec("attn_only", 512, 2, 8, 0, 4096, 256, 32, attn_only=True),
    "gpt2_small": ModelSpec("gpt2_small", 768, 12, 12, 3072, 50257, 256, 8, attn_only=False),
}
QUICK = {
    "attn_only": ModelSpec("attn_only", 64, 2, 4, 0, 256, 32, 8, attn_only=True),
    "gpt2_small": ModelSpec("gpt2_small", 64, 2, 4, 256, 512, 32, 8, attn_only=False),
}

flags.DEFINE_string("out", "runs/bench_forward.json", "where the JSON report goes")
flags.DEFINE_bool("quick", False, "tiny shapes and one timed repetition (smoke test)")
flags.DEFINE_list("models", list(MODELS), f"models to run, from {list(MODELS)}")
flags.DEFINE_integer("reps", 5, "timed repetitions per side and round (median reported)")
flags.DEFINE_integer("rounds", 2, "worker pairs per model, run TL/interp alternately; reps pooled")
flags.DEFINE_integer("pair_reps", 6, "alternating interp/TL calls in the paired-timing worker")
flags.DEFINE_integer("warmup", 2, "untimed warm-up calls per side (after JAX's compile)")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "torch intra-op threads (= cores)")
flags.DEFINE_string("mesh", "data:-1", "interp mesh, e.g. data:-1 (all devices) or data:1")
flags.DEFINE_integer("gemm", 2048, "size n of the n x n float32 GEMM used to gauge the machine")
flags.DEFINE_bool("skip_scores", False, "capture no attn.hook_attn_scores on either side (TL "
                  "4.3's boot_native model fires it with the pattern, so it costs TL nothing)")
flags.DEFINE_bool("interp_reuse_outputs", False, "experiment: interp donates each call's outputs "
                  "to the next (prototype of a suggested make_forward option)")
flags.DEFINE_string("xla_flags", "", "extra XLA_FLAGS for the interp worker (for experiments)")
flags.DEFINE_enum("worker", "", [s.value for s in Side], "internal: run one side in this process")
flags.DEFINE_list("worker_models", [], "internal: models for --worker, run one after another")
flags.DEFINE_string("worker_out", "", "internal: JSON file the worker writes")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  out: str
  models: tuple[ModelSpec, ...]
  reps: int
  rounds: int
  pair_reps: int
  warmup: int
  threads: int
  mesh: str
  gemm: int
  xla_flags: str
  skip_scores: bool
  interp_reuse_outputs: bool
  quick: bool


def config_from_flags(f) -> BenchConfig:
  table = QUICK if f.quick else MODELS
  unknown = [m for m in f.models if m not in table]
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; valid: {sorted(table)}")
  return BenchConfig(out=f.out, models=tuple(table[m] for m in f.models),
                     reps=1 if f.quick else f.reps,
                     rounds=1 if f.quick else f.rounds,
                     pair_reps=1 if f.quick else f.pair_reps, warmup=1 if f.quick else f.warmup,
                     threads=f.threads, mesh=f.mesh, gemm=256 if f.quick else f.gemm,
                     xla_flags=f.xla_flags, skip_scores=f.skip_scores,
                     interp_reuse_outputs=f.interp_reuse_outputs, quick=f.quick)


def captured_names(names, skip_scores: bool = False) -> list[str]:
  """The benchmarked hook set, filtered from a model's hook names (TransformerLens spelling)."""
  attn = "q|k|v|pattern|z" if skip_scores else "q|k|v|attn_scores|pattern|z"
  pat = re.compile(rf"blocks\.\d+\.(hook_resid_(pre|mid|post)|hook_attn_out|attn\.hook_({attn}))$")
  return [n for n in names if pat.match(n)]


def measure_phases(spec: ModelSpec, call, block, cfg: BenchConfig, setup=lambda: {}) -> dict:
  """Setup (JAX: lower + compile), first call, warm-up, timed reps; RSS high-water per phase."""
  untrimmed = rss()
  base = settle()  # both sides: freed init temporaries are not baseline (see MEMORY_DEFINITIONS)
  res = {"rss_after_setup_untrimmed": untrimmed, "rss_baseline": base,
         "peak_reset_supported": reset_peak()}
  res.update(setup())
  res["peak_rss_setup"] = peak()
  reset_peak()
  first = time_calls(call, block, 1)
  res["peak_rss_first_forward"] = peak()
  warm = first + time_calls(call, block, cfg.warmup - 1)
  reset_peak()
  r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  times = time_calls(call, block, cfg.reps)
  r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - w0
  res["peak_rss_forward"] = peak()
  for k in ("setup", "first_forward", "forward"):
    res[f"peak_rss_{k}_delta"] = res[f"peak_rss_{k}"] - base
  res.update({
      "seconds": times, "warmup_seconds": warm,
      "tokens_per_s_all": [spec.tokens / t for t in times],
      "cpu": {"user_s_per_call": (r1.ru_utime - r0.ru_utime) / cfg.reps,
              "sys_s_per_call": (r1.ru_stime - r0.ru_stime) / cfg.reps,
              "minor_page_faults_per_call": (r1.ru_minflt - r0.ru_minflt) / cfg.reps,
              "cores_busy": (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / wall},
  })
  return res


# ----- interp (JAX) side.

def interp_config(spec: ModelSpec):
  from interp.models import config as mc
  if spec.attn_only:
    return mc.attn_only(n_layers=spec.n_layers, d_model=spec.d_model, n_heads=spec.n_heads,
                        n_ctx=spec.ctx, vocab_size=spec.vocab)
  return mc.gpt2("small", vocab_size=spec.vocab, n_ctx=spec.ctx, d_model=spec.d_model,
                 n_layers=spec.n_layers, n_heads=spec.n_heads, d_head=spec.d_model // spec.n_heads,
                 d_mlp=spec.d_mlp)


def gemm_stats(n: int, times: list[float]) -> dict:
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


def reusing_forward(mcfg, mesh, param_shardings, names):
  """Prototype of a suggested `sharded.make_forward(..., reuse_outputs=True)`.

  f(params, tokens, previous) donates the previous call's (logits, cache), so XLA writes the new
  outputs into those buffers instead of allocating (and page-faulting) fresh ones every call.
  """
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from interp.models import hooks, transformer
  from interp.parallel import mesh as mesh_lib
  from interp.parallel import sharding as shd
  capture = hooks.Hooks(capture=tuple(names))

  def fwd(params, tokens, previous):
    del previous  # donated: only its buffers are used
    with shd.activation_rules(mesh, shd.ACT_RULES):
      return transformer.forward(mcfg, params, tokens, capture)

  batch = NamedSharding(mesh, P("data"))
  outs = (batch, {n: batch for n in names})
  return jax.jit(fwd, in_shardings=(param_shardings, mesh_lib.batch_sharding(mesh), outs),
                 out_shardings=outs, donate_argnums=2, keep_unused=True)


@dataclasses.dataclass
class Runner:
  """One side, built: `setup` (timed apart, e.g. compile), `call` one forward-with-cache, `block`
  until its outputs exist, `report` facts gathered after the timed calls."""
  setup: Callable[[], dict]
  call: Callable[[], object]
  block: Callable[[object], object]
  report: Callable[[], dict]


def interp_runner(spec: ModelSpec, cfg: BenchConfig) -> Runner:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from interp.models import hooks, sharded
  from interp.parallel import mesh as mesh_lib

  mcfg = interp_config(spec)
  names = captured_names(hooks.hook_names(mcfg), cfg.skip_scores)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(cfg.mesh))
  params, shardings = sharded.init(mcfg, jax.random.key(0), mesh)
  tokens = mesh_lib.global_batch(
      mesh, np.random.default_rng(0).integers(0, spec.vocab, (spec.batch, spec.ctx), np.int32))
  jax.block_until_ready((params, tokens))
  plain = sharded.make_forward(mcfg, mesh, shardings, capture=names)
  fwd = reusing_forward(mcfg, mesh, shardings, names) if cfg.interp_reuse_outputs else plain
  state = {}

  def setup():
    t0 = time.perf_counter()
    args = (params, tokens)
    if cfg.interp_reuse_outputs:  # the first call donates zeros shaped like the outputs
      state["out"] = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype, device=s.sharding),
                                  jax.eval_shape(plain, *args))
      args += (state["out"],)
    lowered = fwd.lower(*args)
    t1 = time.perf_counter()
    state["compiled"] = lowered.compile()
    t2 = time.perf_counter()
    ma = state["compiled"].memory_analysis()
    mem = None if ma is None else {
        "temp_bytes": ma.temp_size_in_bytes, "output_bytes": ma.output_size_in_bytes,
        "temp_plus_output_bytes": ma.temp_size_in_bytes + ma.output_size_in_bytes,
        "argument_bytes": ma.argument_size_in_bytes, "alias_bytes": ma.alias_size_in_bytes}
    return {"lower_seconds": t1 - t0, "compile_seconds": t2 - t1, "xla_memory_analysis": mem}

  def call():
    if cfg.interp_reuse_outputs:
      state["out"] = state["compiled"](params, tokens, state.pop("out"))
      return state["out"]
    return state["compiled"](params, tokens)

  def report():
    _, cache = call()
    res = {"cache_bytes": int(sum(v.nbytes for v in cache.values())), "hooks": sorted(cache),
           "path": ("prototype: sharded.make_forward + donated previous outputs"
                    if cfg.interp_reuse_outputs else "sharded.make_forward"),
           "versions": {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                        "mesh": dict(mesh.shape), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                        "matmul_precision": str(jax.config.jax_default_matmul_precision)}}
    res["cache_unique_bytes"] = res["cache_bytes"]
    return res

  return Runner(setup, call, jax.block_until_ready, report)


def tl_model(spec: ModelSpec):
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


def tl_runner(spec: ModelSpec, cfg: BenchConfig) -> Runner:
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


def run_side(side: Side, spec: ModelSpec, cfg: BenchConfig) -> dict:
  """One side alone in this process: timings, memory, facts, and its library's GEMM rate."""
  runner = (interp_runner if side == Side.INTERP else tl_runner)(spec, cfg)
  res = measure_phases(spec, runner.call, runner.block, cfg, runner.setup)
  res.update(runner.report())
  res["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  res["gemm"] = (jax_gemm if side == Side.INTERP else torch_gemm)(cfg.gemm, cfg.reps)
  return res


def run_pair(spec: ModelSpec, cfg: BenchConfig) -> dict:
  """Both sides in one process, calls alternating, for paired timings (no memory numbers)."""
  runners = {side: build(spec, cfg) for side, build in ((Side.INTERP, interp_runner),
                                                        (Side.TL, tl_runner))}
  runners[Side.INTERP].setup()
  for r in runners.values():
    time_calls(r.call, r.block, cfg.warmup)
  seconds = {side: [] for side in runners}
  for _ in range(cfg.pair_reps):
    for side, r in runners.items():
      time.sleep(0.2)  # let the other library's worker threads stop spinning
      seconds[side] += time_calls(r.call, r.block, 1)
  ratios = [t / i for i, t in zip(seconds[Side.INTERP], seconds[Side.TL])]
  return {"interp_seconds": seconds[Side.INTERP], "tl_seconds": seconds[Side.TL],
          "ratio_per_pair": ratios}


# ----- Driver: one subprocess per (round, model, side), results pooled over rounds.

def spawn(side: Side, specs, cfg: BenchConfig, argv: list[str]) -> dict:
  """Runs one side on `specs` in a fresh interpreter; returns {model name: result}."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "result.json")
    env = dict(os.environ)
    if side != Side.TL and cfg.xla_flags:
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + cfg.xla_flags).strip()
    cmd = [sys.executable, os.path.abspath(__file__), *argv[1:], f"--worker={side.value}",
           f"--worker_models={','.join(s.name for s in specs)}", f"--worker_out={out}"]
    subprocess.run(cmd, env=env, check=True)
    with open(out) as fh:
      return json.load(fh)


def pool(spec: ModelSpec, rounds: list[dict]) -> dict:
  """One side's rounds: median/best tokens/s over all reps, worst-case memory over rounds."""
  times = [t for r in rounds for t in r["seconds"]]
  out = {"tokens_per_s": spec.tokens / statistics.median(times),
         "tokens_per_s_best": spec.tokens / min(times), "seconds_median": statistics.median(times),
         "gemm_gflop_per_s_best": max(r["gemm"]["gflop_per_s_best"] for r in rounds)}
  for k in ("peak_rss_forward_delta", "peak_rss_first_forward_delta", "peak_rss_setup_delta",
            "peak_rss_forward", "rss_baseline", "ru_maxrss"):
    out[k] = max(r[k] for r in rounds)
  for k in ("user_s_per_call", "sys_s_per_call", "minor_page_faults_per_call"):
    out[k] = statistics.median(r["cpu"][k] for r in rounds)
  out["cpu_s_per_call"] = out["user_s_per_call"] + out["sys_s_per_call"]
  for k in ("cache_bytes", "cache_unique_bytes", "hooks_sharing_storage", "path", "versions"):
    if k in rounds[0]:
      out[k] = rounds[0][k]
  if "compile_seconds" in rounds[0]:
    out["compile_seconds"] = statistics.median(r["compile_seconds"] for r in rounds)
    out["lower_seconds"] = statistics.median(r["lower_seconds"] for r in rounds)
    out["xla_memory_analysis"] = rounds[0]["xla_memory_analysis"]
  drop = ("hooks", "hooks_sharing_storage", "path", "versions", "xla_memory_analysis")
  out["rounds"] = [{k: v for k, v in r.items() if k not in drop} for r in rounds]
  return out


def model_gflop(spec: ModelSpec) -> float:
  """Matmul GFLOP of one forward (QKV/O, full QK^T and PV, MLP, unembed)."""
  t, d = spec.tokens, spec.d_model
  layer = 2 * t * d * 4 * d + 2 * 2 * t * spec.ctx * d + 2 * 2 * t * d * spec.d_mlp
  return (spec.n_layers * layer + 2 * t * d * spec.vocab) / 1e9


def compare(spec: ModelSpec, interp: dict, tl: dict, paired: dict) -> dict:
  speed = statistics.median(paired["ratio_per_pair"])
  mem = interp["peak_rss_forward_delta"] / max(tl["peak_rss_forward_delta"], 1)
  gf = model_gflop(spec)
  return {
      # Headline: median over alternating interp/TL calls in one process of t_TL / t_interp;
      # pairing cancels the slow drift of other tenants' load.
      "speed_ratio_interp_over_tl": speed,
      "speed_goal": GOALS[spec.name], "speed_goal_met": speed >= GOALS[spec.name],
      "paired": {"interp_tokens_per_s": spec.tokens / statistics.median(paired["interp_seconds"]),
                 "tl_tokens_per_s": spec.tokens / statistics.median(paired["tl_seconds"]),
                 "interp_tokens_per_s_best": spec.tokens / min(paired["interp_seconds"]),
                 "tl_tokens_per_s_best": spec.tokens / min(paired["tl_seconds"]), **paired},
      # From the isolated per-side workers (their medians ran at different times).
      "isolated_tokens_per_s_ratio_interp_over_tl": interp["tokens_per_s"] / tl["tokens_per_s"],
      "isolated_best_tokens_per_s_ratio_interp_over_tl":
          interp["tokens_per_s_best"] / tl["tokens_per_s_best"],
      # CPU seconds per call (all threads, user + sys) are less sensitive to other tenants' load
      # than wall time, but count spin-waiting (torch's OpenMP spins more than XLA's pool).
      "cpu_seconds_ratio_tl_over_interp": tl["cpu_s_per_call"] / interp["cpu_s_per_call"],
      "peak_rss_forward_delta_ratio_interp_over_tl": mem,
      "memory_goal": MEMORY_GOAL, "memory_goal_met": mem <= MEMORY_GOAL,
      "peak_rss_first_forward_delta_ratio_interp_over_tl":
          interp["peak_rss_first_forward_delta"] / max(tl["peak_rss_first_forward_delta"], 1),
      "peak_rss_forward_absolute_ratio_interp_over_tl":
          interp["peak_rss_forward"] / tl["peak_rss_forward"],
      "matmul_gflop_per_forward": gf,
      # Best forward's matmul GFLOP/s over the best n x n GEMM of the same library (isolated runs).
      "fraction_of_gemm_peak": {
          side: gf * r["tokens_per_s_best"] / spec.tokens / r["gemm_gflop_per_s_best"]
          for side, r in (("interp", interp), ("tl", tl))},
  }


def run(cfg: BenchConfig, argv: list[str]) -> dict:
  report = {"config": dataclasses.asdict(cfg), "memory_definitions": MEMORY_DEFINITIONS,
            "goals": {"speed": GOALS, "memory_max_ratio": MEMORY_GOAL}, "reference": REFERENCE,
            "notes": NOTES,
            "machine": {"cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()},
            "models": {}}
  runs = {m.name: {side: [] for side in (Side.INTERP, Side.TL, Side.PAIR)} for m in cfg.models}
  if cfg.quick:  # one interpreter start-up instead of three per model
    for name, by_side in spawn(Side.ALL, cfg.models, cfg, argv).items():
      for side, result in by_side.items():
        runs[name][Side(side)].append(result)
  for spec in () if cfg.quick else cfg.models:
    for _ in range(cfg.rounds):  # alternate sides so drifting background load hits both
      for side in (Side.TL, Side.INTERP):
        runs[spec.name][side].append(spawn(side, (spec,), cfg, argv)[spec.name])
    runs[spec.name][Side.PAIR].append(spawn(Side.PAIR, (spec,), cfg, argv)[spec.name])
  for spec in cfg.models:
    r = runs[spec.name]
    interp, tl = pool(spec, r[Side.INTERP]), pool(spec, r[Side.TL])
    report["models"][spec.name] = {
        "spec": dataclasses.asdict(spec), "tokens_per_call": spec.tokens,
        "n_hooks": len(r[Side.INTERP][0]["hooks"]), "hooks": r[Side.INTERP][0]["hooks"],
        "same_hooks": r[Side.INTERP][0]["hooks"] == r[Side.TL][0]["hooks"],
        **compare(spec, interp, tl, r[Side.PAIR][0]), "interp": interp, "tl": tl}
  gj = max(m["interp"]["gemm_gflop_per_s_best"] for m in report["models"].values())
  gt = max(m["tl"]["gemm_gflop_per_s_best"] for m in report["models"].values())
  report["gemm"] = {"n": cfg.gemm, "jax_gflop_per_s_best": gj, "torch_gflop_per_s_best": gt,
                    "jax_over_torch": gj / gt}
  report["machine"]["loadavg_end"] = os.getloadavg()
  return report


def main(argv):
  del argv
  f = flags.FLAGS
  cfg = config_from_flags(f)
  if f.worker:
    specs = {m.name: m for m in cfg.models}
    side = Side(f.worker)
    results = {}
    for name in f.worker_models:
      if side == Side.ALL:
        results[name] = {s.value: run_side(s, specs[name], cfg) for s in (Side.INTERP, Side.TL)}
        results[name][Side.PAIR.value] = run_pair(specs[name], cfg)
      elif side == Side.PAIR:
        results[name] = run_pair(specs[name], cfg)
      else:
        results[name] = run_side(side, specs[name], cfg)
    with open(f.worker_out, "w") as fh:
      json.dump(results, fh)
    return
  report = run(cfg, sys.argv)
  os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
  with open(cfg.out, "w") as fh:
    json.dump(report, fh, indent=1)
  mib = 2**20
  for name, m in report["models"].items():
    i, t, p = m["interp"], m["tl"], m["paired"]
    print(f"{name}: interp {p['interp_tokens_per_s']:.0f} tok/s, TL {p['tl_tokens_per_s']:.0f} "
          f"tok/s (paired), ratio {m['speed_ratio_interp_over_tl']:.2f} (goal >= "
          f"{m['speed_goal']}); forward peak delta interp {i['peak_rss_forward_delta'] / mib:.0f} "
          f"MiB, TL {t['peak_rss_forward_delta'] / mib:.0f} MiB, ratio "
          f"{m['peak_rss_forward_delta_ratio_interp_over_tl']:.2f} (goal <= {MEMORY_GOAL})")
  g = report["gemm"]
  print(f"GEMM {g['n']}: jax {g['jax_gflop_per_s_best']:.0f} GFLOP/s, torch "
        f"{g['torch_gflop_per_s_best']:.0f} GFLOP/s; wrote {cfg.out}")


if __name__ == "__main__":
  app.run(main)
