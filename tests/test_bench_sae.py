"""Smoke test of experiments/bench_sae.py: --quick reports both sides for both rules, and the
`make bench` table's rows from its report."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from interp.bench import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "experiments", "bench_sae.py")


def _has(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


@pytest.mark.skipif(not _has("sae_lens") or not _has("torch"),
                    reason="sae_lens (and torch) needed for the reference side: "
                           "pip install --no-deps -r requirements-saelens.txt")
def test_tiny_run_reports_both_sides(tmp_path):
  out = tmp_path / "runs" / "bench_sae.json"  # the binary creates the missing folder
  proc = subprocess.run(
      [sys.executable, BINARY, "--quick", f"--out={out}"],  # d_in 32, d_sae 256, batch 64, k 8
      cwd=ROOT, timeout=240, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(out.read_text())

  assert report["config"]["flops_per_step"] == 12 * 64 * 32 * 256
  assert set(report["archs"]) == {"relu", "topk"}
  for arch, r in report["archs"].items():
    for side in ("ours", "saelens"):
      s = r[side]
      assert s["activations_per_s"] > 0, (arch, side)
      assert len(s["step_seconds"]) == 2, (arch, side)
      assert s["peak_rss_steps_mb"] > 0 and s["rss_baseline_mb"] > 0, (arch, side)
    assert r["ours"]["fraction_of_matmul_limit"] > 0
    assert r["ours"]["fraction_of_matmul_limit_cpu_time"] > 0
    assert r["speedup_ours_over_saelens"] > 0 and len(r["paired"]["ratio_per_pair"]) == 2
    assert r["paired"]["ours_activations_per_s"] > 0
    assert r["paired"]["saelens_activations_per_s"] > 0
    assert set(r["goal_met"]) >= {"speedup_over_saelens"}
  assert report["matmul"]["jax_gflop_per_s_median"] > 0
  assert len(report["machine"]["loadavg_start"]) == 3

  rows = {r.comparison.split(":")[0]: r for r in table.sae_rows(report)}  # the table's keys
  for arch in ("relu", "topk"):
    assert rows[arch].ratio == report["archs"][arch]["speedup_ours_over_saelens"]
    assert rows[arch].ours > 0 and rows[arch].peer > 0 and rows[arch].status in ("met", "not met")
