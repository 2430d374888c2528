"""Feature clamping in bfloat16 against float32 (`--precision` of experiments/feature_clamping.py):
the dose-response and the promoted tokens on a small random model with a ReLU SAE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.sae import dictionary
from interp.sae.config import SAEConfig
from interp.steering import clamp as steering
from interp.steering import experiment

CFG = TransformerConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_head=16, n_ctx=32,
                        d_mlp=64, init_std=0.2, tied_embeddings=True, positional="rope")
HOOK = "blocks.1.hook_resid_post"
SAE = SAEConfig(d_in=32, d_sae=48, activation="relu")
# Measured on CPU (jax 0.10.2), doses 0, 2, 8, 32 x one firing latent: largest |bf16 - float32|
# target mass 6.6e-5 (masses 0.021 to 0.219), KL 5.3e-4 (KL 0.011 to 1.07), held-out loss 2.7e-3
# (losses 4.32 to 4.75). bfloat16 keeps 8 significant bits (2^-9 relative rounding of the
# residual stream), so logits move by ~1e-2 and these averages by less; each tolerance is 7-19x
# its measured gap and still under the dose-response's smallest step (mass +0.021, KL +0.028).
TOL = {"target_prob": 1e-3, "kl": 0.01, "loss": 0.02, "loss_unclamped": 0.02}


def test_dose_response_in_bf16_matches_float32():
  params = transformer.init_params(CFG, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, CFG.vocab_size)
  _, cache = transformer.run_with_cache(CFG, params, tokens, [HOOK])
  sae = dictionary.init(SAE, jax.random.key(2), cache[HOOK].reshape(-1, 32))
  latent = int(jnp.argmax((dictionary.encode(SAE, sae, cache[HOOK]) > 0).mean((0, 1))))
  targets = jnp.asarray(steering.output_tokens(CFG, params, sae, latent, k=3))
  mask = jnp.ones(tokens.shape, bool)
  doses = jnp.array([[0.0], [2.0], [8.0], [32.0]])
  out = {p: {k: np.asarray(v) for k, v in steering.dose_response(
      CFG, params, SAE, sae, HOOK, jnp.array([latent]), doses, tokens, mask, tokens, mask,
      targets, p).items()} for p in ("float32", "bfloat16")}
  gaps = {k: float(np.abs(out["bfloat16"][k] - out["float32"][k]).max()) for k in TOL}
  print(f"\ndose-response |bf16 - float32|: {gaps}; float32 "
        f"{ {k: np.round(v, 4).tolist() for k, v in out['float32'].items()} }")
  for k in TOL:
    assert out["bfloat16"][k].dtype == np.float32
    assert gaps[k] <= TOL[k], (k, gaps[k])
  # The dose-response keeps its shape: more mass on the output tokens and more KL per dose.
  assert np.all(np.diff(out["bfloat16"]["target_prob"][1:]) > 0)
  assert np.all(np.diff(out["bfloat16"]["kl"][1:]) > 0)


def test_clamp_config_checks_precision(tmp_path):
  (tmp_path / "sae_config.json").write_text("{}")
  with pytest.raises(ValueError, match=r"^--precision='fp16' is not one of: auto, float32, "):
    experiment.ClampConfig(workdir="w", sae_dir=str(tmp_path), precision="fp16")
  assert experiment.ClampConfig(workdir="w", sae_dir=str(tmp_path)).precision == "auto"
