"""IOI and induction heads in bfloat16 against float32 (`--precision`): Gemma 3 270M's IOI logit
differences and its top induction heads, and head ablation on a small model."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from interp.circuits import ablate, icl, scores
from interp.induction import experiment as induction
from interp.induction import segments
from interp.ioi import circuit as ioi
from interp.ioi import experiment as ioi_experiment
from interp.ioi import prompts as ioi_data
from interp.models import config as model_config
from interp.models import transformer

N_PROMPTS = 6
# Measured on CPU (jax 0.10.2), 6 prompts: float32 LDs 3.45 to 6.65 (mean 4.611), bfloat16
# mean 4.605, largest |bf16 - float32| 0.107 (every sign the same). bfloat16 moves Gemma's logits by up to ~0.5
# on corpus text (tests/test_precision.py), but a logit difference cancels most of that shared
# error; 0.5 is about 5x the measured gap, and the sign is checked on its own.
MAX_LD_DIFF = 0.5


def test_gemma_ioi_logit_difference_in_bf16(gemma, gemma_tokenizer):
  cfg, params = gemma
  data = ioi_data.generate(gemma_tokenizer, N_PROMPTS, seed=0)
  f32 = ioi.logit_diffs(cfg, params, data, "float32")
  bf16 = ioi.logit_diffs(cfg, params, data, "bfloat16")
  diff = float(np.abs(f32 - bf16).max())
  print(f"\nIOI logit diff float32 {np.round(f32, 3).tolist()} (mean {f32.mean():.3f})\n"
        f"             bfloat16 {np.round(bf16, 3).tolist()} (mean {bf16.mean():.3f}); "
        f"max |diff| {diff:.3f}")
  assert f32.dtype == bf16.dtype == np.float32
  assert (np.sign(f32) == np.sign(bf16)).all()
  assert diff <= MAX_LD_DIFF


TOP_K, BATCH, SEG = 3, 4, 24


def test_gemma_top_induction_heads_same_in_bf16(gemma, gemma_tokenizer):
  """Top heads by prefix-matching score on repeated random tokens (ids 1000-20000, ordinary
  words, as `interp.induction.gemma` draws them)."""
  cfg, params = gemma
  tokens = segments.repeated_tokens(jax.random.key(0), BATCH, SEG, 20000, low=1000,
                                    bos=gemma_tokenizer.bos_id)
  top, values = {}, {}
  for name in ("float32", "bfloat16"):
    s = np.asarray(scores.head_scores(cfg, params, tokens, name)["prefix_matching"])
    order = np.argsort(-s, axis=None)[:TOP_K]
    top[name] = [tuple(int(i) for i in np.unravel_index(j, s.shape)) for j in order]
    values[name] = s.flat[order]
  print(f"\ntop {TOP_K} induction heads (layer, head): float32 {top['float32']} scores "
        f"{np.round(values['float32'], 4).tolist()}; bfloat16 {top['bfloat16']} scores "
        f"{np.round(values['bfloat16'], 4).tolist()}")
  assert top["float32"] == top["bfloat16"]
  np.testing.assert_allclose(values["bfloat16"], values["float32"], atol=0.02)


@functools.cache
def _toy():
  cfg = model_config.attn_only(vocab_size=32, n_layers=2, d_model=32, n_heads=4, n_ctx=32,
                               norm="layernorm", positional="learned")
  return cfg, transformer.init_params(cfg, jax.random.key(0))


def test_mean_ablation_in_bf16_matches_float32():
  """Every head mean-ablated alone on a random 2-layer model (the fill values come from a
  bfloat16 forward too): the loss with each head gone, in both dtypes. Measured: largest
  difference 6.7e-5 on losses of 3.46 (zero ablation: 3.5e-5)."""
  cfg, params, mode = *_toy(), "mean"
  tokens = segments.repeated_tokens(jax.random.key(1), 4, 12, 32)
  loss = lambda logits, t: icl.token_losses(logits, t).mean()
  out = {p: np.asarray(ablate.ablate_each_head(cfg, params, tokens, loss, mode=mode,
                                               precision=p))
         for p in ("float32", "bfloat16")}
  diff = float(np.abs(out["float32"] - out["bfloat16"]).max())
  print(f"\n{mode} ablation, each head: max |loss bf16 - float32| {diff:.2e} "
        f"(losses {out['float32'].min():.3f}-{out['float32'].max():.3f})")
  assert out["bfloat16"].dtype == np.float32 and out["float32"].shape == (2, 4)
  assert diff <= 1e-3


def test_precision_flags_are_checked():
  with pytest.raises(ValueError, match=r"^--precision='fp16' is not one of: auto, float32, "):
    ioi_experiment.IOIConfig(workdir="w", precision="fp16")
  with pytest.raises(ValueError, match=r"^--precision='half' is not one of: auto, float32, "):
    induction.InductionConfig(workdir="w", precision="half")
  assert ioi_experiment.IOIConfig(workdir="w").precision == "auto"


def test_ioi_circuit_search_in_bf16_keeps_float32_patching_effects():
  """On a random toy with IOI-shaped prompts: path patching runs in float32 and its effects are
  measured against the float32 clean LD, so they are identical under either policy; the
  bfloat16 baseline is close (measured: LD 0.6526 against 0.6557)."""
  cfg = model_config.TransformerConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2,
                                       d_head=16, n_ctx=64, d_mlp=64, init_std=0.3)
  params = transformer.init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 300, (6, 12)).astype(np.int32)
  corrupt = tokens.copy()
  corrupt[:, 3] = rng.integers(0, 300, 6)
  roles = np.tile(np.array([[2, 3, 4, 8, 11]], np.int32), (6, 1))
  data = ioi_data.IOIData(tokens, corrupt, np.array([[5, 6]] * 6, np.int32), roles,
                          np.array([0, 0, 0, 1, 1, 1], np.int32), np.array([1, 0] * 3, bool),
                          ("",) * 6)
  # A threshold nothing reaches: only the direct effects are path-patched (one program).
  config = ioi.CircuitConfig(threshold=100.0)
  out = {p: ioi.find_circuit(cfg, params, data, config, precision=p)[0]
         for p in ("float32", "bfloat16")}
  assert out["bfloat16"]["effects"] == out["float32"]["effects"]
  b32, b16 = out["float32"]["baseline"], out["bfloat16"]["baseline"]
  print(f"\ntoy IOI baseline LD float32 {b32['logit_diff']:.4f}, bfloat16 {b16['logit_diff']:.4f}")
  assert abs(b16["logit_diff"] - b32["logit_diff"]) <= 0.05 * max(abs(b32["logit_diff"]), 0.1)
