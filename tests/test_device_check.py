"""experiments/device_check.py: the --quick run (every section, tiny sizes, on 8 simulated CPU
devices) and the driver's isolation, deadline and flag checks."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from interp.bench import device_check, device_report, harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "experiments", "device_check.py")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  out = tmp_path_factory.mktemp("dc") / "runs" / "device_check.json"  # folder made by the binary
  proc = subprocess.run([sys.executable, BINARY, "--quick", f"--out={out}"], cwd=ROOT,
                        timeout=600, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(out.read_text()), proc.stdout


def _ok(r):
  assert "error" not in r and "skipped" not in r, r
  return r


def test_quick_runs_every_section_with_numbers(quick):
  report, stdout = quick
  sections = report["sections"]
  assert list(sections) == ["env", "parity", "sae", "forward", "lm", "graph"]
  assert all(s["status"] == "ran" for s in sections.values()), sections
  env = _ok(sections["env"]["results"]["ours"]["env"])
  assert env["backend"] == "cpu" and env["device_count"] == 8
  assert env["bf16_matmul_tflops"] > 0 and env["f32_matmul_tflops"] > 0
  assert env["peak_bf16_tflops_datasheet"] is None  # a CPU: fraction n/a
  parity = sections["parity"]["results"]["ours"]
  for what in ("forward", "gradients", "sharded_step"):
    r = _ok(parity[f"{what}/float32"])
    assert r["max_abs_diff"] < 1e-5 and r["within_tolerance"], (what, r)
    r = _ok(parity[f"{what}/bfloat16"])  # through interp.precision: measured, never skipped
    assert r["within_tolerance"], (what, r)
    if what != "sharded_step":  # bf16 against the float32 reference: it did compute in bf16
      assert r["rel_diff"] > 1e-4, (what, r)
  assert parity["sharded_step/float32"]["mesh"] == "data:4,model:2"
  assert parity["sharded_step/float32"]["params"]["leaves"] > 10


def test_quick_throughputs_beside_the_peers(quick):
  report, _ = quick
  sz = report["sizes"]
  sae = report["sections"]["sae"]["results"]
  for side in ("ours", "saelens"):
    for arch in ("relu", "topk"):
      r = sae[side][f"{arch}/float32"]
      if side == "saelens" and "skipped" in r:
        assert r["skipped"].startswith("peer not installed"), r
        continue
      _ok(r)
      assert r["activations_per_s"] > 0 and r["fraction_of_bf16_peak"] is None
      assert r["flops_per_step"] == 12 * sz["sae_batch"] * sz["sae_d_in"] * sz["sae_d_sae"]
  for arch in ("relu", "topk"):  # our step in bf16 (interp.precision): measured, never skipped
    r32, r16 = sae["ours"][f"{arch}/float32"], _ok(sae["ours"][f"{arch}/bfloat16"])
    assert r16["activations_per_s"] > 0 and r16["precision"] == "bfloat16", r16
    loss32, loss16 = r32["final_metrics"]["loss"], r16["final_metrics"]["loss"]
    # The same steps on the same batch: bf16 products move the loss, within 1% of float32.
    assert loss16 != loss32 and abs(loss16 - loss32) <= 1e-2 * abs(loss32), (arch, r32, r16)
  fwd = report["sections"]["forward"]["results"]
  for model in ("gpt2_small", "gemma3_270m"):
    ours = _ok(fwd["ours"][f"{model}/float32"])
    assert ours["tokens_per_s"] > 0 and ours["tokens_per_call"] == 2 * 16
    assert ours["device_peak_gib"] is None and ours["host_peak_rss_gib"] > 0
    tl = fwd["transformer_lens"][f"{model}/float32"]
    if "skipped" not in tl:  # the same hooks, shapes and dtype: the same cache bytes
      assert _ok(tl)["hooks"] == ours["hooks"] == 2 * 10
      assert tl["cache_bytes"] == ours["cache_bytes"] > 0
    # Two layers: resid_post 0 and resid_pre 1 are one tensor, held once.
    assert 0 < ours["cache_unique_bytes"] < ours["cache_bytes"]
  lm = _ok(report["sections"]["lm"]["results"]["ours"]["lm/float32"])
  assert lm["tokens_per_s"] > 0 and lm["mfu"] is None and 10_000 < lm["params"] < 100_000


def test_quick_graphs_and_goals(quick):
  report, stdout = quick
  graph = report["sections"]["graph"]["results"]["ours"]
  for n in (8, 16):
    r = _ok(graph[f"{n}/float32"])
    assert r["tokens"] == n and r["seconds"] > 0
    assert 0 < r["active_features"] <= 2 * n * 2  # k=2 per layer and token, two layers
    assert r["nodes"] == r["feature_rows"] + 2 * n + n + r["logit_rows"]
  goals = report["goals"]
  assert set(goals) == set(device_report.GOALS)
  assert all(g["status"] in ("met", "not met", "n/a") for g in goals.values())
  assert goals["graph_2048_seconds"]["status"] == "n/a"  # not a --quick length
  assert "sharded_step/float32" in stdout and "TopK step >= 3x" in stdout
  assert "wrote " in stdout


def test_a_failing_section_keeps_the_others(tmp_path, monkeypatch):
  def fake(section, cfg, budget):
    if section == device_check.Section.PARITY:
      raise RuntimeError("device lost\nsecond line")
    return {"ours": {"x": {"skipped": "fake"}}}
  monkeypatch.setattr(device_check, "run_section", fake)
  out = tmp_path / "r.json"
  lines = []
  cfg = device_check.DeviceCheckConfig(out=str(out), sections=("env", "parity", "lm"))
  report = device_check.run(cfg, echo=lines.append)
  on_disk = json.loads(out.read_text())
  assert [s["status"] for s in on_disk["sections"].values()] == ["ran", "failed", "ran"]
  assert on_disk["sections"]["parity"]["error"] == "RuntimeError: device lost"
  assert "RuntimeError: device lost" in on_disk["sections"]["parity"]["traceback"]
  assert any("FAILED: RuntimeError: device lost" in line for line in lines)
  assert report["sections"]["lm"]["results"] == {"ours": {"x": {"skipped": "fake"}}}


def test_sections_past_the_deadline_are_skipped(tmp_path):
  out = tmp_path / "r.json"
  cfg = device_check.DeviceCheckConfig(out=str(out), sections=("graph", "lm"), deadline_s=20,
                                       budgets=("lm:100",))
  report = device_check.run(cfg, echo=lambda _: None)
  for name, budget in (("graph", 90), ("lm", 100)):
    entry = report["sections"][name]
    assert entry["status"] == "skipped"
    assert entry["reason"].endswith(f"before --deadline_s=20, budget {budget} s"), entry
  assert json.loads(out.read_text())["sections"]["lm"]["status"] == "skipped"


@pytest.mark.parametrize("kwargs, message", [
    (dict(budgets=("graph=200",)), "--budgets='graph=200': expected NAME:SECONDS with NAME one"),
    (dict(budgets=("gpu:5",)), "--budgets='gpu:5': expected NAME:SECONDS"),
    (dict(budgets=("lm:nan",)), "SECONDS positive"),
    (dict(deadline_s=-1), "--deadline_s=-1"),
    (dict(deadline_s=float("nan")), "--deadline_s=nan"),
    (dict(sections=("envv",)), "--sections: unknown ['envv']; valid: env, parity"),
    (dict(sections=()), "--sections: unknown []; valid: env"),
    (dict(precisions=("fp16",)), "--precisions: unknown ['fp16']; valid: float32, bfloat16"),
])
def test_bad_flags_name_the_flag(kwargs, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
    device_check.DeviceCheckConfig(**kwargs)


@pytest.mark.parametrize("result, status", [
    ({"tokens": 8192, "seconds": 80.0, "nodes": 1}, "met"),
    ({"error": "XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 9 GiB"}, "not met"),
    ({"error": "killed at the section's deadline (50 s left for this job)"}, "n/a"),
    ({"skipped": "section budget (120 s) spent"}, "n/a"),
])
def test_only_running_out_of_memory_means_the_long_graph_does_not_fit(result, status):
  report = {"sizes": {"forward_models": {}},
            "sections": {"graph": {"status": "ran", "results": {"ours": {"8192/float32": result}}}}}
  goal = device_report.goals(report)["graph_8192_fits"]
  assert goal["status"] == status, goal


def test_jobs_share_the_section_time_and_skips_start_no_worker(monkeypatch):
  calls = []

  def fake_job(section, side, items, cfg, timeout):
    calls.append((side, items, timeout))
    return {i: {"seconds": 1.0} for i in items}
  monkeypatch.setattr(device_check, "run_job", fake_job)
  monkeypatch.setattr(device_check, "unavailable", lambda section, side, items: {
      i: {"skipped": "bf16: none"} for i in items if side == "ours" and "bfloat16" in i})
  cfg = device_check.DeviceCheckConfig(sections=("forward",))  # full sizes
  out = device_check.run_section(device_check.Section.FORWARD, cfg, 90.0)
  assert [(side, items) for side, items, _ in calls] == [
      ("ours", ("gpt2_small/float32",)), ("ours", ("gemma3_270m/float32",)),
      ("transformer_lens", ("gpt2_small/float32", "gpt2_small/bfloat16",
                            "gemma3_270m/float32", "gemma3_270m/bfloat16"))]
  # Three workers start (skipped items count for none): the first may use a third of the 90 s;
  # these fake jobs take no time, so each passes its share on to the next.
  assert [round(t) for *_, t in calls] == [30, 45, 90]
  assert list(out["ours"]) == ["gpt2_small/float32", "gpt2_small/bfloat16",
                               "gemma3_270m/float32", "gemma3_270m/bfloat16"]
  assert out["ours"]["gpt2_small/bfloat16"] == {"skipped": "bf16: none"}


def test_the_driver_measures_every_compute_dtype_of_the_policy():
  from interp import precision
  assert device_check.PRECISIONS == precision.DTYPES


def test_parity_is_relative_per_leaf_and_ignores_masked_scores():
  import numpy as np
  from interp.bench import device_jax
  lowest = np.finfo(np.float32).min  # a masked attention score
  want = {"scores": np.array([lowest, 2.0]), "small": np.array([0.01, -0.02])}
  got = {"scores": np.array([lowest, 2.0]), "small": np.array([0.01, -0.03])}
  res = device_jax.compare(got, want)
  assert np.isclose(res["max_abs_diff"], 0.01) and np.isclose(res["rel_diff"], 0.5)
  whole = device_jax.compare(got, want, per_leaf=False)
  assert np.isclose(whole["rel_diff"], 0.01 / 2.0)


def test_quick_workers_and_tests_compile_with_the_older_fusion_emitters_where_known(monkeypatch):
  """Only on the jaxlib it was measured on: XLA stops a process on a flag it does not know."""
  flag = "--xla_cpu_use_fusion_emitters=false"
  known = importlib.metadata.version("jaxlib").startswith("0.10.")
  assert (flag in os.environ["XLA_FLAGS"]) == known  # this test process (tests/__init__.py)
  assert (flag in harness.FAST_COMPILE_XLA_FLAGS) == known
  monkeypatch.setenv("XLA_FLAGS", "")  # a person's shell: timed workers compile as by default
  assert (flag in device_check.worker_env("ours", quick=True)["XLA_FLAGS"]) == known
  assert flag not in device_check.worker_env("ours", quick=False).get("XLA_FLAGS", "")
  for version, want in (("0.10.2", flag), ("0.11.2", ""), ("0.9.0", "")):
    monkeypatch.setattr(importlib.metadata, "version", lambda name, v=version: v)
    assert harness.older_cpu_fusion_emitters() == want, version
