r"""Circuit discovery edge scoring: interp's EAP-IG against the same method with TransformerLens.

  python experiments/bench_circuit_discovery.py --out runs/bench_circuit_discovery.json
  python experiments/bench_circuit_discovery.py --quick --out /tmp/bench_cd.json  # tiny, in-process
  python experiments/bench_circuit_discovery.py --models=gemma3_270m --out /tmp/gemma.json

Same random weights, prompts and Gauss-Legendre points on both sides, scores compared before
timing; what is measured is defined in `interp.bench.discovery` (the sides in
`interp.bench.discovery_sides`).
"""

from __future__ import annotations

import os

from absl import app, flags

from interp import usage
from interp.bench import discovery, discovery_gemma, harness
from interp.choices import check_int

flags.DEFINE_string("out", "runs/bench_circuit_discovery.json", "where the JSON report goes")
flags.DEFINE_bool("quick", False, "tiny shapes, one timed repetition, in-process (smoke test)")
flags.DEFINE_list("models", list(discovery.DEFAULT_MODELS),
                  f"models to run, from {list(discovery.MODELS)}")
flags.DEFINE_integer("steps", 8, "EAP-IG integration points (Gauss-Legendre), both sides")
flags.DEFINE_integer("reps", 5, "timed interp scoring calls per round (median reported)")
flags.DEFINE_integer("tl_reps", 3, "timed TL scoring calls per round")
flags.DEFINE_integer("rounds", 1, "worker pairs per model, TL and interp alternately")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "torch intra-op threads (= cores)")
flags.DEFINE_integer("chunk", 0, "interp: integration points per batch (0: one at a time)")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                  "both sides' compute dtype; bfloat16 is for --models=gemma3_270m only "
                  "(the GPT-2-shaped TL references run float32)")
flags.DEFINE_integer("curve_points", 24, "edge counts on interp's faithfulness curve")
flags.DEFINE_integer("seed", 0, "seed of the shared weights and prompts")


def config_from_flags(f) -> discovery.DiscoveryBenchConfig:
  try:
    models = discovery.model_shapes(f.models, f.quick)
  except ValueError as e:
    raise app.UsageError(f"--models: {e}") from e
  for name in ("steps", "reps", "tl_reps", "rounds", "threads", "curve_points"):
    check_int(name, getattr(f, name), minimum=1)
  check_int("chunk", f.chunk, minimum=0)
  if f.precision != "float32" and any(not discovery_gemma.is_gemma(m) for m in models):
    raise app.UsageError(f"--precision={f.precision}: only --models=gemma3_270m has a "
                         "bfloat16 reference; run the other models in float32")
  q = f.quick
  return discovery.DiscoveryBenchConfig(
      out=f.out, models=models, steps=f.steps, reps=1 if q else f.reps,
      tl_reps=1 if q else f.tl_reps, rounds=1 if q else f.rounds, threads=f.threads,
      chunk=f.chunk, curve_points=f.curve_points, seed=f.seed, quick=q, precision=f.precision)


def main(argv):
  del argv
  cfg = config_from_flags(flags.FLAGS)
  report = discovery.run(cfg)
  harness.write_report(cfg.out, report)
  print(discovery.summary(report) + f"\nwrote {cfg.out}")


if __name__ == "__main__":
  usage.run(main)
