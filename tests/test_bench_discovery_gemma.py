"""The Gemma 3 row's weight mapping and reference: interp's Gemma 3 forward and EAP-IG scores
equal `transformers`' Gemma 3 model (TL bridge hooks) on a tiny random Gemma-3-shaped model."""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest
from scipy import stats

from interp.bench import discovery, discovery_gemma, discovery_sides, forward, patching_sides

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                reason="transformers (and torch) needed for the reference")

# 2 layers: a sliding-window layer (RoPE base 10k), then a global one (base 1M).
TINY = discovery_gemma.shape(forward.ModelShape, name="gemma3_tiny", d_model=32, n_layers=2,
                             n_heads=4, d_mlp=64, vocab=64, ctx=6, batch=2)


@pytest.fixture(scope="module")
def tiny():
  weights = discovery_gemma.random_weights(TINY, 0)
  return weights, patching_sides.prompts(TINY, 0)


def test_interp_forward_matches_transformers_gemma3(tiny):
  import jax
  import jax.numpy as jnp
  import torch
  from interp.models import transformer
  weights, data = tiny
  model = discovery_gemma.hf_model(TINY, weights)
  with torch.no_grad():
    ref = model(input_ids=torch.from_numpy(data["source"]).long()).logits.numpy()
  params = jax.tree.map(jnp.asarray, discovery_gemma.params_from_hf(TINY, weights))
  logits = transformer.forward(discovery_gemma.interp_config(TINY), params,
                               jnp.asarray(data["source"]))[0]
  assert ref.shape == (2, 6, 64) and np.abs(ref).max() > 0.1  # not all zero
  np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4)
  layer_types = model.config.layer_types
  assert layer_types == ["sliding_attention", "full_attention"], layer_types


def test_eap_ig_scores_match_the_tl_bridge_reference(tiny):
  weights, data = tiny
  cfg = types.SimpleNamespace(steps=3, reps=1, tl_reps=1, chunk=0, curve_points=4, threads=1)
  si = np.asarray(discovery_sides.run_interp(TINY, cfg, weights, data)["scores"])
  st = np.asarray(discovery_sides.run_tl(TINY, cfg, weights, data)["scores"])
  # embed + 2 layers x (4 heads + MLP) upstream; 2 x (attention, MLP) + logits merged receivers.
  assert si.shape == st.shape == (1 + 2 * 5, 2 * 2 + 1)
  assert np.abs(st).max() > 1e-3
  assert np.abs(si - st).max() <= discovery.PARITY_TOLERANCE * np.abs(st).max()
  # Both sides in bfloat16 (`--precision=bfloat16`): each rounds on its own, so parity is
  # looser, and the ranking of edges is what must hold.
  cfg.precision = "bfloat16"
  bi = np.asarray(discovery_sides.run_interp(TINY, cfg, weights, data)["scores"])
  bt = np.asarray(discovery_sides.run_tl(TINY, cfg, weights, data)["scores"])
  tol = discovery.parity_tolerance("bfloat16") * np.abs(st).max()
  assert 0 < np.abs(bi - si).max() <= tol and np.abs(bt - st).max() <= tol
  assert np.abs(bi - bt).max() <= tol
  valid = st != 0
  assert stats.spearmanr(bi[valid], bt[valid]).statistic > 0.99


def test_gemma_row_is_asked_for_not_run_by_default():
  spec = discovery.model_shapes(["gemma3_270m"], quick=False)[0]
  assert (spec.d_model, spec.n_layers, spec.vocab, spec.batch) == (640, 18, 262_144, 16)
  assert discovery_gemma.d_head(spec) == 256
  assert "gemma3_270m" not in discovery.DEFAULT_MODELS
  with pytest.raises(ValueError, match="gemma3_270m"):
    discovery.model_shapes(["gemma3"], quick=False)
