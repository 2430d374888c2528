"""SAE training-step throughput and peak memory: interp (JAX) against SAELens (torch).

Run by `experiments/bench_sae.py`; the sides are in `interp.bench.sae_sides`.

Both sides train the same shapes (default d_in 512, d_sae 8192 = 16x, batch 4096) on the same
fixed random batch, for each rule in --archs:
  relu  ours: SAEConfig(activation=relu, decoder_norm=--decoder_norm) through
        `interp.sae.train.programs` (the jitted, donated step: loss, grads, clip, AdamW, dead
        counters); SAELens: StandardTrainingSAE (L1 weighted by decoder-row norms).
  topk  ours: activation=topk, k, AuxK; SAELens: TopKTrainingSAE (its defaults:
        rescale_acts_by_decoder_norm, AuxK). Neither side has dead latents in so few steps.
  relu_sparse  relu once the codes are sparse: both sides start from their init with the
        encoder bias lowered by one constant so that a token has --sparse_l0 positive codes on
        average (on the random batch every rule here trains on, a fresh ReLU dictionary has
        ~d_sae / 2); ours runs with SAEConfig.sparse_cap = --sparse_cap (the sparse step, or
        the dense one for a batch where a token reaches the cap: `sparse_step` in the report
        says which ran). SAELens's step is the same dense work whatever its L0.
The SAELens step is SAETrainer._train_step's work: training_forward_pass with the dead-latent
mask, firing bookkeeping, backward, clip_grad_norm_(1.0), Adam step, zero_grad; torch threads =
--threads (the machine's cores). Ours uses the same clipping and Adam betas.

Speed: the headline ratio comes from a worker per rule that builds both sides and alternates
their steps (side `pair`), so other tenants' drifting load hits both alike: the median over
pairs of t_SAELens / t_ours. The matmul limit is the float32 [batch x d_in] @ [d_in x d_sae] of
JAX, timed right after each of our steps; each step is charged 12*batch*d_in*d_sae
FLOPs (six such matmuls), so its fraction of the limit is 6 * t_matmul / t_step, median over
those pairs. CPU seconds (user + sys, all threads) per step are reported too, and the fraction
by CPU time; they are less sensitive to other tenants than wall time, but count spin-waiting.
Memory: each (round, rule, side) also runs alone in a fresh worker (sides `ours`, `saelens`),
sides alternating, for its peak RSS (and isolated timings). --one_worker runs all of it in a
single process (a smoke test: memory then not isolated). The load average goes in the JSON.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import statistics

from interp.bench import harness, measure, sae_sides

# Goals, and reference rates measured on the 2-core development machine (d_in 512, 16x, 4096).
GOALS = {"relu": {"fraction_of_matmul_limit": 0.85, "speedup_over_saelens": 3.0},
         "topk": {"speedup_over_saelens": 6.0},
         "relu_sparse": {"speedup_over_saelens": 3.0}}
REFERENCE = {"saelens_relu_activations_per_s": 3509, "saelens_topk_activations_per_s": 3212,
             "plain_jax_relu_activations_per_s": 4431, "plain_jax_topk_activations_per_s": 4123}
DEFINITIONS = {
    "speedup_ours_over_saelens": "median over alternating step pairs in one process (pair "
                                 "worker) of t_SAELens / t_ours",
    "fraction_of_matmul_limit": "6 * t_matmul / t_step (= 12*B*d_in*d_sae FLOPs per step over "
                                "the JAX float32 matmul rate), median over (step, matmul) pairs "
                                "timed back to back in our isolated workers",
    "fraction_of_matmul_limit_cpu_time": "the same with CPU seconds (user+sys) of step and "
                                         "matmul instead of wall seconds",
    "rss_baseline": "worker RSS once data, parameters and optimizer state exist (after "
                    "malloc_trim), before compiling (ours) or the first step",
    "peak_rss_steps": "high-water RSS over warm-up and timed steps (for ours also the matmuls "
                      "timed between them, whose output is smaller than a step's temporaries): "
                      "whole process, libraries, parameters and optimizer state included",
    "peak_rss_steps_delta": "peak_rss_steps - rss_baseline: what training steps cost on top of "
                            "the state",
    "ru_maxrss": "the worker's lifetime peak (getrusage)",
    "phases_seconds": "our step's pieces jitted and timed alone in the isolated worker "
                      "(`sae_sides.phase_programs`), median over rounds; rest_of_step is the "
                      "step's median minus their sum (bias and elementwise terms, clipping, "
                      "metrics, dead-latent counters, and what XLA fuses differently)",
    "pooling": "isolated timings: median over all timed steps of all rounds; memory: worst round",
}


class Arch(str, enum.Enum):
  """The SAE rule both sides train."""
  RELU = "relu"
  TOPK = "topk"
  RELU_SPARSE = "relu_sparse"


@dataclasses.dataclass(frozen=True)
class SAEBenchConfig:
  """One benchmark run; `one_worker` runs every side in one worker (memory then not isolated)."""
  out: str
  d_in: int
  d_sae: int
  batch: int
  k: int
  archs: tuple[Arch, ...]
  steps: int
  warmup: int
  rounds: int
  pair_steps: int
  threads: int
  l1_coeff: float
  lr: float
  decoder_norm: str
  xla_flags: str
  one_worker: bool
  torch_device: str = "cpu"  # SAELens's device: "cuda" on a GPU machine
  sparse_l0: float = 16.0    # relu_sparse: mean positive codes per token at the start
  sparse_cap: int = 64       # relu_sparse: our SAEConfig.sparse_cap

  @property
  def flops_per_step(self) -> int:
    """The accounting the goals use: six dense matmuls (3 forward and backward), 2*B*d_in*d_sae
    each."""
    return 12 * self.batch * self.d_in * self.d_sae


CONFIG = SAEBenchConfig  # what `harness.worker_main` decodes


# ----- Workers.

class Side(str, enum.Enum):
  """The two sides; a worker may also run `harness.PAIR` or (--one_worker) `harness.ALL`."""
  OURS = "ours"
  SAELENS = "saelens"


def build(side: Side, arch: Arch, cfg: SAEBenchConfig) -> harness.Runner:
  """One side's runner for one rule."""
  return (sae_sides.ours_runner if side == Side.OURS else sae_sides.saelens_runner)(arch, cfg)


def run_side(side: Side, runner: harness.Runner, cfg: SAEBenchConfig) -> dict:
  """One side's runner alone: step timings, memory, facts; for ours, the matmul pairs."""
  mm = sae_sides.matmul_runner(cfg) if side == Side.OURS else None
  res = {"loadavg_before": list(os.getloadavg()), "rss_baseline": measure.settle(),
         "peak_reset_supported": measure.reset_peak()}
  res.update(runner.setup())
  res["peak_rss_setup"] = measure.peak()
  measure.reset_peak()
  res["warmup_seconds"] = measure.time_calls(runner.call, runner.block, cfg.warmup)
  wall, cpu, mm_wall, mm_cpu = [], [], [], []
  for _ in range(cfg.steps):
    w, c = measure.timed(runner.call, runner.block)
    wall.append(w), cpu.append(c)
    if mm is not None:  # right after the step: both see the same background load
      w, c = measure.timed(mm.call, mm.block)
      mm_wall.append(w), mm_cpu.append(c)
  res.update({"peak_rss_steps": measure.peak(), "seconds": wall, "cpu_seconds": cpu})
  if mm is not None:
    res["matmul"] = {"seconds": mm_wall, "cpu_seconds": mm_cpu}
  res.update(runner.report())
  res["ru_maxrss"] = measure.ru_maxrss()
  res["loadavg_after"] = list(os.getloadavg())
  return res


def run_pair(runners: dict[Side, harness.Runner], cfg: SAEBenchConfig) -> dict:
  """Both sides in one process, steps alternating, for paired timings (no memory numbers)."""
  seconds = harness.alternate(runners, cfg.pair_steps, max(cfg.warmup, 1))
  return {"ours_seconds": seconds[Side.OURS], "saelens_seconds": seconds[Side.SAELENS],
          "ratio_per_pair": harness.ratios(seconds[Side.OURS], seconds[Side.SAELENS]),
          "loadavg_after": list(os.getloadavg())}


def worker(side: str, cfg: SAEBenchConfig) -> dict:
  """One worker's work, rule after rule: {rule: result}."""
  results = {}
  for arch in cfg.archs:
    if side == harness.ALL:  # one runner per side, reused for the pairs
      runners = {s: build(s, arch, cfg) for s in (Side.SAELENS, Side.OURS)}
      results[arch.value] = {s.value: run_side(s, r, cfg) for s, r in runners.items()}
      results[arch.value][Side.OURS.value]["phases"] = sae_sides.phase_seconds(arch.value, cfg)
      results[arch.value][harness.PAIR] = run_pair(runners, cfg)
    elif side == harness.PAIR:
      runners = {s: build(s, arch, cfg) for s in (Side.OURS, Side.SAELENS)}
      runners[Side.OURS].setup()
      results[arch.value] = run_pair(runners, cfg)
    else:
      side = Side(side)
      results[arch.value] = run_side(side, build(side, arch, cfg), cfg)
      if side == Side.OURS:  # after the timed steps, so it does not disturb them
        results[arch.value]["phases"] = sae_sides.phase_seconds(arch.value, cfg)
  return results


# ----- Driver: fresh interpreters per (round, rule, side), results pooled.

def spawn(side: str, cfg: SAEBenchConfig) -> dict:
  """Runs `cfg.archs` of one side in a fresh interpreter on the machine as it is (no simulated
  devices), with --xla_flags on our side; returns {rule: result}."""
  env = harness.worker_env(xla_flags="" if side == Side.SAELENS else cfg.xla_flags,
                           strip_device_count=True)
  return harness.spawn(__name__, side, cfg, env)


def pool(cfg: SAEBenchConfig, rounds: list[dict]) -> dict:
  """One side of one rule over its isolated rounds."""
  times = harness.pooled(rounds, "seconds")
  med = statistics.median(times)
  mib = 2**20
  out = {"activations_per_s": cfg.batch / med, "activations_per_s_best": cfg.batch / min(times),
         "step_seconds_median": med, "step_seconds": times,
         "cpu_seconds_per_step": statistics.median(harness.pooled(rounds, "cpu_seconds")),
         "peak_rss_steps_mb": harness.worst(rounds, "peak_rss_steps") / mib,
         "peak_rss_steps_delta_mb": max(r["peak_rss_steps"] - r["rss_baseline"]
                                        for r in rounds) / mib,
         "rss_baseline_mb": harness.worst(rounds, "rss_baseline") / mib,
         "ru_maxrss_mb": harness.worst(rounds, "ru_maxrss") / mib,
         "compile_seconds": harness.median_over(rounds, "compile_seconds"),
         "loadavg_1min": [r["loadavg_after"][0] for r in rounds]}
  if "matmul" in rounds[0]:
    pairs = [(s, c, ms, mc) for r in rounds for s, c, ms, mc in
             zip(r["seconds"], r["cpu_seconds"], r["matmul"]["seconds"],
                 r["matmul"]["cpu_seconds"])]
    mm = statistics.median(p[2] for p in pairs)
    out.update({
        "fraction_of_matmul_limit": statistics.median(6 * p[2] / p[0] for p in pairs),
        "fraction_of_matmul_limit_cpu_time": statistics.median(6 * p[3] / p[1] for p in pairs),
        "matmul_seconds_median": mm,
        "matmul_gflop_per_s": cfg.flops_per_step / 6 / mm / 1e9,
        "achieved_gflop_per_s": cfg.flops_per_step / med / 1e9,
        "xla_memory_analysis": rounds[0].get("xla_memory_analysis"),
        "final_metrics": rounds[-1]["final_metrics"]})
    if "phases" in rounds[0]:
      phases = {name: statistics.median(r["phases"][name] for r in rounds)
                for name in rounds[0]["phases"]}
      out["phases_seconds"] = {**phases, "rest_of_step": med - sum(phases.values())}
  out["versions"] = rounds[0]["versions"]
  return out


def compare(arch: Arch, cfg: SAEBenchConfig, ours: dict, ref: dict, pair: dict) -> dict:
  speedup = statistics.median(pair["ratio_per_pair"])
  goal = GOALS[arch.value]
  met = {"speedup_over_saelens": speedup >= goal["speedup_over_saelens"]}
  if "fraction_of_matmul_limit" in goal:
    met["fraction_of_matmul_limit"] = (ours["fraction_of_matmul_limit"] >=
                                       goal["fraction_of_matmul_limit"])
  return {
      "speedup_ours_over_saelens": speedup, "goal": goal, "goal_met": met,
      "paired": {"ours_activations_per_s": cfg.batch / statistics.median(pair["ours_seconds"]),
                 "saelens_activations_per_s":
                     cfg.batch / statistics.median(pair["saelens_seconds"]), **pair},
      "isolated_speedup_ours_over_saelens": ours["activations_per_s"] / ref["activations_per_s"],
      "cpu_seconds_ratio_saelens_over_ours": ref["cpu_seconds_per_step"] /
                                             ours["cpu_seconds_per_step"],
      "memory_ratio_ours_over_saelens": ours["peak_rss_steps_mb"] / ref["peak_rss_steps_mb"],
      "ours": ours, "saelens": ref}


def run(cfg: SAEBenchConfig) -> dict:
  """The whole benchmark: workers, pooling, comparison; returns the JSON report."""
  report = {"config": {**dataclasses.asdict(cfg), "archs": [a.value for a in cfg.archs],
                       "flops_per_step": cfg.flops_per_step},
            "goals": GOALS, "reference": REFERENCE, "definitions": DEFINITIONS,
            "machine": {**measure.machine(), "loadavg_start": list(os.getloadavg())},
            "archs": {}}
  runs = {a: {Side.OURS: [], Side.SAELENS: [], harness.PAIR: []} for a in cfg.archs}
  if cfg.one_worker:
    for arch, by_side in spawn(harness.ALL, cfg).items():
      for side, result in by_side.items():
        runs[Arch(arch)][side].append(result)
  else:
    for arch in cfg.archs:
      one = dataclasses.replace(cfg, archs=(arch,))
      runs[arch][harness.PAIR].append(spawn(harness.PAIR, one)[arch.value])
      for _ in range(cfg.rounds):  # alternate sides so drifting background load hits both
        for side in (Side.SAELENS, Side.OURS):
          runs[arch][side].append(spawn(side, one)[arch.value])
  for arch in cfg.archs:
    r = runs[arch]
    report["archs"][arch.value] = compare(arch, cfg, pool(cfg, r[Side.OURS]),
                                          pool(cfg, r[Side.SAELENS]), r[harness.PAIR][0])
  mms = [m for a in cfg.archs for r in runs[a][Side.OURS] for m in r["matmul"]["seconds"]]
  gflops = cfg.flops_per_step / 6 / statistics.median(mms) / 1e9
  report["matmul"] = {"shape": [cfg.batch, cfg.d_in, cfg.d_sae], "dtype": "float32",
                      "jax_gflop_per_s_median": gflops,
                      "activations_per_s_at_limit": gflops * 1e9 / cfg.flops_per_step * cfg.batch}
  report["machine"]["loadavg_end"] = list(os.getloadavg())
  return report


def summary(report: dict) -> str:
  """A table row per rule and side (paired and isolated rates, CPU, memory, fractions of the
  matmul limit, speedup), then the matmul limit and the load average."""
  rows = [["rule", "side", "act/s paired", "act/s alone", "CPU s/step", "peak MB", "delta MB",
           "of matmul", "(CPU)", "speedup"]]
  for arch, r in report["archs"].items():
    for side in ("saelens", "ours"):
      s, ours = r[side], side == "ours"
      rows.append([arch, side, f"{r['paired'][side + '_activations_per_s']:.0f}",
                   f"{s['activations_per_s']:.0f}", f"{s['cpu_seconds_per_step']:.2f}",
                   f"{s['peak_rss_steps_mb']:.0f}", f"{s['peak_rss_steps_delta_mb']:.0f}",
                   f"{s['fraction_of_matmul_limit']:.0%}" if ours else "-",
                   f"{s['fraction_of_matmul_limit_cpu_time']:.0%}" if ours else "-",
                   f"{r['speedup_ours_over_saelens']:.2f}x" if ours else ""])
  lines = [harness.table(rows, left=2)]
  for arch, r in report["archs"].items():
    phases = r["ours"].get("phases_seconds")
    if phases:
      lines.append(f"{arch} step phases (s): " + ", ".join(f"{k} {v:.3f}"
                                                           for k, v in phases.items()))
  m, mach = report["matmul"], report["machine"]
  lines.append(f"matmul {m['shape']} float32: {m['jax_gflop_per_s_median']:.1f} GFLOP/s (JAX, "
               f"median) = {m['activations_per_s_at_limit']:.0f} act/s at 12*B*d_in*d_sae FLOPs "
               f"per step; load average {mach['loadavg_start'][0]:.1f} -> "
               f"{mach['loadavg_end'][0]:.1f} on {mach['cpu_count']} cores")
  return "\n".join(lines)


if __name__ == "__main__":
  harness.worker_main("interp.bench.sae")
