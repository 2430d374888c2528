"""interp's EAP-IG edge scores equal the same method written with TransformerLens hooks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from interp.bench import discovery, discovery_sides, harness, table

needs_tl = pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None,
                              reason="transformer_lens (and torch) needed for the peer side")


def test_merge_sums_a_layers_heads_into_one_receiver():
  spec = discovery.QUICK["gpt2_small"]  # 2 layers, 4 heads, MLPs
  names, index = discovery_sides.merged_index(spec)
  assert names == ["a0", "m0", "a1", "m1", "logits"]
  assert index.tolist() == [0] * 4 + [1] + [2] * 4 + [3] + [4]
  scores = np.arange(3 * 11, dtype=np.float64).reshape(3, 11)
  merged = discovery_sides.merge(spec, scores)
  assert merged[1].tolist() == [11 + 12 + 13 + 14, 15, 16 + 17 + 18 + 19, 20, 21]


def test_config_survives_the_trip_to_a_worker():
  import dataclasses
  cfg = discovery.DiscoveryBenchConfig(out="x", models=discovery.model_shapes(
      ["attn_only", "gpt2_small"], quick=True), steps=4, weights=("a.npz", "b.npz"))
  back = harness.decode(discovery.DiscoveryBenchConfig, json.loads(json.dumps(
      dataclasses.asdict(cfg))))
  assert back == cfg


@needs_tl
def test_quick_run_matches_the_tl_reference_and_the_table_reads_it(tmp_path):
  cfg = discovery.DiscoveryBenchConfig(
      out="", models=discovery.model_shapes(["attn_only"], quick=True), reps=1, tl_reps=1,
      threads=1, curve_points=6, quick=True)
  report = discovery.run(cfg)
  m = report["models"]["attn_only"]
  assert m["n_edges_interp"] == 33  # 2 layers x 4 heads, unsplit: 4 + 4*5 + 9
  assert m["n_merged_edges"] == 1 + 5 + 9  # a0 <- embed; a1 <- embed + 4 heads; logits <- all
  assert m["max_rel_diff"] < 1e-5 and m["spearman"] > 0.999
  assert m["max_abs_score"] > 1e-3  # the scores are not all zero
  assert m["parity"] and report["all_parity"]
  for key in ("interp_seconds", "tl_seconds", "speedup_interp_over_tl", "interp_curve_seconds"):
    assert m[key] > 0, key
  # One 1/5/15-minute load average per worker run on each side, beside its timings.
  assert [len(x) for x in m["interp_loadavg"] + m["tl_loadavg"]] == [3, 3]
  # EAP-IG curve: keeping every edge restores the clean metric, none gives the corrupted one.
  assert m["curve_normalised"][0] == pytest.approx(0.0, abs=1e-4)
  assert m["curve_normalised"][-1] == pytest.approx(1.0, abs=1e-4)
  path = tmp_path / "discovery.json"
  path.write_text(json.dumps(report))
  rows = table.discovery_rows(json.loads(path.read_text()))
  assert [r.comparison.split(":")[0] for r in rows] == ["attn_only/eap_ig"]
  assert rows[0].ratio == pytest.approx(m["speedup_interp_over_tl"])
  assert rows[0].status in ("met", "not met")


def test_binary_names_a_bad_flag(tmp_path):
  out = tmp_path / "r.json"
  proc = subprocess.run([sys.executable, "experiments/bench_circuit_discovery.py", "--quick",
                         "--steps=0", f"--out={out}"], capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode != 0 and "--steps" in proc.stderr
  assert not out.exists()
