"""Toy-model training throughput: interp against a plain PyTorch loop of the same training.

Run by `experiments/bench_toy.py`. The training and the reference loops are in
`interp.toy.compare` (the PyTorch loop is the paper notebook's: torch.rand twice, einsum
forward, AdamW, 10 instances per model). Sides run one after the other, each in its own worker
process, so no thread pool or allocator is shared:
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
import os
import platform

from interp.bench import harness, measure

REFERENCE = {"torch_notebook_model_steps_per_s_issue": 2700}


@dataclasses.dataclass(frozen=True)
class ToyBenchConfig:
  """One benchmark run; `quick` is a tiny timing budget and no interp variants."""
  out: str
  instances: tuple[int, ...]
  torch_group: int
  torch_threads: tuple[int, ...]
  cpu_devices: int
  seconds: float
  reps: int
  quick: bool


CONFIG = ToyBenchConfig  # what `harness.worker_main` decodes


def interp_side(cfg: ToyBenchConfig) -> dict:
  """interp's step: rates per instance count, and in full mode the variants and data table."""
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


def naive_jax_side(cfg: ToyBenchConfig) -> dict:
  """The straightforward JAX port, one device."""
  import jax
  from interp.toy import compare
  return {"devices": [str(jax.devices()[0])],
          "runs": {str(n): compare.naive_jax(n, cfg.seconds, cfg.reps) for n in cfg.instances}}


def torch_side(cfg: ToyBenchConfig) -> dict:
  """The notebook loop in groups and all instances in one model, best of the thread counts."""
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


def worker(side: str, cfg: ToyBenchConfig) -> dict:
  """One side's result, run in this process."""
  return SIDES[side](cfg)


def spawn(side: str, cfg: ToyBenchConfig) -> dict:
  """Runs one side in a fresh interpreter on CPU: interp over `cpu_devices` host devices, the
  others on one."""
  devices = cfg.cpu_devices if side == "interp" else 1
  env = harness.worker_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                           JAX_PLATFORMS="cpu")
  return harness.spawn(__name__, side, cfg, env)


def run(cfg: ToyBenchConfig) -> dict:
  """The three sides one after the other, each in its own worker; returns the JSON report."""
  from interp.toy import compare
  report = {"config": dataclasses.asdict(cfg), "reference": REFERENCE,
            "training": {"n_features": compare.N_FEATURES, "n_hidden": compare.N_HIDDEN,
                         "batch": compare.BATCH, "lr": compare.LR,
                         "optimizer": "AdamW(0.9, 0.999), no weight decay"},
            "machine": {**measure.machine(), "affinity": len(os.sched_getaffinity(0)),
                        "platform": platform.platform(), "loadavg_start": os.getloadavg()}}
  for side in ("torch", "naive_jax", "interp"):
    report[side] = spawn(side, cfg)
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


def summary(report: dict) -> str:
  """A line per instance count: every side's model-steps/s and interp over the notebook loop."""
  group = report["config"]["torch_group"]
  return "\n".join(
      f"{n} instances: interp {s['interp_model_steps_per_s']:.0f} model-steps/s, torch "
      f"(notebook, {group} at a time) {s['torch_notebook_model_steps_per_s']:.0f}, "
      f"torch (all in one model) {s['torch_batched_model_steps_per_s']:.0f}, naive JAX "
      f"{s['naive_jax_model_steps_per_s']:.0f}: ratio {s['ratio']:.1f}x"
      for n, s in report["summary"].items())


if __name__ == "__main__":
  harness.worker_main("interp.bench.toy")
