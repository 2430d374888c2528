"""IOI and induction heads in bfloat16 against float32 (`--precision`): Gemma 3 270M's IOI logit
differences and its top induction heads; head ablation, path patching, attribution patching
and the IOI circuit search on small models."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.circuits import ablate, icl, patching, scores
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


# Measured: direct effects -0.165 to 0.231 of the clean LD, largest |bf16 - float32| 0.011
# (0.007 in logits on an LD of 0.656, i.e. bfloat16's rounding of the LD, 0.003, twice over);
# 0.05 is 4.6x that and under the 0.12 that separates any two of the toy's four effects.
MAX_RELATIVE_EFFECT_DIFF = 0.05
# Head DLA on the same toy: 0.336, -0.284, 0.331, -0.168 in float32, largest |bf16 - float32|
# 0.0022 (0.7%, about one bfloat16 rounding of the clean logits); 3% of the largest is 4.6x that.
MAX_DLA_DIFF = 0.03


def test_ioi_circuit_search_in_bf16_path_patches_in_bf16():
  """On a random toy with IOI-shaped prompts: the direct effects are path-patched under the
  policy and measured against that policy's clean LD, so bfloat16's are close to float32's
  (not equal: they ran in bfloat16) and rank the heads the same."""
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
  d32, d16 = (np.asarray(out[p]["effects"]["direct"]) for p in ("float32", "bfloat16"))
  b32, b16 = out["float32"]["baseline"], out["bfloat16"]["baseline"]
  gap = float(np.abs(d16 - d32).max())
  print(f"\ntoy IOI baseline LD float32 {b32['logit_diff']:.4f}, bfloat16 {b16['logit_diff']:.4f}; "
        f"direct effects (relative) {np.round(d32, 4).tolist()}, max |bf16 - float32| {gap:.4f}")
  assert not np.array_equal(d16, d32)  # the bfloat16 policy reached path patching
  assert gap <= MAX_RELATIVE_EFFECT_DIFF
  np.testing.assert_array_equal(np.argsort(d16, None), np.argsort(d32, None))  # same ranking
  assert abs(b16["logit_diff"] - b32["logit_diff"]) <= 0.05 * max(abs(b32["logit_diff"]), 0.1)
  # The direct logit attribution reads a forward under the same policy.
  a32, a16 = (np.asarray(out[p]["dla"]) for p in ("float32", "bfloat16"))
  dla_gap = float(np.abs(a16 - a32).max())
  print(f"head DLA (logits) {np.round(a32, 4).tolist()}, max |bf16 - float32| {dla_gap:.4f}")
  assert not np.array_equal(a16, a32)
  assert dla_gap <= MAX_DLA_DIFF * float(np.abs(a32).max())
  np.testing.assert_array_equal(np.sign(a16), np.sign(a32))


# ----- Path and attribution patching in bfloat16 on a small random model (GQA, RoPE, gated MLP).

_PCFG = model_config.TransformerConfig(
    vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_head=8, n_ctx=16, d_mlp=64,
    init_std=0.3, positional="rope", norm="rmsnorm", attn_bias=False, mlp_bias=False,
    tied_embeddings=True, mlp="gated")
# Measured on CPU (jax 0.10.2): bfloat16 moves this model's clean logit difference itself by
# 0.045 (0.186 -> 0.230): bfloat16 keeps 8 significant bits, so every rounded weight and
# residual-stream value is off by up to 2^-9 relative, and that is the floor under any LD and so
# under any effect (a difference of two LDs). Largest |bf16 - float32| measured: path-patching
# effects 0.023 (direct, effects up to 0.56), 0.010 (via queries/keys, up to 0.34); attribution
# estimates 0.024 (up to 1.51). 0.1 is 4x the largest measured gap and 2x the clean LD's own
# rounding, and still under the gaps between the top effects the tests keep apart.
MAX_EFFECT_DIFF = 0.1


_forward = jax.jit(transformer.forward, static_argnums=(0, 5))


@functools.cache
def _patching_setup():
  params = transformer.init_params(_PCFG, jax.random.key(0))
  k1, k2 = jax.random.split(jax.random.key(1))
  base = jax.random.randint(k1, (3, 7), 0, _PCFG.vocab_size)
  source = base.at[:, 2].set(jax.random.randint(k2, (3,), 0, _PCFG.vocab_size))
  metric = patching.logit_diff(jnp.array([[1, 2], [3, 4], [5, 6]]))
  return params, base, source, metric, jnp.full((3, 1), 6)


def _top(effect, k):
  flat = np.where(np.isnan(effect), 0.0, np.abs(effect)).ravel()
  return {tuple(int(i) for i in np.unravel_index(j, effect.shape)) for j in np.argsort(-flat)[:k]}


def test_path_patching_in_bf16_matches_float32():
  """Direct effects (receiver: the logits) and effects via layer-2 queries and keys, each
  relative to the clean LD of its own dtype; float32 is bit-identical to the default."""
  params, base, source, metric, end = _patching_setup()
  senders = tuple((0, h) for h in range(4))
  receivers = ((1, 0, "q"), (1, 1, "k"))
  out, raw = {}, {}
  for p in ("float32", "bfloat16"):
    clean = float(metric(_forward(_PCFG, params, base, None, end, p)[0]))
    raw[p] = patching.path_patching(_PCFG, params, base, source, metric, logits_at=end,
                                    precision=p)
    via = patching.path_patching(_PCFG, params, base, source, metric, receivers=receivers,
                                 logits_at=end, senders=senders, precision=p)
    out[p] = (np.asarray(raw[p]) - clean, np.asarray(via) - clean)
  # One program is enough to show that the float32 policy runs the default's program.
  default = patching.path_patching(_PCFG, params, base, source, metric, logits_at=end)
  np.testing.assert_array_equal(np.asarray(raw["float32"]), np.asarray(default))
  gaps = [float(np.nanmax(np.abs(a - b))) for a, b in zip(out["bfloat16"], out["float32"])]
  print(f"\npath patching |bf16 - float32|: direct {gaps[0]:.4f} (effects up to "
        f"{np.abs(out['float32'][0]).max():.3f}), via q/k {gaps[1]:.4f} (up to "
        f"{np.nanmax(np.abs(out['float32'][1])):.3f})")
  assert out["bfloat16"][0].dtype == np.float32
  assert max(gaps) <= MAX_EFFECT_DIFF
  np.testing.assert_array_equal(np.isnan(out["bfloat16"][1]), np.isnan(out["float32"][1]))
  # The senders that stand out of the rounding: direct effects of 0.56, 0.32 and 0.32 (the
  # next is 0.23), and one sender via q/k at 0.34 (the next is 0.05).
  assert _top(out["bfloat16"][0], 3) == _top(out["float32"][0], 3)
  assert _top(out["bfloat16"][1], 1) == _top(out["float32"][1], 1)


def test_attribution_patching_in_bf16_matches_float32():
  """Every head's estimate; float32 is bit-identical to the default."""
  params, base, source, metric, end = _patching_setup()
  kind = "heads"
  out = {p: patching.attribution_patching(_PCFG, params, base, source, metric, kind,
                                          logits_at=end, precision=p)
         for p in (None, "float32", "bfloat16")}
  for a, b in zip(out["float32"], out[None]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  (v32, e32), (v16, e16) = [[np.asarray(x) for x in out[p]] for p in ("float32", "bfloat16")]
  gap = float(np.abs(e16 - e32).max())
  print(f"\nattribution patching ({kind}) |bf16 - float32| {gap:.4f} (estimates up to "
        f"{np.abs(e32).max():.3f}); base metric {v32:.4f} vs {v16:.4f}")
  assert e16.dtype == v16.dtype == np.float32
  assert gap <= MAX_EFFECT_DIFF and abs(v16 - v32) <= MAX_EFFECT_DIFF
  # Estimates of 1.51 and 0.67 stand out; the next two (0.34, 0.32) are within rounding.
  assert _top(e16, 2) == _top(e32, 2)
