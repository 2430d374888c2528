"""Toy-model training throughput: interp against a plain PyTorch loop of the same training.

  python experiments/bench_toy.py --out=runs/bench_toy.json
  python experiments/bench_toy.py --quick --out=/tmp/bench_toy.json      # seconds, smoke test

The training and the reference loops are in `interp.toy.compare` (the PyTorch loop is the
paper notebook's: torch.rand twice, einsum forward, AdamW, 10 instances per model). Sides run one
after the other, each in its own subprocess, so no thread pool or allocator is shared:
  interp      `interp.toy.train.build`'s step over one host device per core; in full mode also
              variants that change one choice at a time (one device, jax's own threefry
              lowering, 64 bits per sample, the factored contraction, a 20-instance chunk), and
              the data path alone for every PRNG x bits choice.
  naive_jax   the straightforward JAX port (vmap, whole batch, default keys, two draws).
  torch       the notebook loop, 10 instances at a time (1,000 instances = 100 sequential groups:
              the rate is the group's), and all instances in one model as a stronger baseline;
              best of --torch_threads.
The unit is model-steps per second, instances x steps / wall seconds (CPU-second rates beside).
`summary.<n>.ratio` is interp over the notebook-style loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile

from absl import app, flags

# The PyTorch notebook's rate measured on this machine (the key is part of the report's format).
REFERENCE = {"torch_notebook_model_steps_per_s_issue": 2700}

flags.DEFINE_string("out", "runs/bench_toy.json", "where the JSON report goes")
flags.DEFINE_list("instances", ["10", "1000"], "instance counts to measure")
flags.DEFINE_integer("torch_group", 10, "instances per torch model in the notebook-style loop")
flags.DEFINE_list("torch_threads", ["1", str(len(os.sched_getaffinity(0)))],
                  "torch thread counts tried (the best is reported)")
flags.DEFINE_integer("cpu_devices", len(os.sched_getaffinity(0)), "interp host devices")
flags.DEFINE_float("seconds", 2.0, "target wall seconds per timed repetition")
flags.DEFINE_integer("reps", 5, "timed repetitions (median reported)")
flags.DEFINE_bool("quick", False, "tiny timing budget and no variants (smoke test)")
flags.DEFINE_enum("worker", "", ["", "interp", "naive_jax", "torch"], "internal: one side")
flags.DEFINE_string("worker_out", "", "internal: JSON file the worker writes")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  out: str
  instances: tuple[int, ...]
  torch_group: int
  torch_threads: tuple[int, ...]
  cpu_devices: int
  seconds: float
  reps: int
  quick: bool


def config_from_flags(f) -> BenchConfig:
  try:
    instances = tuple(int(i) for i in f.instances)
    threads = tuple(int(t) for t in f.torch_threads)
  except ValueError as e:
    raise app.UsageError(f"--instances and --torch_threads take integers: {e}") from e
  if min(instances + threads) <= 0 or f.torch_group <= 0 or f.cpu_devices <= 0:
    raise app.UsageError("--instances, --torch_threads, --torch_group, --cpu_devices must be > 0")
  return BenchConfig(out=f.out, instances=instances, torch_group=f.torch_group,
                     torch_threads=threads, cpu_devices=f.cpu_devices,
                     seconds=0.3 if f.quick else f.seconds, reps=2 if f.quick else f.reps,
                     quick=f.quick)


def interp_side(cfg: BenchConfig) -> dict:
  import jax
  from interp.toy import compare, data, model, speed
  runs = {str(n): {"default": speed.interp_rate(compare.sweep_for(n), compare.train_config(),
                                                cfg.seconds, cfg.reps)}
          for n in cfg.instances}
  out = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "runs": runs}
  if cfg.quick:
    return out
  n = max(cfg.instances)
  sweep = compare.sweep_for(n)
  time = lambda devices=None, **changes: speed.interp_rate(
      sweep, compare.train_config(**changes), cfg.seconds, cfg.reps, devices)
  runs[str(n)].update({
      "one_device": time(jax.devices()[:1]),
      "threefry_jax_lowering": time(data=data.DataConfig(fused=False)),
      "bits_64": time(data=data.DataConfig(bits="64")),
      "factored": time(model=model.ToyModelConfig(compare.N_FEATURES, compare.N_HIDDEN,
                                                  "factored")),
      "chunk_20": time(chunk=20)})
  # The data path alone, one device (philox runs on one device only), 100 instances.
  out["data_table"] = speed.data_table(compare.sweep_for(100), compare.BATCH, seconds=0.5)
  return out


def naive_jax_side(cfg: BenchConfig) -> dict:
  import jax
  from interp.toy import compare
  return {"devices": [str(jax.devices()[0])],
          "runs": {str(n): compare.naive_jax(n, cfg.seconds, cfg.reps) for n in cfg.instances}}


def torch_side(cfg: BenchConfig) -> dict:
  from interp.toy import compare

  def best(instances: int) -> dict:
    tried = [compare.torch_notebook(instances, t, cfg.seconds, cfg.reps)
             for t in cfg.torch_threads]
    pick = max(tried, key=lambda r: r["per_s"])
    return {**pick, "tried": [{"threads": r["threads"], "per_s": r["per_s"]} for r in tried]}

  group = best(cfg.torch_group)
  runs = {}
  for n in cfg.instances:
    runs[str(n)] = {"notebook": {**group, "group": cfg.torch_group,
                                 "groups": -(-n // cfg.torch_group)},
                    "batched": group if n == cfg.torch_group else best(n)}
  return {"runs": runs}


SIDES = {"interp": interp_side, "naive_jax": naive_jax_side, "torch": torch_side}


def spawn(side: str, cfg: BenchConfig, argv: list[str]) -> dict:
  """Runs one side in a fresh interpreter and returns its JSON result."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "result.json")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    devices = cfg.cpu_devices if side == "interp" else 1
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, os.path.abspath(__file__), *argv[1:], f"--worker={side}",
           f"--worker_out={out}"]
    subprocess.run(cmd, env=env, check=True)
    with open(out) as fh:
      return json.load(fh)


def run(cfg: BenchConfig, argv: list[str]) -> dict:
  from interp.toy import compare
  report = {"config": dataclasses.asdict(cfg), "reference": REFERENCE,
            "training": {"n_features": compare.N_FEATURES, "n_hidden": compare.N_HIDDEN,
                         "batch": compare.BATCH, "lr": compare.LR,
                         "optimizer": "AdamW(0.9, 0.999), no weight decay"},
            "machine": {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                        "platform": platform.platform(), "loadavg_start": os.getloadavg()}}
  for side in ("torch", "naive_jax", "interp"):
    report[side] = spawn(side, cfg, argv)
  report["machine"]["loadavg_end"] = os.getloadavg()
  summary = {}
  for n in map(str, cfg.instances):
    ours = report["interp"]["runs"][n]["default"]
    nb = report["torch"]["runs"][n]["notebook"]
    batched = report["torch"]["runs"][n]["batched"]
    summary[n] = {
        "interp_model_steps_per_s": ours["per_s"],
        "torch_notebook_model_steps_per_s": nb["per_s"],
        "torch_batched_model_steps_per_s": batched["per_s"],
        "naive_jax_model_steps_per_s": report["naive_jax"]["runs"][n]["per_s"],
        "ratio": ours["per_s"] / nb["per_s"],
        "ratio_vs_torch_batched": ours["per_s"] / batched["per_s"],
        "ratio_per_cpu_s": ours["per_cpu_s"] / nb["per_cpu_s"]}
  report["summary"] = summary
  return report


def main(argv):
  f = flags.FLAGS
  cfg = config_from_flags(f)
  if f.worker:
    result = SIDES[f.worker](cfg)
    with open(f.worker_out, "w") as fh:
      json.dump(result, fh)
    return
  report = run(cfg, sys.argv)
  os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
  with open(cfg.out, "w") as fh:
    json.dump(report, fh, indent=1)
  for n, s in report["summary"].items():
    print(f"{n} instances: interp {s['interp_model_steps_per_s']:.0f} model-steps/s, torch "
          f"(notebook, {cfg.torch_group} at a time) {s['torch_notebook_model_steps_per_s']:.0f}, "
          f"torch (all in one model) {s['torch_batched_model_steps_per_s']:.0f}, naive JAX "
          f"{s['naive_jax_model_steps_per_s']:.0f}: ratio {s['ratio']:.1f}x")
  print(f"wrote {cfg.out}")


if __name__ == "__main__":
  app.run(main)
