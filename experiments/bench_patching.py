r"""Activation patching sweeps: interp against TransformerLens's `transformer_lens.patching`.

  python experiments/bench_patching.py --out runs/bench_patching.json
  python experiments/bench_patching.py --quick --out /tmp/bench_patching.json   # tiny, 1 rep

Same random weights and prompts on both sides, results compared before timing; what is measured
is defined in `interp.bench.patching` (the sides in `interp.bench.patching_sides`).
"""

from __future__ import annotations

import os

from absl import app, flags

from interp import usage
from interp.bench import harness, patching
from interp.choices import check_int

flags.DEFINE_string("out", "runs/bench_patching.json", "where the JSON report goes")
flags.DEFINE_bool("quick", False, "tiny shapes, one timed repetition, one worker (smoke test)")
flags.DEFINE_list("models", list(patching.MODELS), f"models to run, from {list(patching.MODELS)}")
flags.DEFINE_integer("reps", 5, "timed interp sweeps per kind and round (median reported)")
flags.DEFINE_integer("tl_reps", 1, "timed TL sweeps per kind and round (each is slow)")
flags.DEFINE_integer("rounds", 1, "worker pairs per model, TL and interp alternately")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "torch intra-op threads (= cores)")
flags.DEFINE_integer("chunk", 0, "interp: sites per vmapped batch (0: every site at once, "
                     "the suffix sweep; fewer than a kind's sites: the general vmapped path)")
flags.DEFINE_integer("seed", 0, "seed of the shared weights and prompts")


def config_from_flags(f) -> patching.PatchingBenchConfig:
  try:
    models = patching.model_shapes(f.models, f.quick)
  except ValueError as e:
    raise app.UsageError(f"--models: {e}") from e
  for name in ("reps", "tl_reps", "rounds", "threads"):
    check_int(name, getattr(f, name), minimum=1)
  check_int("chunk", f.chunk, minimum=0)
  q = f.quick
  return patching.PatchingBenchConfig(
      out=f.out, models=models, reps=1 if q else f.reps, tl_reps=1 if q else f.tl_reps,
      rounds=1 if q else f.rounds, threads=f.threads, chunk=f.chunk, seed=f.seed, quick=q)


def main(argv):
  del argv
  cfg = config_from_flags(flags.FLAGS)
  report = patching.run(cfg)
  harness.write_report(cfg.out, report)
  print(patching.summary(report) + f"\nwrote {cfg.out}")


if __name__ == "__main__":
  usage.run(main)
