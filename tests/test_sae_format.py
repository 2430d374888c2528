"""SAELens-format files (interp.sae.saelens_format) checked against SAELens 6.54.12 itself.

Ours -> SAELens: every rule is saved with our writer (input scale != 1, random biases and
thresholds) and read by `sae_lens.SAE.load_from_disk`; its encode / decode / forward on raw
inputs equal `dictionary.encode / decode / reconstruct`. SAELens -> ours: random-weight
StandardSAE, TopKSAE, JumpReLUSAE and GatedSAE written by `save_model` load with our reader and
compute the same. Our save -> our load is the identity. SAELens comes from
requirements-saelens.txt through tests/saelens_compat.py; without it those tests skip.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.sae import dictionary as dic
from interp.sae import saelens_format as fmt
from interp.sae.config import SAEConfig

D_IN, D_SAE = 16, 64
CONFIGS = {
    "relu": SAEConfig(D_IN, D_SAE, activation="relu"),
    "relu_weighted": SAEConfig(D_IN, D_SAE, activation="relu", decoder_norm="weighted"),
    "topk": SAEConfig(D_IN, D_SAE, activation="topk", k=8),
    "jumprelu": SAEConfig(D_IN, D_SAE, activation="jumprelu"),
    "gated": SAEConfig(D_IN, D_SAE, activation="gated"),
    "batchtopk": SAEConfig(D_IN, D_SAE, activation="batchtopk", k=8),
    "matryoshka_batchtopk": SAEConfig(D_IN, D_SAE, activation="batchtopk", k=8,
                                      matryoshka=(8, 32)),
}


@pytest.fixture(scope="module")
def sae_lens():
  from tests.saelens_compat import import_sae_lens
  try:
    return import_sae_lens()
  except ImportError as e:
    pytest.skip(f"sae_lens cannot be imported ({e}); install it with "
                f"`pip install --no-deps -r requirements-saelens.txt`")


def _inputs(seed: int = 1, n: int = 32) -> np.ndarray:
  """Raw activations far from unit scale, so a wrong norm_scale fold shows."""
  rng = np.random.default_rng(seed)
  return (3.0 * rng.normal(size=(n, D_IN)) + 0.5).astype(np.float32)


def _random_params(cfg: SAEConfig, seed: int = 0) -> dict:
  """Ours with every parameter random (init's zeros would hide biases) and norm_scale != 1."""
  params = dic.init(cfg, jax.random.key(seed), jnp.asarray(_inputs(seed + 100, 256)))
  assert abs(float(params["norm_scale"]) - 1) > 0.5
  rng = np.random.default_rng(seed)
  out = dict(params)
  for name in dic.trainable_names(cfg):
    noise = rng.normal(size=params[name].shape).astype(np.float32)
    out[name] = params[name] + (0.2 if name == "r_mag" else 0.3) * noise
  if cfg.activation.value == "jumprelu":
    out["jump_threshold"] = jnp.asarray(rng.uniform(0.05, 0.5, D_SAE), jnp.float32)
  if cfg.activation.value == "batchtopk":
    out["threshold"] = jnp.float32(0.4)
  return out


def _close(actual, desired, what):
  actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
  scale = max(np.abs(desired).max(), 1e-6)
  np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def _torch(x):
  import torch
  return torch.from_numpy(np.array(x, np.float32))  # a writable copy


def _numpy(t):
  return t.detach().cpu().numpy()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ours_loads_in_saelens(name, sae_lens, tmp_path):
  import torch
  cfg = CONFIGS[name]
  params = _random_params(cfg)
  folder = fmt.save(cfg, params, str(tmp_path / name), hook_name="blocks.0.hook_resid_post",
                    model_name="toy", extra_metadata={"context_size": 128})
  sae = sae_lens.SAE.load_from_disk(folder)
  assert sae.cfg.architecture() == fmt.architecture(cfg)
  assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
  x = _inputs()
  ours_f = dic.encode(cfg, params, jnp.asarray(x))
  assert 0 < float(jnp.mean(ours_f > 0)) < 1, "the test needs some but not all latents active"
  with torch.no_grad():
    _close(_numpy(sae.encode(_torch(x))), ours_f, f"{name}: encode")
    _close(_numpy(sae.decode(_torch(ours_f))), dic.decode(cfg, params, ours_f), f"{name}: decode")
    _close(_numpy(sae(_torch(x))), dic.reconstruct(cfg, params, jnp.asarray(x)),
           f"{name}: forward")


def _randomise(sae, seed: int):
  import torch
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for pname, p in sae.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if pname == "threshold":  # positive, plus one latent at 0 and one below (a plain ReLU)
        noise = noise.abs() * 0.3
        noise[0], noise[1] = 0.0, -0.2
      p.copy_(noise * (0.2 if pname == "r_mag" else 0.5))


SAELENS_CASES = {
    "standard": ("StandardSAE", "StandardSAEConfig", {}),
    "standard_no_b_dec_in": ("StandardSAE", "StandardSAEConfig", {"apply_b_dec_to_input": False}),
    "topk": ("TopKSAE", "TopKSAEConfig", {"k": 8}),
    "topk_rescaled": ("TopKSAE", "TopKSAEConfig", {"k": 8, "rescale_acts_by_decoder_norm": True}),
    "jumprelu": ("JumpReLUSAE", "JumpReLUSAEConfig", {}),
    "gated": ("GatedSAE", "GatedSAEConfig", {}),
    "gated_no_b_dec_in": ("GatedSAE", "GatedSAEConfig", {"apply_b_dec_to_input": False}),
}


@pytest.mark.parametrize("name", list(SAELENS_CASES))
def test_saelens_loads_in_ours(name, sae_lens, tmp_path):
  import torch
  cls, cfg_cls, kwargs = SAELENS_CASES[name]
  sae = getattr(sae_lens, cls)(getattr(sae_lens, cfg_cls)(d_in=D_IN, d_sae=D_SAE, **kwargs))
  _randomise(sae, seed=len(name))
  sae.save_model(str(tmp_path))
  cfg, params = fmt.load(str(tmp_path))
  assert float(params["norm_scale"]) == 1.0
  assert set(params) == set(dic.init(cfg, jax.random.key(0)))
  x = _inputs()
  ours_f = dic.encode(cfg, params, jnp.asarray(x))
  assert 0 < float(jnp.mean(ours_f > 0)) < 1
  with torch.no_grad():
    _close(ours_f, _numpy(sae.encode(_torch(x))), f"{name}: encode")
    _close(dic.decode(cfg, params, ours_f), _numpy(sae.decode(_torch(ours_f))), f"{name}: decode")
    _close(dic.reconstruct(cfg, params, jnp.asarray(x)), _numpy(sae(_torch(x))),
           f"{name}: forward")


def test_saelens_batchtopk_loads_as_batchtopk(sae_lens, tmp_path):
  """SAELens saves BatchTopK as JumpReLU with one shared threshold; we read it back as BatchTopK."""
  import torch
  sae = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE,
                                                                          k=8))
  _randomise(sae, seed=3)
  sae.topk_threshold = torch.tensor(0.3, dtype=torch.double)
  sae.save_inference_model(str(tmp_path))
  cfg, params = fmt.load(str(tmp_path))
  assert cfg.activation.value == "batchtopk" and cfg.k == 8
  np.testing.assert_allclose(float(params["threshold"]), 0.3, rtol=1e-6)
  reference = sae_lens.SAE.load_from_disk(str(tmp_path))  # a JumpReLUSAE
  x = _inputs()
  ours_f = dic.encode(cfg, params, jnp.asarray(x))
  assert 0 < float(jnp.mean(ours_f > 0)) < 1
  with torch.no_grad():
    _close(ours_f, _numpy(reference.encode(_torch(x))), "encode")
    _close(dic.reconstruct(cfg, params, jnp.asarray(x)), _numpy(reference(_torch(x))), "forward")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_our_save_then_load_is_identity(name, tmp_path):
  cfg = CONFIGS[name]
  params = _random_params(cfg)
  fmt.save(cfg, params, str(tmp_path), hook_name="blocks.0.hook_resid_post")
  cfg2, params2 = fmt.load(str(tmp_path))
  assert cfg2 == cfg
  assert set(params2) == set(params)
  for key, value in params.items():
    if key == "fired_ago":  # training bookkeeping; restarts at 0
      assert not np.any(np.asarray(params2[key]))
      continue
    np.testing.assert_allclose(np.asarray(params2[key]), np.asarray(value), rtol=1e-6,
                               atol=1e-7, err_msg=key)


def test_clear_errors(tmp_path):
  cfg = CONFIGS["topk"]
  folder = str(tmp_path / "sae")
  with pytest.raises(FileNotFoundError, match="cfg.json"):
    fmt.load(folder)
  fmt.save(cfg, _random_params(cfg), folder, hook_name="h")
  cfg_path = os.path.join(folder, "cfg.json")
  original = json.load(open(cfg_path))

  def rewrite(**changes):
    json.dump({**original, **changes}, open(cfg_path, "w"))

  rewrite(architecture="abstopk")
  with pytest.raises(ValueError, match=r"cfg\.json: architecture 'abstopk' is not supported; "
                                       r"supported: standard, topk, jumprelu, gated"):
    fmt.load(folder)
  rewrite(d_in=D_IN + 1)
  with pytest.raises(ValueError, match=r"sae_weights\.safetensors: .* but .*cfg\.json says "
                                       r"d_in=17"):
    fmt.load(folder)
  rewrite(k=D_SAE + 1, metadata={})
  with pytest.raises(ValueError, match=r"cfg\.json: --k=65 must be between 1"):
    fmt.load(folder)
  os.remove(os.path.join(folder, "sae_weights.safetensors"))
  with pytest.raises(FileNotFoundError, match="sae_weights.safetensors does not exist"):
    fmt.load(folder)
  bad = dict(_random_params(cfg), W_dec=jnp.zeros((D_SAE, D_IN + 1)))
  with pytest.raises(ValueError, match="parameter 'W_dec' has shape"):
    fmt.save(cfg, bad, folder, hook_name="h")
  with pytest.raises(ValueError, match="extra_metadata may not set"):
    fmt.save(cfg, _random_params(cfg), folder, hook_name="h", extra_metadata={"hook_name": "x"})
