"""Smoke test of the figure suite: the quick LM entry writes a report that links its figure."""

import os

from interp import figures


def test_quick_lm_entry_writes_report_with_relative_figure(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = figures.run_suite("runs/figs", only=("lm_training",), quick=True)
  text = open(path).read()
  assert "](lm_training/loss.png)" in text
  assert os.path.exists(os.path.join("runs/figs", "lm_training", "loss.png"))
  assert "final train loss" in text
  import json, math
  rows = dict((r[0], r[1]) for r in json.load(open("runs/figs/report.json"))[0]["rows"])
  assert rows["final train loss (nats/byte)"] < math.log(256) - 1.5  # 20 steps learn byte stats


def test_report_opens_with_time_table_slowest_first(tmp_path):
  from interp.viz import report
  sections = [report.Section(title="fast", seconds=10.0),
              report.Section(title="slow", seconds=30.0, error="boom")]
  lines = open(report.write_report(str(tmp_path), sections)).read().splitlines()
  start = lines.index("| entry | seconds | share |")
  assert lines[start + 2] == "| slow (failed) | 30.0 | 75% |"
  assert lines[start + 3] == "| fast | 10.0 | 25% |"
  assert lines[start + 4] == "| **total** | **40.0** | |"
  assert start < lines.index("## fast")
