"""Edge scoring for circuit discovery: interp's EAP-IG over every edge against the same method
written with TransformerLens hooks and torch autograd (`interp.bench.discovery_sides`).

Run by `experiments/bench_circuit_discovery.py`. Both sides load the same random weights
(TL state-dict names, written once by the driver) and score the same prompts: random clean and
corrupted token pairs, metric = mean logit difference of random (correct, wrong) answers at the
last position, `steps` Gauss-Legendre points on both sides (so parity is exact up to float32).

Vocabulary:
  scoring seconds   wall time of one call scoring every edge (interp: the compiled call, compile
                    reported apart; TL: `steps` hooked forwards and backwards).
  curve seconds     interp's faithfulness curve: the metric with the top-n edges kept for each n
                    of `curve_points` counts, in one compiled call (after a first, compiling call).
  peak RSS delta    the worker's peak resident memory over its level before scoring.
  parity            max |interp - TL| over merged edges, relative to max |TL|, and the Spearman
                    rank correlation of the scores.
Each side runs in its own worker process (sides alternate over rounds); --quick runs both in
one worker (memory not isolated). Each side records the load average when it finished timing:
on an oversubscribed machine torch's threads slow far more than XLA's (GPT-2 small shape,
2 cores: TL 2.5 s at load 1-2, 33-65 s at load 5-9), so a ratio only means something beside
loads that are low and alike.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile

import numpy as np
from scipy import stats

from interp.bench import (discovery_gemma, discovery_sides, forward, harness, measure,
                          patching, patching_sides)

GOAL = 5.0  # TL scoring seconds over interp's, at least
PARITY_TOLERANCE = 1e-3  # max |interp - TL| / max |TL| (float32 on both sides)
BF16_PARITY_TOLERANCE = 0.1  # the same with both sides in bfloat16 (`parity_tolerance`)

MODELS = {"attn_only": patching.MODELS["attn_only"], "gpt2_small": patching.MODELS["gpt2_small"],
          "gemma3_270m": discovery_gemma.shape(forward.ModelShape)}
DEFAULT_MODELS = ("attn_only", "gpt2_small")  # Gemma 3 270M's row takes minutes: ask for it
QUICK = patching.QUICK  # no Gemma 3 here (building `transformers`' model is slow to import);
# tests/test_bench_discovery_gemma.py checks its weight mapping on a tiny shape instead


@dataclasses.dataclass(frozen=True)
class DiscoveryBenchConfig:
  """One benchmark run; `weights` maps a model name to its `.npz` (set by `run`)."""
  out: str
  models: tuple[forward.ModelShape, ...] = ()
  steps: int = 8
  reps: int = 3
  tl_reps: int = 3
  rounds: int = 1
  threads: int = 2
  chunk: int = 0
  precision: str = "float32"  # both sides' compute dtype (bfloat16: the Gemma 3 rows only)
  curve_points: int = 24
  seed: int = 0
  quick: bool = False
  weights: tuple[str, ...] = ()


CONFIG = DiscoveryBenchConfig


def model_shapes(names, quick: bool) -> tuple[forward.ModelShape, ...]:
  """The named shapes; ValueError lists the valid names."""
  table = QUICK if quick else MODELS
  unknown = [m for m in names if m not in table]
  if unknown:
    raise ValueError(f"unknown {unknown}; valid: {sorted(table)}")
  return tuple(table[m] for m in names)


def worker(side: str, cfg: DiscoveryBenchConfig) -> dict:
  """One worker's work: patching's worker with this benchmark's sides."""
  return patching.worker(side, cfg, discovery_sides)


def parity_tolerance(precision: str) -> float:
  """Largest relative score difference between the sides that counts as parity: float32's, or
  bfloat16's. In bfloat16 each side rounds every activation and gradient (2^-9 relative) in its
  own order through 18 layers; measured on Gemma 3 270M's shapes: interp bfloat16 against the
  float32 reference 2.2e-2, both in bfloat16 7.3e-2, Spearman >= 0.9996 either way; hence 0.1,
  with the Spearman correlation reported beside it."""
  return PARITY_TOLERANCE if precision == "float32" else BF16_PARITY_TOLERANCE


def compare(interp: list[dict], tl: list[dict]) -> dict:
  """Parity of the scores, pooled seconds on each side, the ratio, memory and curve time."""
  si, st = np.asarray(interp[0]["scores"]), np.asarray(tl[0]["scores"])
  valid = st != 0
  diff = float(np.abs(si - st).max())
  scale = float(np.abs(st).max())
  ti = statistics.median(t for r in interp for t in r["seconds"])
  tt = statistics.median(t for r in tl for t in r["seconds"])
  rel = diff / scale if scale else float("inf")
  return {
      "n_edges_interp": interp[0]["n_edges"], "n_merged_edges": int(valid.sum()),
      "max_abs_diff": diff, "max_abs_score": scale, "max_rel_diff": rel,
      "spearman": float(stats.spearmanr(si[valid], st[valid]).statistic),
      "parity": rel <= parity_tolerance(interp[0].get("precision", "float32")),
      "interp_precision": interp[0].get("precision", "float32"),
      "tl_precision": tl[0].get("precision", "float32"),
      "interp_seconds": ti, "tl_seconds": tt, "speedup_interp_over_tl": tt / ti,
      "goal": GOAL, "goal_met": tt / ti >= GOAL,
      "interp_compile_seconds": statistics.median(r["compile_seconds"] for r in interp),
      "interp_peak_rss_delta": max(r["peak_rss_delta"] for r in interp),
      "tl_peak_rss_delta": max(r["peak_rss_delta"] for r in tl),
      "interp_curve_seconds": statistics.median(t for r in interp for t in r["curve_seconds"]),
      "interp_curve_first_call_seconds": interp[0]["curve_first_call_seconds"],
      "curve_points": interp[0]["curve_points"],
      "curve_normalised": interp[0]["curve_normalised"],
      # 1/5/15-minute load averages when each side finished timing (the machine is shared).
      "interp_loadavg": [r["loadavg"] for r in interp], "tl_loadavg": [r["loadavg"] for r in tl],
      "versions": {"interp": interp[0]["versions"], "tl": tl[0]["versions"]}}


def run(cfg: DiscoveryBenchConfig) -> dict:
  """Writes the shared weights, runs the workers, compares; returns the JSON report."""
  report = {"config": None, "goal": GOAL, "parity_tolerance": PARITY_TOLERANCE,
            "machine": {**measure.machine(), "loadavg_start": os.getloadavg()},
            "models": {}}
  with tempfile.TemporaryDirectory() as tmp:
    paths = []
    for spec in cfg.models:
      paths.append(os.path.join(tmp, f"{spec.name}.npz"))
      weights = (discovery_gemma.random_weights if discovery_gemma.is_gemma(spec)
                 else patching_sides.random_weights)
      np.savez(paths[-1], **weights(spec, cfg.seed))
    cfg = dataclasses.replace(cfg, weights=tuple(paths))
    runs = {m.name: {patching.Side.INTERP: [], patching.Side.TL: []} for m in cfg.models}
    env = harness.worker_env(strip_device_count=True, TQDM_DISABLE="1")
    if cfg.quick:  # in-process: one small run of both sides
      for name, by_side in worker(harness.ALL, cfg).items():
        for side in patching.Side:
          runs[name][side].append(by_side[side.value])
    for i, spec in enumerate(() if cfg.quick else cfg.models):
      one = dataclasses.replace(cfg, models=(spec,), weights=(paths[i],))
      for _ in range(cfg.rounds):
        for side in (patching.Side.TL, patching.Side.INTERP):
          runs[spec.name][side].append(harness.spawn(__name__, side, one, env)[spec.name])
  report["config"] = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "weights"}
  for spec in cfg.models:
    r = runs[spec.name]
    report["models"][spec.name] = {"spec": dataclasses.asdict(spec),
                                   **compare(r[patching.Side.INTERP], r[patching.Side.TL])}
  # One flat row per model, in the shape `make bench`'s table reads.
  report["sites"] = {f"{name}/eap_ig": {k: m[k] for k in (
      "interp_seconds", "tl_seconds", "speedup_interp_over_tl", "max_rel_diff", "spearman",
      "interp_curve_seconds")} for name, m in report["models"].items()}
  report["all_parity"] = all(m["parity"] for m in report["models"].values())
  report["machine"]["loadavg_end"] = os.getloadavg()
  return report


def summary(report: dict) -> str:
  """A line per model: parity, scoring seconds on each side, the ratio, the curve and memory."""
  rows = [["model", "edges", "rel diff", "spearman", "interp s", "TL s", "TL/interp", "goal",
           "curve s", "RSS MiB i/TL"]]
  mib = 2 ** 20
  for name, m in report["models"].items():
    rows.append([name, m["n_edges_interp"], f"{m['max_rel_diff']:.1e}", f"{m['spearman']:.4f}",
                 f"{m['interp_seconds']:.3f}", f"{m['tl_seconds']:.2f}",
                 f"{m['speedup_interp_over_tl']:.1f}", "met" if m["goal_met"] else "not met",
                 f"{m['interp_curve_seconds']:.3f}",
                 f"{m['interp_peak_rss_delta'] / mib:.0f}/{m['tl_peak_rss_delta'] / mib:.0f}"])
  return harness.table(rows, left=1)


if __name__ == "__main__":
  harness.worker_main("interp.bench.discovery")
