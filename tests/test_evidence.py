"""Behavioural versus causal evidence: agreement where the answer is known, the
attends-yet-writes-little test of a head with no output, and a smoke run of the report."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.attribution import evidence, evidence_report, evidence_tasks, masking
from interp.circuits import patching
from interp.models import config as model_config
from interp.models import transformer
from interp.models.config import TransformerConfig

init_params = jax.jit(transformer.init_params, static_argnums=0)


def _uniform_attention_model():
  """1 layer, attention only, no norms, W_Q = W_K = 0: every query attends uniformly to its
  prefix, so the metric at the last position is c + sum_j g(x_j), additive over tokens."""
  cfg = dataclasses.replace(model_config.attn_only(1, 16, 2, 16, 12), init_std=0.5)
  params = init_params(cfg, jax.random.key(0))
  attn = dict(params["blocks_0"]["attn"])
  attn["W_Q"] = jnp.zeros_like(attn["W_Q"])
  attn["W_K"] = jnp.zeros_like(attn["W_K"])
  params = {**params, "blocks_0": {**params["blocks_0"], "attn": attn}}
  return cfg, params


def test_additive_model_attributions_match_the_causal_effect_exactly():
  cfg, params = _uniform_attention_model()
  tokens = np.array([[3, 7, 1, 9, 4, 11, 5, 2]], np.int32)
  keep = np.zeros(tokens.shape, bool)
  keep[:, -1] = True
  # Counterfactual = the neutral token everywhere: patching token j's embedding from it is
  # masking it, and for an additive f occlusion, Shapley values, LIME and IG (from the
  # neutral token's embedding, f linear in it) all equal g(x_j) - g(neutral).
  prompts = evidence.Prompts(tokens=tokens, corrupt=np.zeros_like(tokens), read=np.array([7]),
                             good=np.array([6]), bad=np.array([10]), source=np.array([3]),
                             keep=keep)
  config = evidence.EvidenceConfig(lime_samples=256, ig_steps=4, token_k=3)
  out = evidence.token_level(cfg, params, prompts, config)
  attr = out["attributions"][0]
  players = ~keep[0]
  for m in ("occlusion", "shapley", "integrated_gradients"):
    np.testing.assert_allclose(attr[m][players], attr["causal"][players], rtol=1e-3, atol=1e-4)
    assert out["agreement"][m]["kendall_tau"] == pytest.approx(1.0)
    assert out["agreement"][m]["topk_overlap"] == 1.0
  assert out["agreement"]["lime"]["kendall_tau"] > 0.9  # ridge shrinkage, same ranking
  # Gradient x input is the linear term from a zero embedding, not from the neutral token.
  assert not np.allclose(attr["grad_x_input"][players], attr["causal"][players], atol=1e-3)


def test_token_causal_effect_is_layer0_residual_patching():
  cfg = TransformerConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, d_head=8, n_ctx=16,
                          d_mlp=64, init_std=0.3)
  params = init_params(cfg, jax.random.key(1))
  prompts = evidence_tasks.repeated(jax.random.key(2), 1, 4, 32, low=1, bos=0)
  # What `token_attributions` calls "causal": masking with the counterfactual as baseline.
  value = masking.masked_lm_value(cfg, params, prompts.tokens[0], prompts.metric(0),
                                  prompts.corrupt[0], prompts.keep[0], chunk=8)
  counter = masking.occlusion(value, prompts.tokens.shape[1], prompts.keep[0])
  clean = evidence.clean_metric(cfg, params, prompts)
  patched = patching.activation_patching(
      cfg, params, jnp.asarray(prompts.tokens), jnp.asarray(prompts.corrupt),
      prompts.batch_metric(), "resid", logits_at=jnp.asarray(prompts.read)[:, None])
  ref = clean - np.asarray(patched)[0]
  players = ~prompts.keep[0]
  np.testing.assert_allclose(counter[players], ref[players], rtol=1e-4, atol=1e-5)


def test_head_with_no_output_attends_yet_writes_little():
  cfg = model_config.attn_only(2, 16, 4, 16, 12)
  params = init_params(cfg, jax.random.key(3))
  prompts = evidence_tasks.repeated(jax.random.key(4), 3, 5, 12, low=1)
  config = evidence.EvidenceConfig(head_k=3, chunk=4)
  before = evidence.head_level(cfg, params, prompts, config)
  layer = cfg.n_layers - 1  # a last-layer head: zeroing it changes no attention pattern
  head = int(np.argmax(np.asarray(before["attention"])[layer]))
  attn = dict(params[f"blocks_{layer}"]["attn"])
  attn["W_O"] = attn["W_O"].at[head].set(0.0)
  params = {**params, f"blocks_{layer}": {**params[f"blocks_{layer}"], "attn": attn}}
  after = evidence.head_level(cfg, params, prompts, config)
  att, wn = np.asarray(after["attention"]), np.asarray(after["write_norm"])
  np.testing.assert_allclose(att, np.asarray(before["attention"]), rtol=1e-5)
  assert wn[layer, head] == 0.0 and att[layer, head] > 0.0
  assert after["total"][layer][head] == 0.0  # no output, no effect
  # With k reaching down to its attention rank, it is in the top k by attention and last by
  # write norm: listed as attending strongly yet writing little.
  k = int(evidence.ranks(att)[layer, head])
  assert k <= att.size // 2
  out = evidence.mismatches(att, wn, np.asarray(after["total"]), k=k)
  row = [x for x in out["attends_writes_little"] if x["head"] == f"L{layer}H{head}"]
  assert len(row) == 1 and row[0]["write_norm"] == 0.0 and row[0]["effect"] == 0.0
  assert f"L{layer}H{head}" not in [x["head"] for x in out["writes_attends_little"]]


def test_mismatches_and_ranks():
  attention = np.array([[0.9, 0.1], [0.05, 0.5]])
  write = np.array([[0.0, 2.0], [0.1, 1.0]])
  effect = np.array([[0.0, -3.0], [0.2, 1.0]])
  np.testing.assert_array_equal(evidence.ranks(attention), [[1, 3], [4, 2]])
  out = evidence.mismatches(attention, write, effect, k=1)
  assert [x["head"] for x in out["attends_writes_little"]] == ["L0H0"]
  assert [x["head"] for x in out["writes_attends_little"]] == ["L0H1"]
  assert out["writes_attends_little"][0]["causal_rank"] == 1
  a = evidence.agreement(np.arange(5.0), np.arange(5.0) * 2, k=2)
  assert a["kendall_tau"] == pytest.approx(1.0) and a["topk_overlap"] == 1.0
  assert np.isnan(evidence.agreement(np.ones(4), np.arange(4.0), k=2)["kendall_tau"])


def test_report_smoke_on_the_toy(tmp_path):
  config = evidence_report.ReportConfig(
      workdir=str(tmp_path), settings=("induction_toy",), n_prompts=2, seg_len=4, toy_steps=10,
      evidence=evidence.EvidenceConfig(lime_samples=32, ig_steps=4, chunk=16))
  r = evidence_report.run(config)
  saved = json.load(open(tmp_path / "results.json"))
  assert set(saved["table"]) == set(evidence.TOKEN_METHODS) | {"attention", "write_norm",
                                                               "direct_effect"}
  assert set(saved["table"]["shapley"]["induction_toy"]) == {"kendall_tau", "topk_overlap"}
  toy = saved["settings"]["induction_toy"]
  assert set(toy["known_ranks"]) == {"induction", "previous_token"}
  assert set(toy["known_ranks"]["induction"]) == {"attention", "write_norm", "total", "direct"}
  assert len(toy["tokens"]["attributions"]) == 2
  assert np.shape(toy["heads"]["attention"]) == (2, 2)
  for f in r["figures"]:
    assert os.path.exists(f)
  md = open(tmp_path / "report.md").read()
  assert "| attention weight |" in md and "What each kind of evidence licenses" in md
  assert "Known induction head" in md
