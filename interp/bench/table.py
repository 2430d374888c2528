"""Every benchmark beside its peer in one table: `make bench` (`experiments/bench_all.py`).

Vocabulary:
  benchmark   one binary in experiments/ (`BENCHMARKS`: forward, patching, sae, toy, graph,
              discovery) that writes a JSON report with `--out=`; each runs in its own process,
              one after another.
  row         one comparison from a report: our number, the peer's, `ratio` (ours over the
              peer's, so > 1 is better for speed and < 1 for memory), the goal and its status.
  status      `met`, `not met`, `n/a` (no goal at that size, or no number to compare),
              `not present` (the binary does not exist in this checkout), `not run` (left out by
              --only) or `failed` (it exited non-zero or wrote no report: the row says why, and
              an older report is not read).
  goal        the project's target for that comparison (`GOALS`); where a benchmark's own JSON
              states a different target, the row's note quotes it.

Imports neither JAX nor torch: the benchmarks run in child processes, and the table is built from
their JSON alone (so it can be tested on saved reports).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence

from interp.bench import harness, measure

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Benchmark name -> its binary, relative to the project root, in the order they run.
BENCHMARKS = {
    "forward": "experiments/bench_forward.py",
    "patching": "experiments/bench_patching.py",
    "sae": "experiments/bench_sae.py",
    "toy": "experiments/bench_toy.py",
    "graph": "experiments/bench_graph.py",
    "discovery": "experiments/bench_circuit_discovery.py",
}

# The project's goals: (operator, target). Speed ratios are ours over the peer's (higher is
# better); memory ratios ours over the peer's (lower is better); graph goals are seconds / fits.
GOALS = {
    "forward/attn_only/speed": (">=", 2.0),
    "forward/gpt2_small/speed": (">=", 1.5),
    "forward/memory": ("<=", 0.7),
    "patching/speed": (">=", 10.0),
    "discovery/speed": (">=", 5.0),
    "sae/topk/speed": (">=", 6.0),
    "sae/relu/speed": (">=", 3.0),
    "sae/relu_sparse/speed": (">=", 3.0),
    "toy/speed": (">=", 10.0),
    "graph/2048/seconds": ("<", 60.0),
    "graph/8192/fits": ("==", True),
}

MET, NOT_MET, NA = "met", "not met", "n/a"
NOT_PRESENT, NOT_RUN, FAILED = "not present", "not run", "failed"
_OPS: dict[str, Callable[[object, object], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
    "==": lambda a, b: a == b}


@dataclasses.dataclass(frozen=True)
class Row:
  """One comparison (see the module docstring); `ours`/`peer` are in `unit`, None when absent."""
  bench: str
  comparison: str
  unit: str = ""
  ours: float | None = None
  peer: float | None = None
  ratio: float | None = None
  goal: str = ""
  status: str = NA
  note: str = ""


def _goal(key: str, value) -> tuple[str, str]:
  """(goal text, status) of `value` against GOALS[key]; n/a when there is no value."""
  op, target = GOALS[key]
  text = f"{op} {target}"
  if value is None:
    return text, NA
  return text, MET if _OPS[op](value, target) else NOT_MET


def _own_goal_note(theirs, ours_target) -> str:
  return "" if theirs in (None, ours_target) else f"the benchmark's own goal: {theirs}"


# ----- Rows from each benchmark's report.

def forward_rows(report: Mapping) -> list[Row]:
  """Paired tokens/s and forward peak-memory deltas per model, interp over TransformerLens."""
  rows = []
  for name, m in report.get("models", {}).items():
    key = f"forward/{name}/speed"
    paired = m.get("paired", {})
    ratio = m.get("speed_ratio_interp_over_tl")
    goal, status = _goal(key, ratio) if key in GOALS else ("", NA)
    rows.append(Row("forward", f"{name}: forward with cache vs TransformerLens", "tokens/s",
                    paired.get("interp_tokens_per_s"), paired.get("tl_tokens_per_s"), ratio,
                    goal, status, _own_goal_note(m.get("speed_goal"), GOALS.get(key, ("", ""))[1])))
    mib = 2 ** 20
    mem = m.get("peak_rss_forward_delta_ratio_interp_over_tl")
    goal, status = _goal("forward/memory", mem)
    i, t = m.get("interp", {}).get("peak_rss_forward_delta"), m.get("tl", {}).get(
        "peak_rss_forward_delta")
    rows.append(Row("forward", f"{name}: forward peak memory delta vs TransformerLens", "MiB",
                    None if i is None else i / mib, None if t is None else t / mib, mem, goal,
                    status, _own_goal_note(m.get("memory_goal"), GOALS["forward/memory"][1])))
  return rows


def _first_ratio(entry: Mapping) -> float | None:
  """The speed ratio of one patching entry: the first key naming a speedup or a ratio over TL."""
  for k, v in entry.items():
    if isinstance(v, (int, float)) and ("speedup" in k or ("ratio" in k and "over" in k)):
      return float(v)
  return None


def patching_rows(report: Mapping) -> list[Row]:
  """One row per site kind: interp's patching sweep against TransformerLens's, speed ratio.

  Reads `sites` (or `site_kinds`): {kind: {..., a `speedup...` or `...ratio..over..` number,
  optional `interp_seconds` / `tl_seconds`}}.
  """
  sites = report.get("sites") or report.get("site_kinds") or {}
  rows = []
  for kind, entry in sites.items():
    ratio = _first_ratio(entry)
    goal, status = _goal("patching/speed", ratio)
    rows.append(Row("patching", f"{kind}: patching sweep vs TransformerLens", "s",
                    entry.get("interp_seconds"), entry.get("tl_seconds"), ratio, goal, status,
                    "" if ratio is not None else f"no speed ratio among {sorted(entry)}"))
  if not rows:
    rows.append(Row("patching", "patching sweeps vs TransformerLens", status=FAILED,
                    goal=_goal("patching/speed", None)[0],
                    note=f"report has no `sites`; keys: {sorted(report)}"))
  return rows


def sae_rows(report: Mapping) -> list[Row]:
  """Paired activations/s per rule (relu = ReLU+L1, topk, relu_sparse = ReLU+L1 at L0 in the
  tens), ours over SAELens."""
  rows = []
  for arch, r in report.get("archs", {}).items():
    key = f"sae/{arch}/speed"
    ratio = r.get("speedup_ours_over_saelens")
    goal, status = _goal(key, ratio) if key in GOALS else ("", NA)
    theirs = r.get("goal", {}).get("speedup_over_saelens")
    paired = r.get("paired", {})
    rows.append(Row("sae", f"{arch}: training step vs SAELens", "activations/s",
                    paired.get("ours_activations_per_s"), paired.get("saelens_activations_per_s"),
                    ratio, goal, status, _own_goal_note(theirs, GOALS.get(key, ("", ""))[1])))
  return rows


def toy_rows(report: Mapping) -> list[Row]:
  """Model-steps/s per instance count, interp over the paper notebook's PyTorch loop."""
  rows = []
  for n, s in report.get("summary", {}).items():
    goal, status = _goal("toy/speed", s.get("ratio"))
    rows.append(Row("toy", f"{n} instances: superposition training vs the PyTorch loop",
                    "model-steps/s", s.get("interp_model_steps_per_s"),
                    s.get("torch_notebook_model_steps_per_s"), s.get("ratio"), goal, status))
  return rows


def graph_rows(report: Mapping) -> list[Row]:
  """Seconds to build one attribution graph per prompt length (no peer: goals are absolute).

  The goals are set at 2,048 tokens (seconds) and 8,192 (fits); other lengths are n/a.
  """
  rows = []
  for r in report.get("rows", []) + report.get("probe", []):
    tokens = r.get("tokens")
    seconds = None if "error" in r else r.get("timings", {}).get("total_s")
    note = r.get("error", "")
    if "peak_rss_gb" in r:
      note = (note + "; " if note else "") + f"peak RSS {r['peak_rss_gb']:.2f} GB"
    if tokens == 2048:
      goal, status = _goal("graph/2048/seconds", seconds)
    elif tokens == 8192:
      goal, status = _goal("graph/8192/fits", "error" not in r)
    else:
      goal, status = "goals at 2,048 / 8,192 tokens", NA
    rows.append(Row("graph", f"{tokens} tokens: attribution graph build", "s", seconds, None,
                    None, goal, status, note))
  return rows


def discovery_rows(report: Mapping) -> list[Row]:
  """One row per model: interp's EAP-IG edge scoring against the TransformerLens-hooks reference.

  Reads `sites`: {"<model>/eap_ig": {interp_seconds, tl_seconds, speedup_interp_over_tl,
  max_rel_diff}}; a model whose scores disagree (max_rel_diff over 1e-3) fails its row.
  """
  rows = []
  for name, entry in (report.get("sites") or {}).items():
    ratio = _first_ratio(entry)
    goal, status = _goal("discovery/speed", ratio)
    rel = entry.get("max_rel_diff")
    note = "" if ratio is not None else f"no speed ratio among {sorted(entry)}"
    if rel is not None and not rel <= 1e-3:
      status, note = FAILED, f"scores disagree: max relative diff {rel:.1e}"
    rows.append(Row("discovery", f"{name}: EAP-IG edge scores vs TransformerLens hooks", "s",
                    entry.get("interp_seconds"), entry.get("tl_seconds"), ratio, goal, status,
                    note))
  if not rows:
    rows.append(Row("discovery", "EAP-IG edge scores vs TransformerLens hooks", status=FAILED,
                    goal=_goal("discovery/speed", None)[0],
                    note=f"report has no `sites`; keys: {sorted(report)}"))
  return rows


READERS: dict[str, Callable[[Mapping], list[Row]]] = {
    "forward": forward_rows, "patching": patching_rows, "sae": sae_rows, "toy": toy_rows,
    "graph": graph_rows, "discovery": discovery_rows}


# ----- The table.

def build(outcomes: Mapping[str, Mapping]) -> list[Row]:
  """Every benchmark's rows, in `BENCHMARKS` order.

  Args:
    outcomes: benchmark name -> {"report": the JSON} or {"missing": why} (binary absent) or
      {"failed": why}. A benchmark not named gets a `not run` row.

  Returns:
    The rows.
  """
  rows = []
  for name in BENCHMARKS:
    o = outcomes.get(name)
    if o is None:
      rows.append(Row(name, "(all)", status=NOT_RUN, note="left out by --only"))
    elif "report" in o:
      rows.extend(READERS[name](o["report"]))
    elif "missing" in o:
      rows.append(Row(name, "(all)", status=NOT_PRESENT, note=o["missing"]))
    else:
      rows.append(Row(name, "(all)", status=FAILED, note=o.get("failed", "")))
  return rows


def _fmt(x) -> str:
  if x is None:
    return "—"
  if isinstance(x, float):
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
  return str(x)


def markdown(rows: Sequence[Row], loadavg_start, loadavg_end, quick: bool,
             machine: Mapping | None = None) -> str:
  """The table as Markdown, with how to read it, the machine (`measure.machine`) and the load
  averages."""
  fmt_load = measure.describe_load
  lines = [
      "# Benchmarks beside their peers" + (" (--quick: smoke sizes, not real numbers)" if quick
                                           else ""),
      "",
      "`ratio` is ours over the peer's: above 1 means faster for speed rows, below 1 means less "
      "memory for memory rows. `goal` is the target the ratio (or, for graphs, the seconds) must "
      "meet. Load average (1 / 5 / 15 min) at start "
      f"{fmt_load(loadavg_start)}, at end {fmt_load(loadavg_end)}: numbers taken on a busy "
      f"machine are noisy." + (f" Machine: {measure.describe(machine)} (ratios move between "
                               "machines)." if machine else ""), "",
      "| bench | comparison | unit | ours | peer | ratio | goal | status | note |",
      "| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
  for r in rows:
    cells = [r.bench, r.comparison, r.unit, _fmt(r.ours), _fmt(r.peer), _fmt(r.ratio), r.goal,
             f"**{r.status}**" if r.status == NOT_MET else r.status, r.note.replace("|", "/")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write(out_dir: str, rows: Sequence[Row], loadavg_start, loadavg_end, quick: bool,
          machine: Mapping | None = None) -> None:
  """Writes `out_dir`/table.md and table.json (each atomically)."""
  harness.write_report(os.path.join(out_dir, "table.json"), {
      "quick": quick, "loadavg_start": list(loadavg_start), "loadavg_end": list(loadavg_end),
      "machine": dict(machine or {}), "goals": {k: list(v) for k, v in GOALS.items()},
      "rows": [dataclasses.asdict(r) for r in rows]})
  path = os.path.join(out_dir, "table.md")
  with open(path + ".tmp", "w") as f:
    f.write(markdown(rows, loadavg_start, loadavg_end, quick, machine))
  os.replace(path + ".tmp", path)


# ----- Running the benchmarks.

def run_one(name: str, out_dir: str, quick: bool, timeout_s: float) -> dict:
  """Runs one benchmark binary in its own process; its outcome for `build`."""
  binary = os.path.join(_ROOT, BENCHMARKS[name])
  if not os.path.exists(binary):
    return {"missing": f"{BENCHMARKS[name]} is not in this checkout"}
  out = os.path.join(out_dir, f"{name}.json")
  cmd = [sys.executable, binary, f"--out={out}"] + (["--quick"] if quick else [])
  # Benchmarks see the machine as it is, not the test suite's simulated devices.
  env = harness.worker_env(strip_device_count=True)
  start = time.time()
  print(f"bench {name}: {' '.join(cmd[1:])}", flush=True)
  try:
    proc = subprocess.run(cmd, cwd=_ROOT, env=env, timeout=timeout_s, capture_output=True,
                          text=True)
  except subprocess.TimeoutExpired:
    return {"failed": f"timed out after {timeout_s:.0f} s"}
  fresh = os.path.exists(out) and os.path.getmtime(out) >= start
  if proc.returncode or not fresh:
    tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    return {"failed": f"exit {proc.returncode}" + ("" if fresh else ", no new report") +
                      f": {tail}"}
  with open(out) as f:
    return {"report": json.load(f)}


def run_all(out_dir: str, names: Sequence[str], quick: bool, timeout_s: float) -> list[Row]:
  """Runs `names` (from `BENCHMARKS`) one after another and writes the table.

  Args:
    out_dir: where each benchmark's JSON and table.md / table.json go.
    names: the benchmarks to run; the others get `not run` rows.
    quick: pass --quick to each (smoke sizes).
    timeout_s: per benchmark.

  Returns:
    The rows written.
  """
  load_start = os.getloadavg()
  machine = {**measure.machine(), "matmul_gflops": measure.matmul_gflops()}
  outcomes = {n: run_one(n, out_dir, quick, timeout_s) for n in names}
  rows = build(outcomes)
  write(out_dir, rows, load_start, os.getloadavg(), quick, machine)
  return rows
