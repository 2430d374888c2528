"""Dictionaries in SAELens's on-disk format: a folder with `sae_weights.safetensors` + `cfg.json`.

The files are what SAELens 6.54's `SAE.save_model` writes and `SAE.load_from_disk` reads: the
weights under SAELens's names (`W_enc` [d_in, d_sae], `b_enc`, `W_dec` [d_sae, d_in], `b_dec`,
plus `threshold` for jumprelu and `b_gate`, `r_mag`, `b_mag` for gated, none of them missing or
extra), and a config with d_in, d_sae, dtype, device, apply_b_dec_to_input,
normalize_activations, reshape_activations, metadata, architecture (and k,
rescale_acts_by_decoder_norm for topk).

Our rule -> SAELens architecture (inference is identical; training-only fields go to metadata):
  relu                      -> standard
  topk                      -> topk (k; rescale_acts_by_decoder_norm false)
  jumprelu                  -> jumprelu, threshold = jump_threshold
  gated                     -> gated
  batchtopk (+ matryoshka)  -> jumprelu with every latent's threshold = the learned BatchTopK
                               inference threshold (what SAELens writes for its BatchTopK)
Matryoshka only changes the training loss, so a Matryoshka dictionary saves as its rule does.

The input scale is folded into the weights. Ours, with c = norm_scale:
  f = act((c x - b_dec) W_enc + b_enc),   x_hat = (f W_dec + b_dec) / c.
Since (c x - b_dec) W_enc = (x - b_dec / c)(c W_enc), SAELens's
  f = act((x - b_dec') W_enc' + b_enc'),  x_hat = f W_dec' + b_dec'
computes the same f and x_hat from raw activations x with
  W_enc' = c W_enc,  b_dec' = b_dec / c,  W_dec' = W_dec / c,  b_enc' = b_enc,
and every pre-activation-space parameter (b_enc, thresholds, b_gate, b_mag, r_mag: the gated
magnitude path uses W_enc' e^r_mag = c W_enc e^r_mag) unchanged. This is SAELens's own
`fold_activation_norm_scaling_factor`. SAELens's `normalize_activations="expected_average_only_in"`
cannot carry c instead: `load_from_disk` applies no scale for it. The fold is done in float64.

`load` reads any SAELens file of the four architectures (norm_scale 1; a topk file with
rescale_acts_by_decoder_norm has the decoder norms folded in, one with apply_b_dec_to_input false
gets b_dec @ W_enc moved into the encoder biases, jumprelu thresholds <= 0 become
jump_threshold = 0, i.e. a plain ReLU for that latent, exactly as SAELens computes it). A file
written by `save` also carries `metadata.interp` (our SAEConfig and c): when it agrees with the
file, `load` restores that config and un-folds c, so save -> load returns the same parameters
(to float32 rounding) and buffers, except the dead-latent counters `fired_ago`, which restart at
0. Plain SAELens files load with `decoder_norm=weighted` (decoder rows kept as stored) and
`normalize_input=False`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from interp.sae.config import Activation, DecoderNorm, SAEConfig

WEIGHTS_FILENAME = "sae_weights.safetensors"
CONFIG_FILENAME = "cfg.json"
SAELENS_VERSION = "6.54.12"  # the format written (SAELens reads files of >= 6.0 as they are)
ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
FORMAT_VERSION = 1           # of metadata.interp
_RESERVED_METADATA = ("sae_lens_version", "sae_lens_training_version", "model_name", "hook_name",
                      "training_architecture", "interp")
_TENSORS = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"),
}


def architecture(cfg: SAEConfig) -> str:
  """The SAELens inference architecture our rule saves as."""
  return {Activation.RELU: "standard", Activation.TOPK: "topk", Activation.JUMPRELU: "jumprelu",
          Activation.GATED: "gated", Activation.BATCHTOPK: "jumprelu"}[cfg.activation]


def _training_architecture(cfg: SAEConfig) -> str:
  """SAELens's name for the training architecture (its metadata.training_architecture)."""
  if cfg.activation == Activation.BATCHTOPK:
    return "matryoshka_batchtopk" if cfg.matryoshka else "batchtopk"
  return architecture(cfg)


def _shapes(arch: str, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
  full = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
  return {name: full.get(name, (d_sae,)) for name in _TENSORS[arch]}


def _host(params: dict) -> dict[str, np.ndarray]:
  return {k: np.asarray(v, np.float64) for k, v in params.items() if k != "fired_ago"}


# ---------------------------------------------------------------------------------------------
# Ours -> SAELens


def to_saelens(cfg: SAEConfig, params: dict) -> dict[str, np.ndarray]:
  """SAELens's float32 tensors for our parameters, with norm_scale folded in (module doc).

  Args:
    cfg: the dictionary's config.
    params: its parameters and buffers (as from `dictionary.init` or training), fully
      addressable (host arrays, or device arrays of this process).

  Returns:
    {SAELens name: float32 array}, exactly the tensors `architecture(cfg)` has.
  """
  arch = architecture(cfg)
  p = _host(params)
  own = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,),
         "norm_scale": ()}
  needed = [n for n in _TENSORS[arch] if n != "threshold"]
  needed += ["norm_scale"] + (["jump_threshold"] if cfg.activation == Activation.JUMPRELU else [])
  needed += ["threshold"] if cfg.activation == Activation.BATCHTOPK else []
  for name in needed:
    want = own.get(name, (cfg.d_sae,) if name != "threshold" else ())
    if name not in p:
      raise ValueError(f"cannot save a {cfg.activation.value} dictionary without parameter "
                       f"{name!r} (have {sorted(p)})")
    if p[name].shape != want:
      raise ValueError(f"parameter {name!r} has shape {p[name].shape}, but the config (d_in="
                       f"{cfg.d_in}, d_sae={cfg.d_sae}) needs {want}")
  c = float(p["norm_scale"])
  if not np.isfinite(c) or c <= 0:
    raise ValueError(f"norm_scale={c} must be a positive finite number")
  out = {name: p[name] for name in _TENSORS[arch] if name in p}
  out.update(W_enc=p["W_enc"] * c, W_dec=p["W_dec"] / c, b_dec=p["b_dec"] / c)
  if cfg.activation == Activation.JUMPRELU:
    out["threshold"] = p["jump_threshold"]
  elif cfg.activation == Activation.BATCHTOPK:
    out["threshold"] = np.full((cfg.d_sae,), float(p["threshold"]))
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def saelens_config(cfg: SAEConfig, *, hook_name: str, model_name: str = "",
                   extra_metadata: dict[str, Any] | None = None,
                   norm_scale: float = 1.0) -> dict[str, Any]:
  """The cfg.json dict SAELens 6.54 writes for the same SAE (plus metadata.interp)."""
  extra = dict(extra_metadata or {})
  clash = sorted(set(extra) & set(_RESERVED_METADATA))
  if clash:
    raise ValueError(f"extra_metadata may not set {clash}: save() writes them")
  metadata = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None,
              "model_name": model_name, "hook_name": hook_name, **extra,
              "training_architecture": _training_architecture(cfg),
              "interp": {"format_version": FORMAT_VERSION, "sae_config": cfg.to_dict(),
                         "norm_scale": norm_scale}}
  out = {"d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
         "apply_b_dec_to_input": True, "normalize_activations": "none",
         "reshape_activations": "none", "metadata": metadata}
  if architecture(cfg) == "topk":
    out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
  out["architecture"] = architecture(cfg)
  return out


def save(cfg: SAEConfig, params: dict, folder: str, *, hook_name: str, model_name: str = "",
         extra_metadata: dict[str, Any] | None = None) -> str:
  """Writes the dictionary as a SAELens folder (`sae_weights.safetensors` + `cfg.json`).

  `sae_lens.SAE.load_from_disk(folder)` then gives an SAE whose encode / decode / forward on raw
  activations equal ours (`dictionary.encode` / `decode` / `reconstruct`).

  Args:
    cfg: the dictionary's config.
    params: its parameters and buffers, fully addressable (e.g. `train.load_params`).
    folder: created if missing; the two files in it are replaced.
    hook_name: the hook site the dictionary reads (SAELens metadata, e.g.
      "blocks.6.hook_resid_post").
    model_name: the model it was trained on (SAELens metadata).
    extra_metadata: more SAELens metadata (e.g. context_size, prepend_bos, dataset_path).

  Returns:
    The folder.
  """
  from safetensors.numpy import save_file
  tensors = to_saelens(cfg, params)
  config = saelens_config(cfg, hook_name=hook_name, model_name=model_name,
                          extra_metadata=extra_metadata,
                          norm_scale=float(np.asarray(params["norm_scale"])))
  os.makedirs(folder, exist_ok=True)
  save_file(tensors, os.path.join(folder, WEIGHTS_FILENAME))
  with open(os.path.join(folder, CONFIG_FILENAME), "w") as f:
    json.dump(config, f, indent=1)
  return folder


# ---------------------------------------------------------------------------------------------
# SAELens -> ours


def _read(folder: str) -> tuple[dict, dict[str, np.ndarray], str, str]:
  from safetensors.numpy import load_file
  cfg_path = os.path.join(folder, CONFIG_FILENAME)
  weights_path = os.path.join(folder, WEIGHTS_FILENAME)
  for path in (cfg_path, weights_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} does not exist: a SAELens folder holds {CONFIG_FILENAME} "
                              f"and {WEIGHTS_FILENAME}")
  with open(cfg_path) as f:
    try:
      cfg_dict = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
  tensors = {k: np.asarray(v, np.float64) for k, v in load_file(weights_path).items()}
  return cfg_dict, tensors, cfg_path, weights_path


def _check(cfg_dict: dict, tensors: dict, cfg_path: str, weights_path: str) -> str:
  arch = cfg_dict.get("architecture", "standard")  # SAELens's own default for old files
  if arch not in _TENSORS:
    raise ValueError(f"{cfg_path}: architecture {arch!r} is not supported; supported: "
                     f"{', '.join(ARCHITECTURES)}")
  for key in ("d_in", "d_sae"):
    if not isinstance(cfg_dict.get(key), int) or cfg_dict[key] <= 0:
      raise ValueError(f"{cfg_path}: {key} must be a positive integer, got {cfg_dict.get(key)!r}")
  norm = cfg_dict.get("normalize_activations", "none")
  if norm not in ("none", "expected_average_only_in"):
    raise ValueError(f"{cfg_path}: normalize_activations={norm!r} rescales each input at run "
                     f"time, which a fixed dictionary cannot reproduce; supported: none, "
                     f"expected_average_only_in (a no-op in SAELens's load_from_disk too)")
  scaling = tensors.pop("scaling_factor", None)
  if scaling is not None and not np.allclose(scaling, 1.0):
    raise ValueError(f"{weights_path}: a finetuning scaling_factor other than 1 is not supported")
  want = _shapes(arch, cfg_dict["d_in"], cfg_dict["d_sae"])
  missing = sorted(set(want) - set(tensors))
  extra = sorted(set(tensors) - set(want))
  if arch == "jumprelu" and missing == ["threshold"] and "log_threshold" in tensors:
    tensors["threshold"] = np.exp(tensors.pop("log_threshold"))  # older SAELens files
    missing, extra = [], sorted(set(tensors) - set(want))
  if missing or extra:
    raise ValueError(f"{weights_path}: a {arch!r} SAE needs tensors {sorted(want)}; missing "
                     f"{missing}, unexpected {extra}")
  for name, shape in want.items():
    if tensors[name].shape != shape:
      raise ValueError(f"{weights_path}: {name} has shape {tensors[name].shape}, but {cfg_path} "
                       f"says d_in={cfg_dict['d_in']}, d_sae={cfg_dict['d_sae']}, so it must be "
                       f"{shape}")
  return arch


def _plain_config(arch: str, cfg_dict: dict, tensors: dict, cfg_path: str) -> SAEConfig:
  """Our config for a SAELens file (no interp metadata, or metadata that disagrees)."""
  try:
    return _plain_config_unchecked(arch, cfg_dict, tensors)
  except ValueError as e:
    raise ValueError(f"{cfg_path}: {e}") from None


def _plain_config_unchecked(arch: str, cfg_dict: dict, tensors: dict) -> SAEConfig:
  base = dict(d_in=cfg_dict["d_in"], d_sae=cfg_dict["d_sae"], normalize_input=False,
              decoder_norm=DecoderNorm.WEIGHTED)
  meta = cfg_dict.get("metadata") or {}
  if arch == "topk":
    k = cfg_dict.get("k", 100)  # SAELens's default
    if float(k) != int(k):
      raise ValueError(f"k={k!r} must be an integer")
    return SAEConfig(activation=Activation.TOPK, k=int(k), **base)
  if arch == "jumprelu" and meta.get("training_architecture") == "batchtopk":
    k = (meta.get("training_architecture_details") or {}).get("k")
    thr = tensors["threshold"]
    if k is not None and float(k) == int(k) and 0 < k <= base["d_sae"] and np.all(thr == thr[0]) \
        and thr[0] >= 0:
      return SAEConfig(activation=Activation.BATCHTOPK, k=int(k), **base)
  rule = {"standard": Activation.RELU, "jumprelu": Activation.JUMPRELU,
          "gated": Activation.GATED}[arch]
  return SAEConfig(activation=rule, **base)


def _interp_config(arch: str, cfg_dict: dict, tensors: dict) -> tuple[SAEConfig, float] | None:
  """(our config, c) from metadata.interp when present and consistent with the file, else None."""
  info = (cfg_dict.get("metadata") or {}).get("interp")
  if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
    return None
  try:
    cfg = SAEConfig.from_dict(info["sae_config"])
    c = float(info["norm_scale"])
  except (KeyError, TypeError, ValueError):
    return None
  thr = tensors.get("threshold")
  consistent = (
      cfg.d_in == cfg_dict["d_in"] and cfg.d_sae == cfg_dict["d_sae"] and
      architecture(cfg) == arch and np.isfinite(c) and c > 0 and
      cfg_dict.get("apply_b_dec_to_input", True) and
      not (arch == "topk" and (cfg.k != cfg_dict.get("k") or
                               cfg_dict.get("rescale_acts_by_decoder_norm", False))) and
      not (cfg.activation == Activation.JUMPRELU and not np.all(thr > 0)) and
      not (cfg.activation == Activation.BATCHTOPK and not (np.all(thr == thr[0]) and thr[0] >= 0)))
  return (cfg, c) if consistent else None


def from_saelens(cfg_dict: dict, tensors: dict[str, np.ndarray], *, source: str = "<memory>"
                 ) -> tuple[SAEConfig, dict]:
  """Our (config, params) from a SAELens config dict and its tensors (see `load`)."""
  import jax.numpy as jnp
  tensors = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
  cfg_path = os.path.join(source, CONFIG_FILENAME)
  arch = _check(cfg_dict, tensors, cfg_path, os.path.join(source, WEIGHTS_FILENAME))
  t = dict(tensors)
  ours = _interp_config(arch, cfg_dict, t)
  cfg, c = ours if ours else (_plain_config(arch, cfg_dict, t, cfg_path), 1.0)
  if not cfg_dict.get("apply_b_dec_to_input", True):  # move b_dec @ W_enc into the biases
    shift = t["b_dec"] @ t["W_enc"]
    if arch == "gated":
      t["b_gate"] = t["b_gate"] + shift
      t["b_mag"] = t["b_mag"] + shift * np.exp(t["r_mag"])
    else:
      t["b_enc"] = t["b_enc"] + shift
  if arch == "topk" and cfg_dict.get("rescale_acts_by_decoder_norm", False):
    norms = np.maximum(np.linalg.norm(t["W_dec"], axis=-1), 1e-8)  # SAELens's _fold_norm_topk
    t.update(W_enc=t["W_enc"] * norms, b_enc=t["b_enc"] * norms, W_dec=t["W_dec"] / norms[:, None])
  params = {name: t[name] for name in _TENSORS[arch] if name != "threshold"}
  params.update(W_enc=t["W_enc"] / c, W_dec=t["W_dec"] * c, b_dec=t["b_dec"] * c)
  threshold = 0.0
  if cfg.activation == Activation.JUMPRELU:
    params["jump_threshold"] = np.maximum(t["threshold"], 0.0)
  elif cfg.activation == Activation.BATCHTOPK:
    threshold = float(t["threshold"][0])
  out = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  out.update(norm_scale=jnp.float32(c), threshold=jnp.float32(threshold),
             fired_ago=jnp.zeros((cfg.d_sae,), jnp.int32))
  return cfg, out


def load(folder: str) -> tuple[SAEConfig, dict]:
  """Reads a SAELens folder (written by SAELens or by `save`).

  Args:
    folder: holds `cfg.json` and `sae_weights.safetensors`.

  Returns:
    (config, params): params as `dictionary.init` lays them out (float32 jax arrays, buffers
    included); norm_scale is 1 for SAELens files and c for files from `save`.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: an unsupported architecture or normalisation, or tensors that do not match
      cfg.json (each message names the file).
  """
  cfg_dict, tensors, _, _ = _read(folder)
  return from_saelens(cfg_dict, tensors, source=folder)
