"""The evidence report's measurements under the bfloat16 policy against float32: token
attributions and causal effects, and the heads' evidence and patching effects."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from scipy import stats

from interp.attribution import evidence, evidence_report, evidence_tasks
from interp.models import transformer
from interp.models.config import TransformerConfig

PRECISIONS = ("float32", "bfloat16")
# Measured on CPU (jax 0.10.2), 2 prompts of 8 tokens (6 players) on the 2-layer model below:
# the largest |bf16 - float32| of a token method, relative to that method's largest |value| in
# the prompt, 3.6% (gradient x input; causal effects 2.6%, IG 1.9%, occlusion 1.4%, LIME 1.2%,
# Shapley 0.8%); heads: direct effects 2.0%, total 1.1%, attention and write norms 0.6%. The
# metric is a log-probability near -6.2 and bfloat16 rounds it by up to 2^-9 of that (0.012)
# per run, which enters every effect twice (clean and intervened): 0.025 on effects of about 1
# is the floor. 10% is ~3x the largest measured gap.
MAX_REL_GAP = 0.1
# Kendall tau between the two precisions' rankings (measured: 1.0 everywhere). One swap of two
# neighbours among 6 players gives 1 - 2/15 = 0.87, among 8 heads 1 - 2/28 = 0.93: the bound
# allows one near-tie to flip, no more.
MIN_TAU = 0.85


@functools.cache
def _setup():
  """The 2-layer model with MLPs and the repeated-token prompts of `test_evidence`'s token
  test (two prompts instead of one)."""
  cfg = TransformerConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, d_head=8, n_ctx=16,
                          d_mlp=64, init_std=0.3)
  params = jax.jit(transformer.init_params, static_argnums=0)(cfg, jax.random.key(1))
  prompts = evidence_tasks.repeated(jax.random.key(2), 2, 4, 32, low=1, bos=0)
  return cfg, params, prompts


def _gap(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(a).max())


def _tau(a, b) -> float:
  return float(stats.kendalltau(np.ravel(a), np.ravel(b)).statistic)


def test_token_attributions_and_causal_effects_in_bf16_match_float32():
  cfg, params, prompts = _setup()
  # chunk 64: occlusion (7 masks), exact Shapley (64) and LIME (32) share one program.
  config = evidence.EvidenceConfig(lime_samples=32, ig_steps=4, chunk=64)
  out = {p: evidence.token_level(cfg, params, prompts, config, p) for p in PRECISIONS}
  rows = []
  for m in ("causal",) + evidence.TOKEN_METHODS:
    for i in range(2):
      players = ~prompts.keep[i]
      a32, a16 = (out[p]["attributions"][i][m][players] for p in PRECISIONS)
      rows.append((m, i, _gap(a32, a16), _tau(a32, a16)))
  print("\n" + "\n".join(f"{m:21s} prompt {i}: max |bf16 - f32| / max |f32| {g:.4f}, "
                         f"Kendall tau {t:.3f}" for m, i, g, t in rows))
  assert max(g for _, _, g, _ in rows) <= MAX_REL_GAP
  assert min(t for _, _, _, t in rows) >= MIN_TAU
  # The policy reached the forwards, and the gradient methods' backward.
  for m in ("causal", "shapley", "grad_x_input", "integrated_gradients"):
    assert not np.array_equal(out["bfloat16"]["attributions"][0][m],
                              out["float32"]["attributions"][0][m]), m
  # The agreement with the causal effect, what the report tabulates, is the same story.
  for m in evidence.TOKEN_METHODS:
    assert out["bfloat16"]["agreement"][m]["kendall_tau"] == pytest.approx(
        out["float32"]["agreement"][m]["kendall_tau"], abs=0.15), m


def test_head_evidence_and_patching_effects_in_bf16_match_float32():
  cfg, params, prompts = _setup()
  config = evidence.EvidenceConfig(head_k=3, chunk=8)
  out = {p: evidence.head_level(cfg, params, prompts, config, p) for p in PRECISIONS}
  gaps = {k: _gap(out["float32"][k], out["bfloat16"][k])
          for k in ("total", "direct", "attention", "write_norm")}
  taus = {k: _tau(out["float32"][k], out["bfloat16"][k]) for k in gaps}
  print(f"\nheads, max |bf16 - f32| / max |f32|: {gaps}\nKendall tau: {taus}; clean metric "
        f"{out['float32']['clean']:.4f} / {out['bfloat16']['clean']:.4f}")
  assert max(gaps.values()) <= MAX_REL_GAP and min(taus.values()) >= MIN_TAU
  assert out["bfloat16"]["clean"] != out["float32"]["clean"]  # the clean run was bfloat16
  assert abs(out["bfloat16"]["clean"] - out["float32"]["clean"]) <= 0.01 * abs(
      out["float32"]["clean"])


def test_report_precision_flag_is_checked():
  with pytest.raises(ValueError, match=r"^--precision='fp16' is not one of: auto, float32, "):
    evidence_report.ReportConfig(workdir="w", precision="fp16")
  assert evidence_report.ReportConfig(workdir="w").precision == "auto"
