r"""SAE training-step throughput and peak memory: interp (JAX) against SAELens (torch).

  python experiments/bench_sae.py --out=runs/bench_sae.json
  python experiments/bench_sae.py --d_in=32 --d_sae=256 --batch=64 --k=8 --steps=2 --warmup=1 \
      --pair_steps=2 --one_worker --out=/tmp/bench_sae.json             # tiny smoke run

Both sides train the same shapes (default d_in 512, d_sae 8192 = 16x, batch 4096) on the same
fixed random batch, for each rule in --archs:
  relu  ours: SAEConfig(activation=relu, decoder_norm=--decoder_norm) through
        `interp.sae.train.programs` (the jitted, donated step: loss, grads, clip, AdamW, dead
        counters); SAELens: StandardTrainingSAE (L1 weighted by decoder-row norms).
  topk  ours: activation=topk, k, AuxK; SAELens: TopKTrainingSAE (its defaults:
        rescale_acts_by_decoder_norm, AuxK). Neither side has dead latents in so few steps.
The SAELens step is SAETrainer._train_step's work: training_forward_pass with the dead-latent
mask, firing bookkeeping, backward, clip_grad_norm_(1.0), Adam step, zero_grad; torch threads =
--threads (the machine's cores). Ours uses the same clipping and Adam betas.

Speed: the headline ratio comes from a worker per rule that builds both sides and alternates
their steps (`--worker=pair`), so other tenants' drifting load hits both alike: the median over
pairs of t_SAELens / t_ours. The matmul limit is the float32 [batch x d_in] @ [d_in x d_sae] of
JAX, timed right after each of our steps; each step is charged 12*batch*d_in*d_sae
FLOPs (six such matmuls), so its fraction of the limit is 6 * t_matmul / t_step, median over
those pairs. CPU seconds (user + sys, all threads) per step are reported too, and the fraction
by CPU time; they are less sensitive to other tenants than wall time, but count spin-waiting.
Memory: each (round, rule, side) also runs alone in a fresh worker (`--worker=ours|saelens`),
sides alternating, for its peak RSS (and isolated timings). --one_worker runs all of it in a
single process (a smoke test: memory then not isolated). The load average goes in the JSON.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import json
import os
import resource
import statistics
import sys
import time
from typing import Callable

from absl import app, flags

from interp.bench import measure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Goals, and SAELens / plain-JAX rates measured on this machine (2 CPU cores, d_in 512, 16x,
# batch 4096) for reference.
GOALS = {"relu": {"fraction_of_matmul_limit": 0.85, "speedup_over_saelens": 1.6},
         "topk": {"speedup_over_saelens": 3.0}}
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
    "pooling": "isolated timings: median over all timed steps of all rounds; memory: worst round",
}


class Arch(str, enum.Enum):
  RELU = "relu"
  TOPK = "topk"


class Side(str, enum.Enum):
  NONE = ""
  OURS = "ours"
  SAELENS = "saelens"
  PAIR = "pair"  # both sides in one process, steps alternating: paired timings only
  ALL = "all"    # --one_worker: everything in one process (smoke test; memory not isolated)


flags.DEFINE_string("out", "runs/bench_sae.json", "where the JSON report goes")
flags.DEFINE_integer("d_in", 512, "input width")
flags.DEFINE_integer("d_sae", 8192, "latents (16x expansion by default)")
flags.DEFINE_integer("batch", 4096, "activations per step")
flags.DEFINE_integer("k", 32, "latents per token for topk")
flags.DEFINE_list("archs", [a.value for a in Arch], f"rules to run, from {[a.value for a in Arch]}")
flags.DEFINE_integer("steps", 6, "timed steps per isolated worker")
flags.DEFINE_integer("warmup", 2, "untimed steps per side before timing (after compiling)")
flags.DEFINE_integer("rounds", 1, "isolated worker pairs per rule, SAELens and ours alternately")
flags.DEFINE_integer("pair_steps", 8, "alternating step pairs in the paired-timing worker")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "torch intra-op threads (= cores)")
flags.DEFINE_float("l1_coeff", 5.0, "L1 coefficient (relu), both sides")
flags.DEFINE_float("lr", 3e-4, "Adam learning rate, both sides")
flags.DEFINE_enum("decoder_norm", "weighted", ["weighted", "unit"], "ours, relu: `weighted` is "
                  "what SAELens's standard SAE does (L1 times decoder-row norms, free rows)")
flags.DEFINE_string("xla_flags", "", "extra XLA_FLAGS for our workers (experiments)")
flags.DEFINE_bool("one_worker", False, "run everything in one worker process (smoke test)")
flags.DEFINE_enum("worker", "", [s.value for s in Side], "internal: run one side in this process")
flags.DEFINE_list("worker_archs", [], "internal: the worker's rules, run one after another")
flags.DEFINE_string("worker_out", "", "internal: JSON file the worker writes")


@dataclasses.dataclass(frozen=True)
class BenchSAEConfig:
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

  @property
  def flops_per_step(self) -> int:
    """FLOPs charged per step: six dense matmuls (3 forward-and-backward), 2*B*d_in*d_sae each."""
    return 12 * self.batch * self.d_in * self.d_sae


def config_from_flags(f) -> BenchSAEConfig:
  bad = [a for a in f.archs if a not in {x.value for x in Arch}]
  if bad:
    raise app.UsageError(f"--archs: unknown {bad}; valid: {[a.value for a in Arch]}")
  for name in ("d_in", "d_sae", "batch", "k", "steps", "rounds", "pair_steps", "threads"):
    if getattr(f, name) <= 0:
      raise app.UsageError(f"--{name}={getattr(f, name)} must be positive")
  if f.k > f.d_sae:
    raise app.UsageError(f"--k={f.k} must be at most --d_sae={f.d_sae}")
  return BenchSAEConfig(out=f.out, d_in=f.d_in, d_sae=f.d_sae, batch=f.batch, k=f.k,
                        archs=tuple(Arch(a) for a in f.archs), steps=f.steps,
                        warmup=max(f.warmup, 0), rounds=f.rounds, pair_steps=f.pair_steps,
                        threads=f.threads, l1_coeff=f.l1_coeff, lr=f.lr,
                        decoder_norm=f.decoder_norm, xla_flags=f.xla_flags,
                        one_worker=f.one_worker)


def batch_data(cfg: BenchSAEConfig):
  """The fixed batch both sides train on (numpy float32 [batch, d_in])."""
  import numpy as np
  return np.random.default_rng(0).normal(size=(cfg.batch, cfg.d_in)).astype(np.float32)


def cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def timed(call: Callable[[], object], block: Callable[[object], object]) -> tuple[float, float]:
  """(wall, CPU) seconds of one blocked call."""
  c0, t0 = cpu_seconds(), time.perf_counter()
  block(call())
  return time.perf_counter() - t0, cpu_seconds() - c0


@dataclasses.dataclass
class Runner:
  """One side, built: `setup` (timed apart: JAX's compile), `step` one training step, `block`
  until its outputs exist, `report` facts gathered after timing."""
  setup: Callable[[], dict]
  step: Callable[[], object]
  block: Callable[[object], object]
  report: Callable[[], dict]


# ----- Ours (JAX).

def ours_runner(arch: Arch, cfg: BenchSAEConfig) -> Runner:
  import jax
  from interp.parallel import mesh as mesh_lib
  from interp.sae import train as sae_train
  from interp.sae.config import SAEConfig
  from interp.train.optim import OptimizerConfig

  if arch == Arch.RELU:
    sae_cfg = SAEConfig(cfg.d_in, cfg.d_sae, activation="relu", l1_coeff=cfg.l1_coeff,
                        decoder_norm=cfg.decoder_norm)
  else:
    sae_cfg = SAEConfig(cfg.d_in, cfg.d_sae, activation="topk", k=cfg.k, dead_mitigation="auxk")
  optim = OptimizerConfig(lr=cfg.lr, warmup_steps=0, grad_clip=1.0, b2=0.999)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  data = batch_data(cfg)
  n_sample = min(cfg.batch, 1024)
  progs = sae_train.programs(sae_cfg, optim, mesh, n_sample)
  holder = {"state": jax.block_until_ready(progs.init(jax.random.key(0), data[:n_sample]))}
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
            "versions": {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                         "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                         "path": "interp.sae.train.programs(...).step, AOT-compiled"}}

  return Runner(setup, step, jax.block_until_ready, report)


def matmul_runner(cfg: BenchSAEConfig) -> Runner:
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


def saelens_runner(arch: Arch, cfg: BenchSAEConfig) -> Runner:
  from importlib import metadata

  import torch
  torch.set_num_threads(cfg.threads)
  sae_lens = import_sae_lens()
  from sae_lens.saes.sae import TrainStepInput
  torch.manual_seed(0)
  if arch == Arch.RELU:
    sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
        d_in=cfg.d_in, d_sae=cfg.d_sae, l1_coefficient=cfg.l1_coeff))
    coefficients = {"l1": cfg.l1_coeff}
  else:
    sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
        d_in=cfg.d_in, d_sae=cfg.d_sae, k=cfg.k))
    coefficients = {}
  sae.train()
  optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
  x = torch.from_numpy(batch_data(cfg))
  since_fired = torch.zeros(cfg.d_sae)
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

  return Runner(lambda: {"compile_seconds": 0.0}, step, lambda out: out, report)


# ----- Workers.

def build(side: Side, arch: Arch, cfg: BenchSAEConfig) -> Runner:
  return (ours_runner if side == Side.OURS else saelens_runner)(arch, cfg)


def run_side(side: Side, runner: Runner, cfg: BenchSAEConfig) -> dict:
  """One side's runner alone: step timings, memory, facts; for ours, the matmul pairs."""
  mm = matmul_runner(cfg) if side == Side.OURS else None
  res = {"loadavg_before": list(os.getloadavg()), "rss_baseline": measure.settle(),
         "peak_reset_supported": measure.reset_peak()}
  res.update(runner.setup())
  res["peak_rss_setup"] = measure.peak()
  measure.reset_peak()
  res["warmup_seconds"] = measure.time_calls(runner.step, runner.block, cfg.warmup)
  wall, cpu, mm_wall, mm_cpu = [], [], [], []
  for _ in range(cfg.steps):
    w, c = timed(runner.step, runner.block)
    wall.append(w), cpu.append(c)
    if mm is not None:  # right after the step: both see the same background load
      w, c = timed(mm.step, mm.block)
      mm_wall.append(w), mm_cpu.append(c)
  res.update({"peak_rss_steps": measure.peak(), "seconds": wall, "cpu_seconds": cpu})
  if mm is not None:
    res["matmul"] = {"seconds": mm_wall, "cpu_seconds": mm_cpu}
  res.update(runner.report())
  res["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  res["loadavg_after"] = list(os.getloadavg())
  return res


def run_pair(runners: dict[Side, Runner], cfg: BenchSAEConfig) -> dict:
  """Both sides in one process, steps alternating, for paired timings (no memory numbers)."""
  for r in runners.values():
    measure.time_calls(r.step, r.block, max(cfg.warmup, 1))
  seconds = {side: [] for side in runners}
  for _ in range(cfg.pair_steps):
    for side, r in runners.items():
      time.sleep(0.2)  # let the other library's worker threads stop spinning
      seconds[side].append(timed(r.step, r.block)[0])
  ratios = [s / o for o, s in zip(seconds[Side.OURS], seconds[Side.SAELENS])]
  return {"ours_seconds": seconds[Side.OURS], "saelens_seconds": seconds[Side.SAELENS],
          "ratio_per_pair": ratios, "loadavg_after": list(os.getloadavg())}


def worker(side: Side, archs, cfg: BenchSAEConfig) -> dict:
  results = {}
  for arch in archs:
    if side == Side.ALL:  # one runner per side, reused for the pairs
      runners = {s: build(s, arch, cfg) for s in (Side.SAELENS, Side.OURS)}
      results[arch.value] = {s.value: run_side(s, r, cfg) for s, r in runners.items()}
      results[arch.value][Side.PAIR.value] = run_pair(runners, cfg)
    elif side == Side.PAIR:
      runners = {s: build(s, arch, cfg) for s in (Side.OURS, Side.SAELENS)}
      runners[Side.OURS].setup()
      results[arch.value] = run_pair(runners, cfg)
    else:
      results[arch.value] = run_side(side, build(side, arch, cfg), cfg)
  return results


# ----- Driver: fresh interpreters per (round, rule, side), results pooled.

def spawn(side: Side, archs, cfg: BenchSAEConfig, argv: list[str]) -> dict:
  """Runs `archs` of one side in a fresh interpreter; returns {rule: result}."""
  env = dict(os.environ)
  # The machine as it is: no simulated devices (tests set 8), plus --xla_flags for our side.
  xla = [f for f in env.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
  if side != Side.SAELENS and cfg.xla_flags:
    xla.append(cfg.xla_flags)
  env["XLA_FLAGS"] = " ".join(xla)
  return measure.run_worker(__file__, [*argv[1:], f"--worker={side.value}",
                                       f"--worker_archs={','.join(a.value for a in archs)}"],
                            env=env)


def pool(cfg: BenchSAEConfig, rounds: list[dict]) -> dict:
  """One side of one rule over its isolated rounds."""
  times = [t for r in rounds for t in r["seconds"]]
  med = statistics.median(times)
  mib = 2**20
  out = {"activations_per_s": cfg.batch / med, "activations_per_s_best": cfg.batch / min(times),
         "step_seconds_median": med, "step_seconds": times,
         "cpu_seconds_per_step": statistics.median(c for r in rounds for c in r["cpu_seconds"]),
         "peak_rss_steps_mb": max(r["peak_rss_steps"] for r in rounds) / mib,
         "peak_rss_steps_delta_mb": max(r["peak_rss_steps"] - r["rss_baseline"]
                                        for r in rounds) / mib,
         "rss_baseline_mb": max(r["rss_baseline"] for r in rounds) / mib,
         "ru_maxrss_mb": max(r["ru_maxrss"] for r in rounds) / mib,
         "compile_seconds": statistics.median(r["compile_seconds"] for r in rounds),
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
  out["versions"] = rounds[0]["versions"]
  return out


def compare(arch: Arch, cfg: BenchSAEConfig, ours: dict, ref: dict, pair: dict) -> dict:
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


def run(cfg: BenchSAEConfig, argv: list[str]) -> dict:
  report = {"config": {**dataclasses.asdict(cfg), "archs": [a.value for a in cfg.archs],
                       "flops_per_step": cfg.flops_per_step},
            "goals": GOALS, "reference": REFERENCE, "definitions": DEFINITIONS,
            "machine": {**measure.machine(), "loadavg_start": list(os.getloadavg())},
            "archs": {}}
  runs = {a: {Side.OURS: [], Side.SAELENS: [], Side.PAIR: []} for a in cfg.archs}
  if cfg.one_worker:
    for arch, by_side in spawn(Side.ALL, cfg.archs, cfg, argv).items():
      for side, result in by_side.items():
        runs[Arch(arch)][Side(side)].append(result)
  else:
    for arch in cfg.archs:
      runs[arch][Side.PAIR].append(spawn(Side.PAIR, (arch,), cfg, argv)[arch.value])
      for _ in range(cfg.rounds):  # alternate sides so drifting background load hits both
        for side in (Side.SAELENS, Side.OURS):
          runs[arch][side].append(spawn(side, (arch,), cfg, argv)[arch.value])
  for arch in cfg.archs:
    r = runs[arch]
    report["archs"][arch.value] = compare(arch, cfg, pool(cfg, r[Side.OURS]),
                                          pool(cfg, r[Side.SAELENS]), r[Side.PAIR][0])
  mms = [m for a in cfg.archs for r in runs[a][Side.OURS] for m in r["matmul"]["seconds"]]
  gflops = cfg.flops_per_step / 6 / statistics.median(mms) / 1e9
  report["matmul"] = {"shape": [cfg.batch, cfg.d_in, cfg.d_sae], "dtype": "float32",
                      "jax_gflop_per_s_median": gflops,
                      "activations_per_s_at_limit": gflops * 1e9 / cfg.flops_per_step * cfg.batch}
  report["machine"]["loadavg_end"] = list(os.getloadavg())
  return report


def summary(report: dict) -> str:
  lines = [f"{'rule':5} {'side':8} {'act/s paired':>12} {'act/s alone':>11} {'CPU s/step':>10} "
           f"{'peak MB':>8} {'delta MB':>8} {'of matmul':>9} {'(CPU)':>6} {'speedup':>8}"]
  for arch, r in report["archs"].items():
    for side in ("saelens", "ours"):
      s = r[side]
      frac = f"{s['fraction_of_matmul_limit']:.0%}" if side == "ours" else "-"
      frac_cpu = f"{s['fraction_of_matmul_limit_cpu_time']:.0%}" if side == "ours" else "-"
      sp = f"{r['speedup_ours_over_saelens']:.2f}x" if side == "ours" else ""
      lines.append(f"{arch:5} {side:8} {r['paired'][side + '_activations_per_s']:12.0f} "
                   f"{s['activations_per_s']:11.0f} {s['cpu_seconds_per_step']:10.2f} "
                   f"{s['peak_rss_steps_mb']:8.0f} {s['peak_rss_steps_delta_mb']:8.0f} "
                   f"{frac:>9} {frac_cpu:>6} {sp:>8}")
  m, mach = report["matmul"], report["machine"]
  lines.append(f"matmul {m['shape']} float32: {m['jax_gflop_per_s_median']:.1f} GFLOP/s (JAX, "
               f"median) = {m['activations_per_s_at_limit']:.0f} act/s at 12*B*d_in*d_sae FLOPs "
               f"per step; load average {mach['loadavg_start'][0]:.1f} -> "
               f"{mach['loadavg_end'][0]:.1f} on {mach['cpu_count']} cores")
  return "\n".join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  cfg = config_from_flags(f)
  if f.worker:
    results = worker(Side(f.worker), [Arch(a) for a in f.worker_archs], cfg)
    with open(f.worker_out, "w") as fh:
      json.dump(results, fh)
    return
  report = run(cfg, sys.argv)
  os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
  with open(cfg.out, "w") as fh:
    json.dump(report, fh, indent=1)
  print(summary(report))
  print(f"wrote {cfg.out}")


if __name__ == "__main__":
  app.run(main)
