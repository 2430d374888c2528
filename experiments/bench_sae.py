r"""SAE training-step throughput and peak memory: interp (JAX) against SAELens (torch).

  python experiments/bench_sae.py --out=runs/bench_sae.json
  python experiments/bench_sae.py --quick --out=/tmp/bench_sae.json    # tiny smoke run

What is measured (relu, topk and relu_sparse rules, paired step timings, the matmul limit,
isolated memory) and how each number is defined is in `interp.bench.sae` (the sides in
`interp.bench.sae_sides`).
"""

from __future__ import annotations

import os

from absl import app, flags

from interp import usage
from interp.bench import harness, sae

_ARCHS = [a.value for a in sae.Arch]

flags.DEFINE_string("out", "runs/bench_sae.json", "where the JSON report goes")
flags.DEFINE_integer("d_in", 512, "input width")
flags.DEFINE_integer("d_sae", 8192, "latents (16x expansion by default)")
flags.DEFINE_integer("batch", 4096, "activations per step")
flags.DEFINE_integer("k", 32, "latents per token for topk")
flags.DEFINE_list("archs", _ARCHS, f"rules to run, from {_ARCHS}")
flags.DEFINE_integer("steps", 6, "timed steps per isolated worker")
flags.DEFINE_integer("warmup", 2, "untimed steps per side before timing (after compiling)")
flags.DEFINE_integer("rounds", 1, "isolated worker pairs per rule, SAELens and ours alternately")
flags.DEFINE_integer("pair_steps", 8, "alternating step pairs in the paired-timing worker")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "torch intra-op threads (= cores)")
flags.DEFINE_float("l1_coeff", 5.0, "L1 coefficient (relu), both sides")
flags.DEFINE_float("lr", 3e-4, "Adam learning rate, both sides")
flags.DEFINE_enum("decoder_norm", "weighted", ["weighted", "unit"], "ours, relu: `weighted` is "
                  "what SAELens's standard SAE does (L1 times decoder-row norms, free rows)")
flags.DEFINE_float("sparse_l0", 16.0, "relu_sparse: mean positive codes per token at the start "
                   "(both sides' encoder bias lowered to it)")
flags.DEFINE_integer("sparse_cap", 64, "relu_sparse: our SAEConfig.sparse_cap")
flags.DEFINE_string("xla_flags", "", "extra XLA_FLAGS for our workers (experiments)")
flags.DEFINE_bool("one_worker", False, "run everything in one worker process (smoke test)")
flags.DEFINE_bool("quick", False, "smoke test: QUICK's tiny sizes and steps in one worker, "
                  "replacing those flags")

# --quick's sizes: seconds, and every field of the report still filled.
QUICK = dict(d_in=32, d_sae=256, batch=64, k=8, steps=2, warmup=1, pair_steps=2, one_worker=True)


def config_from_flags(f) -> sae.SAEBenchConfig:
  if f.quick:
    for name, value in QUICK.items():
      setattr(f, name, value)
  bad = [a for a in f.archs if a not in _ARCHS]
  if bad:
    raise app.UsageError(f"--archs: unknown {bad}; valid: {_ARCHS}")
  for name in ("d_in", "d_sae", "batch", "k", "steps", "rounds", "pair_steps", "threads"):
    if getattr(f, name) <= 0:
      raise app.UsageError(f"--{name}={getattr(f, name)} must be positive")
  if f.k > f.d_sae:
    raise app.UsageError(f"--k={f.k} must be at most --d_sae={f.d_sae}")
  if "relu_sparse" in f.archs and not 0 < f.sparse_l0 < f.sparse_cap <= f.d_sae:
    raise app.UsageError(f"--sparse_l0={f.sparse_l0} and --sparse_cap={f.sparse_cap}: need "
                         f"0 < sparse_l0 < sparse_cap <= --d_sae={f.d_sae}")
  return sae.SAEBenchConfig(
      out=f.out, d_in=f.d_in, d_sae=f.d_sae, batch=f.batch, k=f.k,
      archs=tuple(sae.Arch(a) for a in f.archs), steps=f.steps, warmup=max(f.warmup, 0),
      rounds=f.rounds, pair_steps=f.pair_steps, threads=f.threads, l1_coeff=f.l1_coeff,
      lr=f.lr, decoder_norm=f.decoder_norm, xla_flags=f.xla_flags, one_worker=f.one_worker,
      sparse_l0=f.sparse_l0, sparse_cap=f.sparse_cap)


def main(argv):
  del argv
  cfg = config_from_flags(flags.FLAGS)
  report = sae.run(cfg)
  harness.write_report(cfg.out, report)
  print(sae.summary(report))
  print(f"wrote {cfg.out}")


if __name__ == "__main__":
  usage.run(main)
