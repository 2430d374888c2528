"""Induction heads form in trained attention-only toys (Olsson et al., 2022), asserted with numbers.

Tiny models (vocabulary 24, d_model 64, 2 heads, 32 tokens) trained on 8 simulated devices on
`pairs:4-16` (random segments, each followed by its copy), measured on held-out repeated random
tokens. The 2-layer model's phase change comes at ~350-450 steps; seeds are fixed. Both of its
layer-1 heads become induction heads, and with seeds 0 and 1 one of them carries most of the
ICL gain (its ablation removes ~70%, the other's ~10%); seed 2 splits it (17% and 40%, measured
with `experiments/induction_heads.py --seed=2`), so the single-head assertions hold for the
fixed seed, while the circuit-level ones (layer 1 as a whole, the previous-token head acting
only through K-composition) held for all three.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from interp.induction import experiment, gemma, phase, segments
from interp.models import config as model_config
from interp.models import transformer
from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = {"num_steps": 700, "snapshot_every": 50, "log_every": 50,
         "ablations": ("zero", "zero_pattern_preserving")}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  return experiment.InductionConfig(workdir=str(tmp_path_factory.mktemp("induction")),
                                    gemma=False, **FLAGS)


@pytest.fixture(scope="module")
def attn2(config):
  return experiment.train_and_analyze(config, "attn2")


def test_two_layer_model_has_a_previous_token_and_an_induction_head(attn2):
  prev_layer, prev = attn2["previous_token_head"]
  ind_layer, ind = attn2["induction_head"]
  scores = {k: np.array(v) for k, v in attn2["scores"].items()}
  assert prev_layer == 0 and scores["previous_token"][0, prev] > 0.5, scores
  assert ind_layer == 1 and scores["prefix_matching"][1, ind] > 0.5, scores
  assert scores["prefix_matching"][0].max() < 0.1  # layer 0 cannot do induction
  assert attn2["icl"] < -2.0  # of log(24) = 3.2 nats at most
  # K-composition: the previous-token head is the source of the largest pair, into an induction
  # head, well above the Gaussian baseline; the other layer-0 head composes at baseline level.
  k = attn2["composition"]["k"]
  k_scores, base = np.array(k["scores"])[0, :, 1, :], k["baseline"]
  largest = attn2["largest_k_composition"]
  assert largest["source"] == [0, prev] and scores["prefix_matching"][largest["target"][0],
                                                                      largest["target"][1]] > 0.5
  assert attn2["circuit_k_composition"] > 1.8 * base, (k_scores, base)
  assert k_scores[1 - prev].max() < 1.1 * base
  for kind in ("q", "v"):  # nothing else composes above the baseline
    assert np.array(attn2["composition"][kind]["scores"])[0, :, 1, :].max() < base


def test_ablation_removes_icl_only_through_the_circuit(attn2):
  prev = attn2["previous_token_head"][1]
  ind = attn2["induction_head"][1]
  zero = np.array(attn2["ablation"]["zero"]["removed"])
  frozen = np.array(attn2["ablation"]["zero_pattern_preserving"]["removed"])
  # Pattern-preserving (Olsson et al.): the induction head's output carries the ICL gain, every
  # other single head's removal costs little.
  assert frozen[1, ind] > 0.5, frozen
  others = [frozen[l, h] for l in range(2) for h in range(2) if (l, h) != (1, ind)]
  assert max(others) < 0.2, frozen
  # Plain ablation: the previous-token head matters too, but only through the attention it
  # gives layer 1 (K-composition): with patterns frozen its removal costs nothing.
  assert zero[0, prev] > 0.8 and frozen[0, prev] < 0.1, (zero, frozen)
  assert zero[1, ind] > 0.5 and zero[0, 1 - prev] < 0.2
  assert attn2["ablation"]["zero"]["layer_removed"][1] > 0.8  # both layer-1 heads: all of it


def test_phase_change_in_the_snapshots(attn2):
  pc = attn2["phase_change"]
  snaps = attn2["snapshots"]
  assert snaps[0]["step"] == 0 and snaps[-1]["step"] == 700
  assert np.max(snaps[0]["prefix_matching"]) < 0.1 and snaps[0]["icl"] > -0.1
  assert 150 <= pc["icl_half_step"] <= 650, pc
  assert pc["icl_before"] > -1.0 and pc["icl_final"] < -2.0, pc
  assert pc["prefix_matching_above_half_step"] <= pc["icl_half_step"] + 50
  assert pc["detected"] and pc["jump"]["head"] == attn2["induction_head"], pc
  assert abs(pc["step"] - pc["icl_half_step"]) <= 50, pc


def _snapshots(icl, head):
  """Rows every 25 steps with the ICL curve and a 1x2-head prefix-matching curve (head 1 flat)."""
  return [{"step": 25 * i, "icl": float(a), "prefix_matching": [[float(b), 0.05]]}
          for i, (a, b) in enumerate(zip(icl, head))]


def test_phase_change_needs_a_head_score_jump_with_the_icl_fall():
  t = np.arange(33)  # steps 0..800
  step = lambda at, width: 1 / (1 + np.exp(-(t - at) / width))  # 0 -> 1 around snapshot `at`
  abrupt = phase.detect(_snapshots(-2.8 * step(16, 0.7), 0.02 + 0.9 * step(16, 0.7)))
  assert abrupt["detected"] and abrupt["step"] == 400, abrupt
  assert abrupt["jump"]["head"] == [0, 0] and abrupt["jump"]["rise"] > 0.8
  # The same ICL fall with no head ever scoring: a loss drop alone is no phase change.
  no_head = phase.detect(_snapshots(-2.8 * step(16, 0.7), np.full(33, 0.03)))
  assert not no_head["detected"] and no_head["step"] is None
  assert no_head["reason"].startswith("no head-score jump"), no_head["reason"]
  assert no_head["icl_half_step"] == 400  # ICL did fall, at the same step
  # Gradual in-context gain and a head score creeping up over the whole run (1-layer-like).
  gradual = phase.detect(_snapshots(-1.2 * t / 32, 0.02 + 0.6 * t / 32))
  assert not gradual["detected"] and gradual["reason"].startswith("no head-score jump")
  assert gradual["jump"]["rise"] == pytest.approx(0.6 * 6 / 32)  # 160 steps = 6 snapshots
  # A head that jumps long after the ICL fall: not together.
  late = phase.detect(_snapshots(-2.8 * step(6, 0.7), 0.02 + 0.9 * step(28, 0.7)))
  assert not late["detected"] and late["reason"].endswith("not together"), late["reason"]
  # No in-context gain at all.
  flat = phase.detect(_snapshots(np.full(33, -0.1), 0.02 + 0.9 * step(16, 0.7)))
  assert not flat["detected"] and flat["reason"].startswith("no in-context gain")


def test_held_out_lag_comes_from_the_training_data(tmp_path):
  make = lambda **kw: experiment.InductionConfig(workdir=str(tmp_path), gemma=False, **kw)
  wide = make(n_ctx=64, vocab_size=40)  # trained on pairs:4-16: lags 4-16, never 32
  tokens = np.asarray(wide.eval_tokens())
  assert tokens.shape == (64, 64)
  np.testing.assert_array_equal(tokens[:, 16:32], tokens[:, :16])  # A A B B at lag 16
  np.testing.assert_array_equal(tokens[:, 48:], tokens[:, 32:48])
  assert (tokens[:, 32:48] != tokens[:, :16]).any()  # B is another segment
  assert all(len(set(row)) == 16 for row in tokens[:, :16])
  assert wide.lag() == 16
  # The default context keeps its held-out tokens: one segment of n_ctx / 2 and its copy.
  default = make()
  np.testing.assert_array_equal(default.eval_tokens(), segments.repeated_tokens(
      jax.random.fold_in(jax.random.key(0), 1_000_003), 64, 16, 24))
  assert make(n_ctx=64, data="repeat:8").lag() == 8
  assert make(n_ctx=64, data="corpus", vocab_size=256).lag() == 32
  assert make(n_ctx=64, eval_lag=5).lag() == 5
  with pytest.raises(ValueError, match=r"^--eval_lag=40 must lie in \[1, n_ctx / 2 = 32\]"):
    make(n_ctx=64, eval_lag=40)


def test_gemma_measured_alone_with_no_toys(tmp_path):
  """`--models=` (no toys) with Gemma's code path, on a small random Gemma-shaped model."""
  cfg = model_config.gemma3_270m(vocab_size=48, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                                 d_head=8, d_mlp=24, n_ctx=16, sliding_window=None)
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  params = jax.tree.map(lambda x: 0.3 * rng.standard_normal(x.shape).astype(x.dtype), shapes)
  conf = experiment.InductionConfig(workdir=str(tmp_path), models=(), gemma_batch=2,
                                    gemma_seg=6, gemma_top_k=1, gemma_random_sets=2,
                                    gemma_low=10, gemma_high=40)
  res = experiment.run(conf, gemma_model=(cfg, params, 1))
  assert res["models"] == {} and res["eval"]["lags"] == [16]
  g = res["gemma"]
  assert g["tokens"]["id_range"] == [10, 40] and g["tokens"]["seg_len"] == 6
  assert np.array(g["scores"]["prefix_matching"]).shape == (2, 2)
  assert len(g["ablations"]["mean"]["random_losses"]) == 2
  assert [os.path.basename(p) for p in res["figures"]] == ["gemma_induction.png"]
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["gemma"]["top_induction_heads"] == g["top_induction_heads"]
  with pytest.raises(ValueError, match=r"^--gemma_high=60 exceeds the model's vocabulary: token "
                                       r"ids \[--gemma_low, --gemma_high\) must lie in \[0, 48\)"):
    experiment.run(dataclasses.replace(conf, gemma_high=60), gemma_model=(cfg, params, 1))
  with pytest.raises(ValueError, match=r"^--gemma_low=35 --gemma_high=40: the id range must hold"):
    dataclasses.replace(conf, gemma_low=35)
  with pytest.raises(ValueError, match=r"^nothing to run: --models= is empty and --nogemma"):
    dataclasses.replace(conf, gemma=False)


def test_gemmas_second_copy_loss_reads_only_the_second_copy():
  tokens = segments.repeated_tokens(jax.random.key(0), 2, 6, 40, low=10, bos=1)  # [2 13]
  logits = jax.random.normal(jax.random.key(1), (2, 13, 48))
  at = gemma.second_copy_positions(2, 6)
  np.testing.assert_array_equal(at[0], np.arange(7, 12))
  np.testing.assert_allclose(gemma.second_copy_loss_at(6)(logits[:, 7:12], tokens),
                             gemma.second_copy_loss(6)(logits, tokens), rtol=1e-6)


def test_one_layer_model_has_no_induction_head_and_little_icl(config):
  # 400 steps: as far as the 2-layer model's phase change (~350-400).
  attn1 = experiment.train_and_analyze(
      dataclasses.replace(config, num_steps=400, snapshot_every=100, ablations=("zero",)), "attn1")
  assert np.max(attn1["scores"]["prefix_matching"]) < 0.15, attn1["scores"]
  assert attn1["icl"] > -0.3, attn1["icl"]
  assert not attn1["phase_change"]["detected"], attn1["phase_change"]


def test_rerun_resumes_with_nothing_to_train(config, attn2):
  again = experiment.train_and_analyze(config, "attn2")
  assert again["step"] == 700 and again["snapshots"] == attn2["snapshots"]
  assert again["loss_curve"] == attn2["loss_curve"]
  np.testing.assert_allclose(again["icl"], attn2["icl"], rtol=1e-6)


def test_binary_trains_a_smeared_key_model_with_an_induction_head(tmp_path):
  """The binary end to end (8 devices, from tests/__init__.py): smeared keys let one layer do
  induction (Olsson et al.'s architecture experiment)."""
  env = subproc.environment(PYTHONPATH=ROOT)
  cmd = [sys.executable, "experiments/induction_heads.py", f"--workdir={tmp_path}",
         "--models=smear1", "--num_steps=250", "--snapshot_every=50", "--log_every=50",
         "--nogemma", "--ablations=zero"]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "smear1: ICL" in out.stdout
  with open(tmp_path / "results.json") as f:
    smear1 = json.load(f)["models"]["smear1"]
  ind = smear1["induction_head"][1]
  assert smear1["scores"]["prefix_matching"][0][ind] > 0.5, smear1["scores"]
  assert smear1["icl"] < -2.0
  assert smear1["ablation"]["zero"]["removed"][0][ind] > 0.5
  for name in ("training_curves.png", "head_scores_over_training.png", "ablations.png"):
    assert os.path.exists(tmp_path / name), name
