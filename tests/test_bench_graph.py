"""Smoke test of experiments/bench_graph.py: --quick (one short prompt) on a tiny trained LM
(`toy:RUN`), and the `make bench` table's rows from its report."""

import json
import os
import subprocess
import sys

from interp.bench import table
from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "experiments", "bench_graph.py")


def test_one_length_on_a_tiny_lm(tiny_lm_run, tmp_path):
  run = tiny_lm_run
  out = tmp_path / "runs" / "bench_graph.json"  # the binary creates the missing folder
  # --quick: --lengths=8 --d_latent=32 --k=2 --max_feature_nodes=8 --chunk=4.
  proc = subprocess.run([sys.executable, BINARY, f"--model=toy:{run}", "--quick", f"--out={out}"],
                        cwd=ROOT, timeout=240, capture_output=True, text=True,
                        env=subproc.environment())
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(out.read_text())

  [row] = report["rows"]
  assert "error" not in row, row
  assert row["tokens"] == 8
  assert row["first_build_s"] > 0 and row["timings"]["total_s"] > 0
  assert 0 < row["active_features"] <= 8 * 2  # k per layer and token, one layer
  assert row["feature_rows"] <= 8 and row["logit_rows"] > 0
  assert row["peak_rss_gb"] >= row["rss_after_load_gb"] > 0
  assert report["model"] == f"toy:{run}" and report["k"] == 2
  assert len(report["machine"]["loadavg"]) == 3

  [row] = table.graph_rows(report)  # the table reads this report's keys
  assert (row.ours, row.status) == (report["rows"][0]["timings"]["total_s"], "n/a")
