"""Forward-with-cache throughput and memory: interp (JAX) against TransformerLens (torch).

Run by `experiments/bench_forward.py`; the sides are in `interp.bench.forward_sides`.

Both sides run the same random-weight model on the same [batch, ctx] tokens and capture the same
hooks: every `hook_resid_pre/mid/post`, every `attn.hook_q/k/v/attn_scores/pattern/z` and every
`hook_attn_out`. interp runs `sharded.make_forward` (jit with in/out shardings on a `data` mesh,
AOT-compiled so compile time is reported apart; by default each call writes into the previous
call's donated outputs, `--nointerp_reuse_outputs` allocates fresh ones); TransformerLens runs
`TransformerBridge.boot_native(TransformerBridgeConfig(...)).run_with_cache(tokens, names_filter=)`
(TransformerLens 4 removed `HookedTransformer`; `boot_native` is its random-weight replacement) in
float32 under `torch.inference_mode()` with `torch.set_num_threads(--threads)`.

Memory: each (round, model, side) runs alone in a subprocess (sides `interp`, `tl`), sides
alternating, so neither framework's libraries, allocator or thread pools pollute the other's RSS;
memory is the worst round, every number defined in `MEMORY_DEFINITIONS` (copied into the JSON).
Speed: the headline ratio comes from one more subprocess per model (side `pair`) that builds
both sides and alternates their calls, so other tenants' drifting load hits both alike; it is the
median over pairs of t_TL / t_interp. The isolated workers' tokens/s and CPU seconds are reported
too. --quick runs all of it in a single subprocess (a smoke test: its memory is not isolated).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import resource
import statistics
import time

from interp.bench import forward_sides, harness, measure
from interp.bench.measure import peak, reset_peak, ru_maxrss, rss, settle, time_calls

# Goals, and reference numbers measured on the 2-core development machine.
GOALS = {"attn_only": 2.0, "gpt2_small": 1.5}   # interp tokens/s over TL tokens/s, at least
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
        "whole-process peaks, weights and libraries included (the kind of the 4.2 GB reference)",
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
    "Both sides share blocks.L.hook_resid_post with blocks.L+1.hook_resid_pre (one tensor, "
    "listed in hooks_sharing_storage).",
]


@dataclasses.dataclass(frozen=True)
class ModelShape:
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
    "attn_only": ModelShape("attn_only", 512, 2, 8, 0, 4096, 256, 32, attn_only=True),
    "gpt2_small": ModelShape("gpt2_small", 768, 12, 12, 3072, 50257, 256, 8, attn_only=False),
}
QUICK = {
    "attn_only": ModelShape("attn_only", 64, 2, 4, 0, 256, 32, 8, attn_only=True),
    "gpt2_small": ModelShape("gpt2_small", 64, 2, 4, 256, 512, 32, 8, attn_only=False),
}


@dataclasses.dataclass(frozen=True)
class ForwardBenchConfig:
  """One benchmark run; `quick` runs every side in one worker (memory then not isolated)."""
  out: str
  models: tuple[ModelShape, ...]
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


CONFIG = ForwardBenchConfig  # what `harness.worker_main` decodes


def model_shapes(names, quick: bool) -> tuple[ModelShape, ...]:
  """The named shapes (`QUICK`'s tiny ones for a smoke test); ValueError lists the valid names."""
  table = QUICK if quick else MODELS
  unknown = [m for m in names if m not in table]
  if unknown:
    raise ValueError(f"unknown {unknown}; valid: {sorted(table)}")
  return tuple(table[m] for m in names)


def measure_phases(spec: ModelShape, call, block, cfg: ForwardBenchConfig,
                   setup=lambda: {}) -> dict:
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


# ----- Workers.

class Side(str, enum.Enum):
  """The two sides; a worker may also run `harness.PAIR` or (--quick) `harness.ALL`."""
  INTERP = "interp"
  TL = "tl"


def run_side(side: Side, spec: ModelShape, cfg: ForwardBenchConfig) -> dict:
  """One side alone in this process: timings, memory, facts, and its library's GEMM rate."""
  build = forward_sides.interp_runner if side == Side.INTERP else forward_sides.tl_runner
  runner = build(spec, cfg)
  res = measure_phases(spec, runner.call, runner.block, cfg, runner.setup)
  res.update(runner.report())
  res["ru_maxrss"] = ru_maxrss()
  gemm = forward_sides.jax_gemm if side == Side.INTERP else forward_sides.torch_gemm
  res["gemm"] = gemm(cfg.gemm, cfg.reps)
  return res


def run_pair(spec: ModelShape, cfg: ForwardBenchConfig) -> dict:
  """Both sides in one process, calls alternating, for paired timings (no memory numbers)."""
  runners = {Side.INTERP: forward_sides.interp_runner(spec, cfg),
             Side.TL: forward_sides.tl_runner(spec, cfg)}
  runners[Side.INTERP].setup()
  seconds = harness.alternate(runners, cfg.pair_reps, cfg.warmup)
  return {"interp_seconds": seconds[Side.INTERP], "tl_seconds": seconds[Side.TL],
          "ratio_per_pair": harness.ratios(seconds[Side.INTERP], seconds[Side.TL])}


def worker(side: str, cfg: ForwardBenchConfig) -> dict:
  """One worker's work, model after model: {model name: result}."""
  results = {}
  for spec in cfg.models:
    if side == harness.ALL:
      results[spec.name] = {s.value: run_side(s, spec, cfg) for s in (Side.INTERP, Side.TL)}
      results[spec.name][harness.PAIR] = run_pair(spec, cfg)
    elif side == harness.PAIR:
      results[spec.name] = run_pair(spec, cfg)
    else:
      results[spec.name] = run_side(Side(side), spec, cfg)
  return results


# ----- Driver: one worker per (round, model, side), results pooled over rounds.

def spawn(side: str, cfg: ForwardBenchConfig) -> dict:
  """Runs one side on `cfg.models` in a fresh interpreter; returns {model name: result}."""
  env = harness.worker_env(xla_flags="" if side == Side.TL else cfg.xla_flags)
  return harness.spawn(__name__, side, cfg, env)


def pool(spec: ModelShape, rounds: list[dict]) -> dict:
  """One side's rounds: median/best tokens/s over all reps, worst-case memory over rounds."""
  times = harness.pooled(rounds, "seconds")
  out = {"tokens_per_s": spec.tokens / statistics.median(times),
         "tokens_per_s_best": spec.tokens / min(times), "seconds_median": statistics.median(times),
         "gemm_gflop_per_s_best": max(r["gemm"]["gflop_per_s_best"] for r in rounds)}
  for k in ("peak_rss_forward_delta", "peak_rss_first_forward_delta", "peak_rss_setup_delta",
            "peak_rss_forward", "rss_baseline", "ru_maxrss"):
    out[k] = harness.worst(rounds, k)
  for k in ("user_s_per_call", "sys_s_per_call", "minor_page_faults_per_call"):
    out[k] = statistics.median(r["cpu"][k] for r in rounds)
  out["cpu_s_per_call"] = out["user_s_per_call"] + out["sys_s_per_call"]
  for k in ("cache_bytes", "cache_unique_bytes", "hooks_sharing_storage", "path", "versions"):
    if k in rounds[0]:
      out[k] = rounds[0][k]
  if "compile_seconds" in rounds[0]:
    out["compile_seconds"] = harness.median_over(rounds, "compile_seconds")
    out["lower_seconds"] = harness.median_over(rounds, "lower_seconds")
    out["xla_memory_analysis"] = rounds[0]["xla_memory_analysis"]
  drop = ("hooks", "hooks_sharing_storage", "path", "versions", "xla_memory_analysis")
  out["rounds"] = [{k: v for k, v in r.items() if k not in drop} for r in rounds]
  return out


def model_gflop(spec: ModelShape) -> float:
  """Matmul GFLOP of one forward (QKV/O, full QK^T and PV, MLP, unembed)."""
  t, d = spec.tokens, spec.d_model
  layer = 2 * t * d * 4 * d + 2 * 2 * t * spec.ctx * d + 2 * 2 * t * d * spec.d_mlp
  return (spec.n_layers * layer + 2 * t * d * spec.vocab) / 1e9


def compare(spec: ModelShape, interp: dict, tl: dict, paired: dict) -> dict:
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


def run(cfg: ForwardBenchConfig) -> dict:
  """The whole benchmark: workers, pooling, comparison; returns the JSON report."""
  report = {"config": dataclasses.asdict(cfg), "memory_definitions": MEMORY_DEFINITIONS,
            "goals": {"speed": GOALS, "memory_max_ratio": MEMORY_GOAL}, "reference": REFERENCE,
            "notes": NOTES,
            "machine": {**measure.machine(), "loadavg_start": os.getloadavg()},
            "models": {}}
  runs = {m.name: {Side.INTERP: [], Side.TL: [], harness.PAIR: []} for m in cfg.models}
  if cfg.quick:  # one interpreter start-up instead of three per model
    for name, by_side in spawn(harness.ALL, cfg).items():
      for side, result in by_side.items():
        runs[name][side].append(result)
  for spec in () if cfg.quick else cfg.models:
    one = dataclasses.replace(cfg, models=(spec,))
    for _ in range(cfg.rounds):  # alternate sides so drifting background load hits both
      for side in (Side.TL, Side.INTERP):
        runs[spec.name][side].append(spawn(side, one)[spec.name])
    runs[spec.name][harness.PAIR].append(spawn(harness.PAIR, one)[spec.name])
  for spec in cfg.models:
    r = runs[spec.name]
    interp, tl = pool(spec, r[Side.INTERP]), pool(spec, r[Side.TL])
    report["models"][spec.name] = {
        "spec": dataclasses.asdict(spec), "tokens_per_call": spec.tokens,
        "n_hooks": len(r[Side.INTERP][0]["hooks"]), "hooks": r[Side.INTERP][0]["hooks"],
        "same_hooks": r[Side.INTERP][0]["hooks"] == r[Side.TL][0]["hooks"],
        **compare(spec, interp, tl, r[harness.PAIR][0]), "interp": interp, "tl": tl}
  gj = max(m["interp"]["gemm_gflop_per_s_best"] for m in report["models"].values())
  gt = max(m["tl"]["gemm_gflop_per_s_best"] for m in report["models"].values())
  report["gemm"] = {"n": cfg.gemm, "jax_gflop_per_s_best": gj, "torch_gflop_per_s_best": gt,
                    "jax_over_torch": gj / gt}
  report["machine"]["loadavg_end"] = os.getloadavg()
  return report


def summary(report: dict) -> str:
  """A line per model (paired speeds, forward peak deltas, goals) and the GEMM rates."""
  mib, lines = 2**20, []
  for name, m in report["models"].items():
    i, t, p = m["interp"], m["tl"], m["paired"]
    lines.append(
        f"{name}: interp {p['interp_tokens_per_s']:.0f} tok/s, TL {p['tl_tokens_per_s']:.0f} "
        f"tok/s (paired), ratio {m['speed_ratio_interp_over_tl']:.2f} (goal >= "
        f"{m['speed_goal']}); forward peak delta interp {i['peak_rss_forward_delta'] / mib:.0f} "
        f"MiB, TL {t['peak_rss_forward_delta'] / mib:.0f} MiB, ratio "
        f"{m['peak_rss_forward_delta_ratio_interp_over_tl']:.2f} (goal <= {MEMORY_GOAL})")
  g = report["gemm"]
  lines.append(f"GEMM {g['n']}: jax {g['jax_gflop_per_s_best']:.0f} GFLOP/s, torch "
               f"{g['torch_gflop_per_s_best']:.0f} GFLOP/s")
  return "\n".join(lines)


if __name__ == "__main__":
  harness.worker_main("interp.bench.forward")
