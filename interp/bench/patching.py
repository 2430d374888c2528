"""Activation patching sweeps: interp (one compiled, vmapped sweep per site kind) against
TransformerLens's `transformer_lens.patching` (one hooked forward per site, iterated in Python).

Run by `experiments/bench_patching.py`; the sides are in `interp.bench.patching_sides`.

Both sides load the same random weights (written once by the driver, TL state-dict names) and
patch the same prompts: base = corrupted, source = clean (denoising, as TL's functions do), the
metric is the mean logit difference of (correct, wrong) answers at the last position. Before any
ratio is quoted, the two sides' [l, n_index] results are compared (`max_abs_diff`).

Vocabulary:
  sweep seconds     wall time of one whole sweep over every site of a kind (interp: the compiled
                    call; compile time is reported apart as compile_seconds).
  per-site seconds  sweep seconds / number of sites.
  one forward       a single unpatched forward + metric on the base prompts: TL's per-site cost
                    over it is TL's hook and Python overhead; interp's sweep over (sites x it)
                    shows what the vmapped batch saves over running the sites one by one.
Each side runs in its own worker process (sides alternate over rounds); --quick runs both in
one worker (a smoke test).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import statistics
import tempfile

import numpy as np

from interp.bench import forward, harness, measure, patching_sides

GOAL = 10.0  # TL sweep seconds over interp's, at least, for every site kind
PARITY_TOLERANCE = 1e-3  # max |interp - TL| of the patched metric (float32 on both sides)

# Prompt batch and length are the patching workload (ctx = prompt length, batch = prompts).
MODELS = {
    "attn_only": forward.ModelShape("attn_only", 512, 2, 8, 0, 4096, 16, 8, attn_only=True),
    "gpt2_small": forward.ModelShape("gpt2_small", 768, 12, 12, 3072, 50257, 16, 4,
                                     attn_only=False),
}
QUICK = {
    "attn_only": forward.ModelShape("attn_only", 32, 2, 4, 0, 64, 6, 2, attn_only=True),
    "gpt2_small": forward.ModelShape("gpt2_small", 32, 2, 4, 64, 64, 6, 2, attn_only=False),
}


@dataclasses.dataclass(frozen=True)
class PatchingBenchConfig:
  """One benchmark run; `weights` maps a model name to its `.npz` (set by `run`)."""
  out: str
  models: tuple[forward.ModelShape, ...]
  reps: int
  tl_reps: int
  rounds: int
  threads: int
  chunk: int
  seed: int
  quick: bool
  weights: tuple[str, ...] = ()


CONFIG = PatchingBenchConfig


class Side(str, enum.Enum):
  INTERP = "interp"
  TL = "tl"


def model_shapes(names, quick: bool) -> tuple[forward.ModelShape, ...]:
  """The named shapes; ValueError lists the valid names."""
  table = QUICK if quick else MODELS
  unknown = [m for m in names if m not in table]
  if unknown:
    raise ValueError(f"unknown {unknown}; valid: {sorted(table)}")
  return tuple(table[m] for m in names)


def run_side(side: Side, spec: forward.ModelShape, cfg, weights_path: str,
             sides=patching_sides) -> dict:
  """One side on one model: the shared weights and prompts, then `sides.run_interp/run_tl`."""
  with np.load(weights_path) as f:
    weights = {k: f[k] for k in f.files}
  data = patching_sides.prompts(spec, cfg.seed)
  run = sides.run_interp if side == Side.INTERP else sides.run_tl
  return run(spec, cfg, weights, data)


def worker(side: str, cfg, sides=patching_sides) -> dict:
  """One worker's work: {model name: result} (`harness.ALL`: {model: {side: result}}).

  `cfg` has `models`, `weights` and `seed`; `sides` is the module with the two runners (this
  benchmark's, or another that patches the same weights, such as circuit discovery's)."""
  out = {}
  for spec, path in zip(cfg.models, cfg.weights):
    if side == harness.ALL:
      out[spec.name] = {s.value: run_side(s, spec, cfg, path, sides) for s in Side}
    else:
      out[spec.name] = run_side(Side(side), spec, cfg, path, sides)
  return out


def compare(spec, interp: list[dict], tl: list[dict]) -> dict:
  """Per kind: parity, pooled sweep seconds, ratio, and the time breakdown."""
  one_i = statistics.median(t for r in interp for t in r["one_forward_seconds"])
  one_t = statistics.median(t for r in tl for t in r["one_forward_seconds"])
  hooked_t = statistics.median(t for r in tl for t in r["one_hooked_forward_seconds"])
  kinds = {}
  for kind in patching_sides.kinds_for(spec):
    vi, vt = np.asarray(interp[0][kind]["values"]), np.asarray(tl[0][kind]["values"])
    diff = float(np.abs(vi - vt).max())
    si = statistics.median(t for r in interp for t in r[kind]["seconds"])
    st = statistics.median(t for r in tl for t in r[kind]["seconds"])
    n = interp[0][kind]["n_sites"]
    kinds[kind] = {
        "tl_function": tl[0][kind]["function"], "n_sites": n, "shape": list(vi.shape),
        "max_abs_diff": diff, "max_abs_value": float(np.abs(vt).max()),
        # The spread over sites: parity means something only if patching moves the metric.
        "tl_value_range": float(vt.max() - vt.min()),
        "parity": diff <= PARITY_TOLERANCE,
        "interp_sweep_seconds": si, "tl_sweep_seconds": st,
        "speed_ratio_tl_over_interp": st / si, "goal": GOAL, "goal_met": st / si >= GOAL,
        "interp_compile_seconds": statistics.median(r[kind]["compile_seconds"] for r in interp),
        "breakdown": {
            "interp_per_site_seconds": si / n, "tl_per_site_seconds": st / n,
            # < 1: the vmapped sweep beats running its sites as single compiled forwards.
            "interp_sweep_over_sites_x_one_forward": si / (n * one_i),
            # TL's per-site cost over its own plain forward: hooks, Python and metric overhead.
            "tl_per_site_over_one_forward": st / n / one_t,
            "tl_hooked_forward_over_plain": hooked_t / one_t,
        },
        "interp_values": vi.tolist(), "tl_values": vt.tolist()}
  return {"kinds": kinds, "interp_one_forward_seconds": one_i, "tl_one_forward_seconds": one_t,
          "tl_one_hooked_forward_seconds": hooked_t,
          "all_parity": all(k["parity"] for k in kinds.values()),
          "all_goals_met": all(k["goal_met"] for k in kinds.values())}


def run(cfg: PatchingBenchConfig) -> dict:
  """Writes the shared weights, runs the workers, compares; returns the JSON report."""
  report = {"config": None, "goal": GOAL, "parity_tolerance": PARITY_TOLERANCE,
            "machine": {**measure.machine(), "loadavg_start": os.getloadavg()},
            "models": {}}
  with tempfile.TemporaryDirectory() as tmp:
    paths = []
    for spec in cfg.models:
      paths.append(os.path.join(tmp, f"{spec.name}.npz"))
      np.savez(paths[-1], **patching_sides.random_weights(spec, cfg.seed))
    cfg = dataclasses.replace(cfg, weights=tuple(paths))
    runs = {m.name: {Side.INTERP: [], Side.TL: []} for m in cfg.models}
    env = harness.worker_env(strip_device_count=True, TQDM_DISABLE="1")
    if cfg.quick:
      for name, by_side in harness.spawn(__name__, harness.ALL, cfg, env).items():
        for side in Side:
          runs[name][side].append(by_side[side.value])
    for i, spec in enumerate(() if cfg.quick else cfg.models):
      one = dataclasses.replace(cfg, models=(spec,), weights=(paths[i],))
      for _ in range(cfg.rounds):
        for side in (Side.TL, Side.INTERP):
          runs[spec.name][side].append(harness.spawn(__name__, side, one, env)[spec.name])
  report["config"] = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "weights"}
  for spec in cfg.models:
    r = runs[spec.name]
    report["models"][spec.name] = {"spec": dataclasses.asdict(spec),
                                   **compare(spec, r[Side.INTERP], r[Side.TL]),
                                   "versions": {"interp": r[Side.INTERP][0]["versions"],
                                                "tl": r[Side.TL][0]["versions"]}}
  # One flat row per (model, kind), in the shape `make bench`'s table reads.
  report["sites"] = {f"{name}/{kind}": {"interp_seconds": k["interp_sweep_seconds"],
                                        "tl_seconds": k["tl_sweep_seconds"],
                                        "speedup_interp_over_tl": k["speed_ratio_tl_over_interp"],
                                        "max_abs_diff": k["max_abs_diff"]}
                     for name, m in report["models"].items() for kind, k in m["kinds"].items()}
  report["machine"]["loadavg_end"] = os.getloadavg()
  return report


def summary(report: dict) -> str:
  """A line per (model, kind): parity, sweep seconds on each side, the ratio and the goal."""
  rows = [["model", "kind", "sites", "max|diff|", "interp s", "TL s", "TL/interp", "goal"]]
  for name, m in report["models"].items():
    for kind, k in m["kinds"].items():
      rows.append([name, kind, k["n_sites"], f"{k['max_abs_diff']:.1e}",
                   f"{k['interp_sweep_seconds']:.3f}", f"{k['tl_sweep_seconds']:.2f}",
                   f"{k['speed_ratio_tl_over_interp']:.1f}", "met" if k["goal_met"] else "not met"])
  return harness.table(rows, left=2)


if __name__ == "__main__":
  harness.worker_main("interp.bench.patching")
