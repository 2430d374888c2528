"""Smoke test of experiments/bench_toy.py: --quick times interp, the naive JAX port and torch."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from interp.bench import table
from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "experiments", "bench_toy.py")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch needed for the reference loop (requirements-dev.txt)")
def test_quick_run_reports_every_side(tmp_path):
  out = tmp_path / "runs" / "bench_toy.json"  # the binary creates the missing folder
  proc = subprocess.run([sys.executable, BINARY, "--quick", "--instances=10",
                         "--torch_threads=1", f"--out={out}"],
                        cwd=ROOT, timeout=240, capture_output=True, text=True,
                        env=subproc.environment())
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(out.read_text())

  s = report["summary"]["10"]
  for key in ("interp_model_steps_per_s", "torch_notebook_model_steps_per_s",
              "torch_batched_model_steps_per_s", "naive_jax_model_steps_per_s", "ratio"):
    assert s[key] > 0, key
  assert report["torch"]["runs"]["10"]["notebook"]["tried"][0]["threads"] == 1
  assert report["interp"]["runs"]["10"]["default"]["per_s"] == s["interp_model_steps_per_s"]
  assert report["config"]["quick"] and report["config"]["instances"] == [10]
  assert "wrote" in proc.stdout
  [row] = table.toy_rows(report)  # the `make bench` table reads these keys
  assert (row.ours, row.peer, row.ratio) == (s["interp_model_steps_per_s"],
                                             s["torch_notebook_model_steps_per_s"], s["ratio"])
