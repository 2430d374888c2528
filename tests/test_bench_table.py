"""`make bench`'s table (interp.bench.table) built from small saved reports: no benchmark runs.

tests/golden/bench/*.json are trimmed reports in each benchmark's format (the keys the table
reads); the benchmarks' own --quick tests check that their real reports still have those keys.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from interp.bench import measure, table

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAVED = ROOT / "tests" / "golden" / "bench"


def _outcomes(*names):
  return {n: {"report": json.loads((SAVED / f"{n}.json").read_text())} for n in names}


def _by(rows):
  return {(r.bench, r.comparison.split(":")[0]): r for r in rows}


def test_rows_ratios_and_goals_from_saved_reports(tmp_path):
  rows = table.build(_outcomes("forward", "patching", "sae", "toy", "graph"))
  by = _by(rows)
  assert len(rows) == 4 + 2 + 2 + 2 + 3 + 1  # discovery: not run

  fwd = [r for r in rows if r.bench == "forward"]
  assert [(r.ratio, r.goal, r.status) for r in fwd] == [
      (2.5, ">= 2.0", "met"), (0.5, "<= 0.7", "met"),        # attn_only: speed, memory
      (1.2, ">= 1.5", "not met"), (0.8, "<= 0.7", "not met")]  # gpt2_small
  assert fwd[0].ours == 50000.0 and fwd[0].peer == 20000.0
  assert fwd[1].ours == pytest.approx(10.0) and fwd[1].peer == pytest.approx(20.0)  # MiB
  assert fwd[0].note == "the benchmark's own goal: 1.5" and fwd[1].note == ""

  assert (by["patching", "resid_pre"].ratio, by["patching", "resid_pre"].status) == (20.0, "met")
  assert by["patching", "attn_head_out"].status == "not met"
  assert by["patching", "attn_head_out"].ours == 0.5 and by["patching", "attn_head_out"].peer == 2.5

  relu, topk = by["sae", "relu"], by["sae", "topk"]
  assert (relu.ratio, relu.goal, relu.status) == (3.5, ">= 3.0", "met")
  assert relu.note == "the benchmark's own goal: 1.6"
  assert (topk.ratio, topk.goal, topk.status, topk.note) == (4.0, ">= 6.0", "not met", "")
  assert (topk.ours, topk.peer) == (12000.0, 3000.0)

  assert [(r.ratio, r.status) for r in rows if r.bench == "toy"] == [(15.0, "met"),
                                                                    (9.0, "not met")]
  g = [r for r in rows if r.bench == "graph"]
  assert [(r.ours, r.goal, r.status) for r in g] == [
      (14.0, "goals at 2,048 / 8,192 tokens", "n/a"), (75.0, "< 60.0", "not met"),
      (None, "== True", "not met")]
  assert g[2].note == "killed: out of memory" and "peak RSS 2.70 GB" in g[0].note

  machine = {"cpu_count": 2, "cpu_model": "AMD EPYC", "vector_isa": "avx2",
             "matmul_gflops": 141.3}
  table.write(str(tmp_path), rows, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), quick=False,
              machine=machine)
  md = (tmp_path / "table.md").read_text()
  assert md.count("\n| ") == 2 + len(rows)  # header, rule, one line per row
  assert "at start 1.00 / 2.00 / 3.00, at end 4.00 / 5.00 / 6.00" in md
  assert "Machine: AMD EPYC, avx2, 2 cores; numpy float32 matmul 141 GFLOP/s" in md
  assert "| sae | topk: training step vs SAELens | activations/s | 12,000 | 3,000 | 4 | >= 6.0 | " \
         "**not met** |" in md
  saved = json.loads((tmp_path / "table.json").read_text())
  assert saved["loadavg_start"] == [1.0, 2.0, 3.0] and not saved["quick"]
  assert saved["machine"] == machine
  assert [r["ratio"] for r in saved["rows"]] == [r.ratio for r in rows]


def test_machine_names_the_cpu_its_widest_vector_extension_and_a_matmul_rate(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
                  "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n")
  assert measure.cpu_description(str(info)) == {"cpu_model": "AMD EPYC", "vector_isa": "avx2"}
  info.write_text("model name\t: Intel(R) Xeon(R)\nflags\t\t: avx avx2 avx512f avx512bw\n")
  assert measure.cpu_description(str(info))["vector_isa"] == "avx512f"
  assert measure.cpu_description(str(tmp_path / "absent")) == {}
  assert 1 < measure.matmul_gflops(n=256, reps=2) < 1e5


def test_discovery_rows_goal_and_a_parity_failure():
  rows = table.build(_outcomes("discovery"))
  d = [r for r in rows if r.bench == "discovery"]
  assert [(r.comparison.split(":")[0], r.ratio, r.goal, r.status) for r in d] == [
      ("attn_only/eap_ig", 12.0, ">= 5.0", "met"), ("gpt2_small/eap_ig", 3.0, ">= 5.0", "not met"),
      ("broken/eap_ig", 50.0, ">= 5.0", "failed")]
  assert (d[0].ours, d[0].peer) == (0.05, 0.6)
  assert d[2].note == "scores disagree: max relative diff 2.0e-02"


def test_absent_failed_and_unreadable_benchmarks_are_rows_not_crashes():
  rows = table.build({"forward": {"missing": "experiments/bench_forward.py is not in this "
                                              "checkout"},
                      "sae": {"failed": "exit 1: boom"},
                      "patching": {"report": {"something": 1}}})
  assert [(r.bench, r.status) for r in rows] == [
      ("forward", "not present"), ("patching", "failed"), ("sae", "failed"),
      ("toy", "not run"), ("graph", "not run"), ("discovery", "not run")]
  assert rows[2].note == "exit 1: boom" and "keys: ['something']" in rows[1].note
  assert rows[0].note == "experiments/bench_forward.py is not in this checkout"


def test_run_one_reports_a_missing_binary_and_keeps_an_older_report(tmp_path, monkeypatch):
  monkeypatch.setitem(table.BENCHMARKS, "patching", "experiments/no_such_bench.py")
  assert table.run_one("patching", str(tmp_path), True, 10) == {
      "missing": "experiments/no_such_bench.py is not in this checkout"}
  # A binary that fails leaves the older report in place and is not read as fresh.
  old = tmp_path / "toy.json"
  old.write_text('{"summary": {}}')
  fail = tmp_path / "fail.py"
  fail.write_text("import sys; sys.exit('bad flag')")
  monkeypatch.setitem(table.BENCHMARKS, "toy", str(fail))
  out = table.run_one("toy", str(tmp_path), True, 10)
  assert out == {"failed": "exit 1, no new report: bad flag"}
  assert old.read_text() == '{"summary": {}}'


def test_bench_all_names_a_bad_flag(tmp_path):
  proc = subprocess.run([sys.executable, "experiments/bench_all.py", "--only=sae,nope",
                         f"--out_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 1
  assert ("--only: unknown ['nope']; valid: forward, patching, sae, toy, graph, "
          "discovery") in proc.stderr
  assert not list(tmp_path.iterdir())
