"""Smoke test of experiments/bench_forward.py: --quick runs both sides and writes a full report."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from interp.bench import table
from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "experiments", "bench_forward.py")


def _has(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


@pytest.mark.skipif(not _has("transformer_lens") or not _has("torch"),
                    reason="transformer_lens (and torch) needed for the comparison side")
def test_quick_run_reports_both_sides(tmp_path):
  out = tmp_path / "runs" / "bench.json"  # the binary creates the missing folder
  # tests/__init__.py fakes 8 CPU devices; the benchmark should see the machine as it is.
  env = subproc.environment(devices=0)
  proc = subprocess.run([sys.executable, BINARY, "--quick", f"--out={out}"], cwd=ROOT, env=env,
                        timeout=240, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(out.read_text())

  assert set(report["models"]) == {"attn_only", "gpt2_small"}
  assert set(report["memory_definitions"]) >= {"rss_baseline", "peak_rss_forward_delta"}
  for name, m in report["models"].items():
    assert m["same_hooks"], name
    assert m["n_hooks"] > 0
    for side in ("interp", "tl"):
      assert m[side]["tokens_per_s"] > 0, (name, side)
      assert m[side]["cache_bytes"] > 0, (name, side)
      assert m[side]["gemm_gflop_per_s_best"] > 0, (name, side)
      assert "peak_rss_forward_delta" in m[side]
    assert m["speed_ratio_interp_over_tl"] > 0
    assert m["paired"]["interp_tokens_per_s"] > 0 and m["paired"]["tl_tokens_per_s"] > 0
    assert m["peak_rss_forward_delta_ratio_interp_over_tl"] is not None
    assert m["interp"]["compile_seconds"] > 0
    assert m["interp"]["xla_memory_analysis"]["output_bytes"] >= m["interp"]["cache_bytes"]
  assert report["gemm"]["jax_over_torch"] > 0
  rows = table.forward_rows(report)  # the `make bench` table reads these keys
  assert [r.ratio for r in rows] == [m[k] for m in report["models"].values() for k in (
      "speed_ratio_interp_over_tl", "peak_rss_forward_delta_ratio_interp_over_tl")]
