"""The device check's table, its goals and the device peak table (imports neither JAX nor torch).

A goal's status is `met`, `not met` or `n/a` (with why: a side skipped or failed, a size not
measured in --quick, a CPU that keeps no device memory counters).
"""

from __future__ import annotations

import statistics

from interp.bench import harness

# Dense (no 2:4 sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets: H100 SXM
# and H200 (the same GH100 compute, 989.4), A100 (312). Matched as substrings of the device
# kind JAX or torch reports ("NVIDIA H200", "NVIDIA H100 80GB HBM3"); PCIe H100s run lower
# clocks (756), so they are listed before the SXM fallback.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H200", 989.4), ("H100", 989.4), ("A100", 312.0))

GOALS = {
    "sae_relu_fraction_of_bf16_peak": (">=", 0.5, "SAE dense step (ReLU+L1) >= 50% of the "
                                       "device's bf16 peak"),
    "sae_topk_speedup_over_saelens": (">=", 3.0, "TopK step >= 3x SAELens's TopK step"),
    "forward_speedup_over_tl": (">=", 2.0, "forward with cache >= 2x TransformerLens tokens/s"),
    "forward_memory_over_tl": ("<=", 1.0, "... at <= TransformerLens's peak device memory"),
    "graph_2048_seconds": ("<", 60.0, "attribution graph for 2,048 tokens < 60 s"),
    "graph_8192_fits": ("==", True, "attribution graph for 8,192 tokens fits one device"),
}

DEFINITIONS = {
    "fraction_of_bf16_peak": "achieved FLOP/s over the datasheet's dense bf16 peak "
                             "(PEAK_BF16_TFLOPS by device kind; n/a when unknown, e.g. CPU)",
    "sae_flops_per_step": "12 * batch * d_in * d_sae (six dense matmuls, forward + backward)",
    "speedup": "peer's median step (or call) seconds over ours, same device, sizes, precision",
    "device_peak_gib": "ours: memory_stats()['peak_bytes_in_use'] of the item's process; "
                       "torch: max_memory_allocated() after reset; None on CPU",
    "mfu": "6 * params * tokens / step seconds / bf16 peak (attention's quadratic FLOPs "
           "excluded)",
    "float32": "each library's default float32 matmuls: JAX lets XLA use TF32 on GPUs, torch "
               "does not (torch.backends.cuda.matmul.allow_tf32 is False), so float32 rows are "
               "not the same arithmetic; bfloat16 rows compare like with like",
    "parity": "max |device - cpu| over every output leaf, and over max |cpu| (rel_diff); "
              "float32 at matmul precision 'highest' within 1e-4, bfloat16 within 2e-2",
}

OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "OutOfMemory")

HEADER = ["section", "item", "side", "measurement", "peak mem"]


def peak_bf16_tflops(kind: str) -> float | None:
  """The datasheet bf16 peak of a device kind, or None when not in the table."""
  for name, tflops in PEAK_BF16_TFLOPS:
    if name.lower() in kind.lower():
      return tflops
  return None


def sae_rates(cfg, times: list[float], peak: float | None) -> dict:
  """Activations/s and the fraction of the bf16 peak of SAE step times (either side)."""
  sec = statistics.median(times)
  tflops = cfg.flops_per_step / sec / 1e12
  return {"step_seconds": times, "step_seconds_median": sec, "activations_per_s": cfg.batch / sec,
          "flops_per_step": cfg.flops_per_step, "achieved_tflops": tflops,
          "peak_bf16_tflops": peak, "fraction_of_bf16_peak": None if peak is None else
          tflops / peak}


# ----- Table rows.

def _mem(r: dict) -> str:
  gib = r.get("device_peak_gib")
  if gib is not None:
    return f"{gib:.2f} GiB"
  rss = r.get("host_peak_rss_gib")
  return "n/a" if rss is None else f"RSS {rss:.2f} GiB"


def _pct(x) -> str:
  return "n/a" if x is None else f"{x:.1%}"


def describe(section: str, r: dict) -> str:
  """One item's measurement as a table cell."""
  if "skipped" in r:
    return f"skipped: {r['skipped']}"
  if "error" in r:
    return f"FAILED: {r['error']}"
  if section == "env":
    v = r["versions"]
    return (f"jax {v['jax']} {r['backend']} {r['device_kind']} x{r['device_count']}; "
            f"matmul {r['matmul_n']}: bf16 {r['bf16_matmul_tflops']:.3g} TFLOP/s "
            f"({_pct(r['bf16_matmul_fraction_of_peak'])} of datasheet "
            f"{r['peak_bf16_tflops_datasheet'] or 'n/a'}), f32 {r['f32_matmul_tflops']:.3g}")
  if section == "parity":
    ok = "ok" if r["within_tolerance"] else "OUT OF TOLERANCE"
    extra = ""
    if "default_precision" in r:
      extra = f"; default precision rel {r['default_precision']['rel_diff']:.1e}"
    return (f"max|diff| {r['max_abs_diff']:.1e}, rel {r['rel_diff']:.1e} "
            f"(tol {r['tolerance_rel']:.0e}) {ok}{extra}")
  if section == "sae":
    return (f"{r['activations_per_s']:.4g} act/s, {r['achieved_tflops']:.3g} TFLOP/s, "
            f"{_pct(r['fraction_of_bf16_peak'])} of bf16 peak")
  if section == "forward":
    return (f"{r['tokens_per_s']:.4g} tok/s, {r['hooks']} hooks, cache "
            f"{r['cache_bytes'] / 2**20:.4g} MiB")
  if section == "graph":
    return (f"{r['seconds']:.3g} s, {r['nodes']} nodes ({r['active_features']} active, "
            f"{r['feature_rows']} feature rows)")
  if section == "lm":
    return (f"{r['params'] / 1e9:.3g} B params, {r['tokens_per_s']:.4g} tok/s, "
            f"{r['model_tflops']:.3g} TFLOP/s, MFU {_pct(r['mfu'])}")
  return str(r)


def rows(section: str, entry: dict) -> list[list[str]]:
  """The table rows of one section's entry in the report."""
  if entry["status"] == "skipped":
    return [[section, "-", "-", f"skipped: {entry['reason']}", ""]]
  if entry["status"] == "failed":
    return [[section, "-", "-", f"FAILED: {entry['error']}", ""]]
  out = []
  for side, items in entry["results"].items():
    for item, r in items.items():
      mem = "" if "error" in r or "skipped" in r else _mem(r)
      out.append([section, item, side, describe(section, r), mem])
  return out


WIDTHS = (8, 22, 16, 0, 0)  # fixed, so rows printed as each section finishes line up


def lines(all_rows: list[list[str]]) -> str:
  """Rows as fixed-width text lines (the measurement column last but one, memory last)."""
  fmt = lambda r: " ".join(c.ljust(w) for c, w in zip(r[:3], WIDTHS)) + f" {r[4]:>14}  {r[3]}"
  return "\n".join(fmt(r).rstrip() for r in all_rows)


# ----- Goals.

def _item(report: dict, section: str, side: str, item: str) -> dict | None:
  entry = report["sections"].get(section, {})
  r = entry.get("results", {}).get(side, {}).get(item)
  return r if r and "error" not in r and "skipped" not in r else None


def _first(report, section, side, items):
  """The first of `items` (preferring bf16) that `side` measured: (item, result)."""
  for item in items:
    r = _item(report, section, side, item)
    if r is not None:
      return item, r
  return None, None


def _status(name: str, value) -> str:
  op, target, _ = GOALS[name]
  if value is None:
    return "n/a"
  met = {">=": value >= target, "<=": value <= target, "<": value < target,
         "==": value == target}[op]
  return "met" if met else "not met"


def goals(report: dict) -> dict:
  """Every goal beside its measurement, from the sections run so far."""
  out = {}

  def put(name, value, note):
    out[name] = {"goal": GOALS[name][2], "target": f"{GOALS[name][0]} {GOALS[name][1]}",
                 "measured": value, "status": _status(name, value), "note": note}

  item, r = _first(report, "sae", "ours", ("relu/bfloat16", "relu/float32"))
  put("sae_relu_fraction_of_bf16_peak", r and r["fraction_of_bf16_peak"],
      item or "ours relu not measured")
  speed, note = None, "SAELens or our topk not measured"
  for item in ("topk/bfloat16", "topk/float32"):
    o, p = _item(report, "sae", "ours", item), _item(report, "sae", "saelens", item)
    if o and p:
      speed, note = p["step_seconds_median"] / o["step_seconds_median"], item
      break
  put("sae_topk_speedup_over_saelens", speed, note)
  speeds, mems, notes = [], [], []
  models = report["sizes"]["forward_models"]
  for model in models:
    for prec in ("bfloat16", "float32"):
      item = f"{model}/{prec}"
      o = _item(report, "forward", "ours", item)
      p = _item(report, "forward", "transformer_lens", item)
      if o and p:
        speeds.append(o["tokens_per_s"] / p["tokens_per_s"])
        if o["device_peak_gib"] is not None and p["device_peak_gib"]:
          mems.append(o["device_peak_gib"] / p["device_peak_gib"])
        notes.append(item)
        break
  put("forward_speedup_over_tl", min(speeds) if speeds else None,
      f"worst of {notes}" if notes else "TransformerLens or ours not measured")
  put("forward_memory_over_tl", max(mems) if mems else None,
      f"worst of {notes}" if mems else "no device memory counters (CPU) or a side missing")
  g = _item(report, "graph", "ours", "2048/float32")
  put("graph_2048_seconds", g and g["seconds"], "2048 tokens" if g else "2048 not measured")
  entry = report["sections"].get("graph", {}).get("results", {}).get("ours", {})
  r8 = entry.get("8192/float32")
  fits, note = None, "8192 not measured"
  if r8 is not None and "skipped" not in r8:
    error = r8.get("error", "")
    # Only running out of memory says "does not fit"; a timeout or another failure says nothing.
    if not error or any(m in error for m in OUT_OF_MEMORY):
      fits = not error
    note = error or "8192 tokens built"
  put("graph_8192_fits", fits, note)
  return out


def goal_table(goal_dict: dict) -> str:
  """Each goal beside its measurement (met / not met / n/a)."""
  out = [["goal", "target", "measured", "status", "from"]]
  for g in goal_dict.values():
    v = g["measured"]
    shown = "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
    out.append([g["goal"], g["target"], shown, g["status"], g["note"]])
  return harness.table(out, left=5)
