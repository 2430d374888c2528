"""Toy-model training throughput: interp against a plain PyTorch loop of the same training.

  python experiments/bench_toy.py --out=runs/bench_toy.json
  python experiments/bench_toy.py --quick --out=/tmp/bench_toy.json      # seconds, smoke test

The sides (interp's step and its variants, a naive JAX port, the paper notebook's PyTorch loop)
and the unit (model-steps per second) are described in `interp.bench.toy`; each side runs in its
own worker process. `summary.<n>.ratio` is interp over the notebook-style loop.
"""

from __future__ import annotations

import os

from absl import app, flags

from interp import usage
from interp.bench import harness, toy

flags.DEFINE_string("out", "runs/bench_toy.json", "where the JSON report goes")
flags.DEFINE_list("instances", ["10", "1000"], "instance counts to measure")
flags.DEFINE_integer("torch_group", 10, "instances per torch model in the notebook-style loop")
flags.DEFINE_list("torch_threads", ["1", str(len(os.sched_getaffinity(0)))],
                  "torch thread counts tried (the best is reported)")
flags.DEFINE_integer("cpu_devices", len(os.sched_getaffinity(0)), "interp host devices")
flags.DEFINE_float("seconds", 2.0, "target wall seconds per timed repetition")
flags.DEFINE_integer("reps", 5, "timed repetitions (median reported)")
flags.DEFINE_bool("quick", False, "tiny timing budget and no variants (smoke test)")


def config_from_flags(f) -> toy.ToyBenchConfig:
  try:
    instances = tuple(int(i) for i in f.instances)
    threads = tuple(int(t) for t in f.torch_threads)
  except ValueError as e:
    raise app.UsageError(f"--instances and --torch_threads take integers: {e}") from e
  if min(instances + threads) <= 0 or f.torch_group <= 0 or f.cpu_devices <= 0:
    raise app.UsageError("--instances, --torch_threads, --torch_group, --cpu_devices must be > 0")
  return toy.ToyBenchConfig(out=f.out, instances=instances, torch_group=f.torch_group,
                            torch_threads=threads, cpu_devices=f.cpu_devices,
                            seconds=0.3 if f.quick else f.seconds,
                            reps=2 if f.quick else f.reps, quick=f.quick)


def main(argv):
  del argv
  cfg = config_from_flags(flags.FLAGS)
  report = toy.run(cfg)
  harness.write_report(cfg.out, report)
  print(toy.summary(report))
  print(f"wrote {cfg.out}")


if __name__ == "__main__":
  usage.run(main)
