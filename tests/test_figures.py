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


def test_graph_entry_uses_the_longer_transcoders_once_finished(tmp_path, monkeypatch):
  """`make dictionaries`' transcoders replace the entry's own training only when that run has
  completed and holds the entry's transcoders (not, e.g., a --quick run's narrower ones)."""
  import pytest
  from interp import jsonio
  from interp.graphs import experiment as graph_experiment
  from interp.graphs import suite_entries as graph_entries

  class Stop(Exception):
    pass

  def fake_run(config):
    raise Stop(config)
  monkeypatch.setattr(graph_experiment, "run", fake_run)
  workdir = str(tmp_path / "figs" / "graph_gemma")
  folder = graph_entries.longer_folder(workdir)
  assert folder == str(tmp_path / "figs" / "dictionaries" / "graph_gemma" / "transcoder")

  def entry_config():
    with pytest.raises(Stop) as stop:
      graph_entries.graph_gemma(workdir, quick=False)
    return stop.value.args[0]

  def write(status, d_latent):
    os.makedirs(folder, exist_ok=True)
    want = graph_entries.run_config(workdir, quick=False).transcoder
    jsonio.write_json_atomic(os.path.join(folder, "transcoder_config.json"),
                             {**want.to_dict(), "d_latent": d_latent})
    jsonio.write_json_atomic(os.path.join(folder, "results.json"),
                             {"status": status, "step": graph_entries.LONGER_STEPS, "final": {}})

  cfg = entry_config()  # nothing there: trains its own
  assert cfg.transcoder_dir == "" and cfg.num_steps == graph_entries.STEPS
  write("preempted", 1024)  # unfinished: trains its own
  assert entry_config().transcoder_dir == ""
  write("completed", 256)  # another width: trains its own
  assert entry_config().transcoder_dir == ""
  write("completed", 1024)
  assert entry_config().transcoder_dir == folder
  assert graph_entries.finished_run(folder, cfg.transcoder)["step"] == graph_entries.LONGER_STEPS
  with pytest.raises(ValueError, match="no longer dictionaries for"):
    figures.train_dictionaries(str(tmp_path / "figs"), only=("lm_training",))
