r"""Forward-with-cache throughput and memory: interp (JAX) against TransformerLens (torch).

  python experiments/bench_forward.py --out runs/bench_forward.json
  python experiments/bench_forward.py --quick --out /tmp/bench_forward.json   # tiny, 1 rep
  python experiments/bench_forward.py --nointerp_reuse_outputs --out runs/bench_forward_fresh.json
  python experiments/bench_forward.py --models=gpt2_small \
      --xla_flags=--xla_cpu_experimental_ynn_fusion_type=   # XLA's Eigen dots instead of YNNPACK

What is measured, and how each number is defined, is in `interp.bench.forward` (the sides in
`interp.bench.forward_sides`); every side runs in its own worker process.
"""

from __future__ import annotations

import os

from absl import app, flags

from interp import usage
from interp.bench import forward, harness

flags.DEFINE_string("out", "runs/bench_forward.json", "where the JSON report goes")
flags.DEFINE_bool("quick", False, "tiny shapes and one timed repetition (smoke test)")
flags.DEFINE_list("models", list(forward.MODELS), f"models to run, from {list(forward.MODELS)}")
flags.DEFINE_integer("reps", 5, "timed repetitions per side and round (median reported)")
flags.DEFINE_integer("rounds", 2, "worker pairs per model, run TL/interp alternately; reps pooled")
flags.DEFINE_integer("pair_reps", 6, "alternating interp/TL calls in the paired-timing worker")
flags.DEFINE_integer("warmup", 2, "untimed warm-up calls per side (after JAX's compile)")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "torch intra-op threads (= cores)")
flags.DEFINE_string("mesh", "data:-1", "interp mesh, e.g. data:-1 (all devices) or data:1")
flags.DEFINE_integer("gemm", 2048, "size n of the n x n float32 GEMM used to gauge the machine")
flags.DEFINE_bool("skip_scores", False, "capture no attn.hook_attn_scores on either side (TL "
                  "4.3's boot_native model fires it with the pattern, so it costs TL nothing)")
flags.DEFINE_bool("interp_reuse_outputs", True, "interp writes each call's outputs into the "
                  "previous call's (make_forward's default); --nointerp_reuse_outputs allocates "
                  "fresh outputs every call")
flags.DEFINE_string("xla_flags", "", "extra XLA_FLAGS for the interp worker (for experiments)")


def config_from_flags(f) -> forward.ForwardBenchConfig:
  try:
    models = forward.model_shapes(f.models, f.quick)
  except ValueError as e:
    raise app.UsageError(f"--models: {e}") from e
  q = f.quick
  return forward.ForwardBenchConfig(
      out=f.out, models=models, reps=1 if q else f.reps, rounds=1 if q else f.rounds,
      pair_reps=1 if q else f.pair_reps, warmup=1 if q else f.warmup, threads=f.threads,
      mesh=f.mesh, gemm=256 if q else f.gemm, xla_flags=f.xla_flags, skip_scores=f.skip_scores,
      interp_reuse_outputs=f.interp_reuse_outputs, quick=q)


def main(argv):
  del argv
  cfg = config_from_flags(flags.FLAGS)
  report = forward.run(cfg)
  harness.write_report(cfg.out, report)
  print(forward.summary(report) + f"; wrote {cfg.out}")


if __name__ == "__main__":
  usage.run(main)
