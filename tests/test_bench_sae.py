"""Smoke test of experiments/bench_sae.py: --quick reports both sides for every rule, and the
`make bench` table's rows from its report."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from interp.bench import sae, sae_sides, table
from tests import subproc

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
      cwd=ROOT, timeout=240, capture_output=True, text=True, env=subproc.environment())
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(out.read_text())

  assert report["config"]["flops_per_step"] == 12 * 64 * 32 * 256
  assert set(report["archs"]) == {"relu", "topk", "relu_sparse"}
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
    phases = r["ours"]["phases_seconds"]
    assert set(phases) == set(sae_sides.PHASES) | {"rest_of_step"}, arch
    assert all(phases[p] > 0 for p in sae_sides.PHASES), (arch, phases)
  # relu_sparse starts both sides at L0 16 of 256 and ours keeps to the sparse step (cap 64)
  final = report["archs"]["relu_sparse"]["ours"]["final_metrics"]
  assert 8 < final["l0"] < 32 and final["sparse_step"] == 1.0, final
  assert report["matmul"]["jax_gflop_per_s_median"] > 0
  assert len(report["machine"]["loadavg_start"]) == 3

  rows = {r.comparison.split(":")[0]: r for r in table.sae_rows(report)}  # the table's keys
  for arch in ("relu", "topk", "relu_sparse"):
    assert rows[arch].ratio == report["archs"][arch]["speedup_ours_over_saelens"]
    assert rows[arch].ours > 0 and rows[arch].peer > 0 and rows[arch].status in ("met", "not met")


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_phases_compute_the_dense_steps_products(arch):
  """The profiled pieces are the step's math: at a tiny size, the sparse (topk) and dense (relu)
  pieces equal the dense products of the densified codes to float32 rounding."""
  import jax.numpy as jnp
  import numpy as np

  cfg = sae.SAEBenchConfig(out="", d_in=16, d_sae=64, batch=32, k=4, archs=(), steps=1,
                           warmup=0, rounds=1, pair_steps=1, threads=1, l1_coeff=1.0,
                           lr=1e-3, decoder_norm="weighted", xla_flags="", one_worker=True)
  progs = sae_sides.phase_programs(arch, cfg)
  run = {name: fn(*args) for name, (fn, args) in progs.items()}
  x, w_enc = progs["encode_matmul"][1]
  pre = np.asarray(x) @ np.asarray(w_enc)
  np.testing.assert_allclose(run["encode_matmul"], pre, rtol=1e-5, atol=1e-5)
  if arch == "relu":
    acts = np.maximum(pre, 0)
  else:
    values, indices = run["select"]
    acts = np.zeros_like(pre)
    np.put_along_axis(acts, np.asarray(indices), np.asarray(values), 1)
    # Exactly the 4 largest of the pre-activations it was given (XLA's product, which may
    # differ from numpy's in the last bit: checked against it to 1e-5 above).
    given = np.asarray(progs["select"][1][0])
    assert (np.sort(given, 1)[:, -4:] == np.sort(np.asarray(values), 1)).all()
  w_dec = np.asarray(w_enc).T
  g = np.asarray(progs["code_grad"][1][0])
  np.testing.assert_allclose(run["decode"], acts @ w_dec, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(run["decoder_grad"], acts.T @ g, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(run["encoder_grad"] if arch == "relu" else
                             jnp.asarray(run["encoder_grad"]).T, np.asarray(x).T @ acts,
                             rtol=1e-4, atol=1e-4)
  code_grad = g @ w_dec.T
  if arch == "topk":
    code_grad = np.take_along_axis(code_grad, np.asarray(run["select"][1]), 1)
  np.testing.assert_allclose(run["code_grad"], code_grad, rtol=1e-4, atol=1e-4)
