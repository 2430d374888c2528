"""GPT-2 weights from a local Hugging Face folder (`config.json` + safetensors), as our params.

  cfg, params = load_gpt2("path/to/gpt2")
  logits, cache = transformer.forward(cfg, params, tokens)

Reads `model.safetensors` or a sharded `model.safetensors.index.json`, written by either
`GPT2LMHeadModel` (keys `transformer.h.0...`, `lm_head.weight`) or `GPT2Model` (keys `h.0...`).
Pickle checkpoints (`pytorch_model.bin`, `*.pt`, `*.ckpt`) are refused, never opened: unpickling
runs arbitrary code from the file. Nothing is downloaded; fetch the folder yourself.

GPT-2 stores its linear layers as Conv1D, i.e. weights [in, out], so they map onto our
[d ...] -> [... d] layout without transposes; only the head axes need splitting out.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp

from interp.models import config as config_lib
from interp.models import transformer
from interp.models.config import Activation, TransformerConfig

_ACTIVATIONS = {"gelu_new": Activation.GELU_TANH, "gelu_pytorch_tanh": Activation.GELU_TANH,
                "gelu": Activation.GELU, "relu": Activation.RELU}
_PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")
# Causal-mask buffers that older checkpoints (openai-community/gpt2 among them) carry: not weights.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def gpt2_config(hf: dict) -> TransformerConfig:
  """Our config for a Hugging Face `GPT2Config` given as its `config.json` dict.

  Raises:
    ValueError: for a non-GPT-2 `model_type` or a GPT-2 option this transformer does not model.
  """
  model_type = hf.get("model_type", "gpt2")
  if model_type != "gpt2":
    raise ValueError(f"config.json has model_type={model_type!r}; load_gpt2 reads only 'gpt2'")
  act = hf.get("activation_function", "gelu_new")
  if act not in _ACTIVATIONS:
    raise ValueError(f"config.json activation_function={act!r} is not supported; "
                     f"expected one of {sorted(_ACTIVATIONS)}")
  if hf.get("scale_attn_by_inverse_layer_idx", False):
    raise ValueError("config.json scale_attn_by_inverse_layer_idx=true is not supported")
  if hf.get("add_cross_attention", False):
    raise ValueError("config.json add_cross_attention=true: cross-attention is not supported")
  d, heads = hf.get("n_embd", 768), hf.get("n_head", 12)
  if d % heads:
    raise ValueError(f"config.json n_embd={d} is not a multiple of n_head={heads}")
  return config_lib.gpt2(
      vocab_size=hf.get("vocab_size", 50257), n_ctx=hf.get("n_positions", 1024), d_model=d,
      n_layers=hf.get("n_layer", 12), n_heads=heads, d_head=d // heads,
      d_mlp=hf.get("n_inner") or 4 * d, act=_ACTIVATIONS[act],
      norm_eps=hf.get("layer_norm_epsilon", 1e-5),
      # scale_attn_weights=false means raw q.k scores: a scale of 1.
      attn_scale=None if hf.get("scale_attn_weights", True) else 1.0,
      tied_embeddings=hf.get("tie_word_embeddings", True))


def _weight_paths(folder: pathlib.Path) -> list[pathlib.Path]:
  """The safetensors files of a checkpoint: one, or the shards its index names."""
  index = folder / "model.safetensors.index.json"
  if index.is_file():
    return _shards(folder, index)
  if (folder / "model.safetensors").is_file():
    return [folder / "model.safetensors"]
  pickles = sorted(p.name for pat in _PICKLE_PATTERNS for p in folder.glob(pat))
  if pickles:
    raise ValueError(
        f"{folder} holds only pickle checkpoints ({', '.join(pickles)}); load_gpt2 requires "
        "model.safetensors because unpickling a checkpoint can execute arbitrary code. Convert "
        "it once in a trusted environment, e.g. model.save_pretrained(folder, "
        "safe_serialization=True).")
  raise FileNotFoundError(f"{folder} has no model.safetensors or model.safetensors.index.json")


def _shards(folder: pathlib.Path, index: pathlib.Path) -> list[pathlib.Path]:
  """The shard files an index names, each confined to `folder` (an index naming '../x' or an
  absolute path would otherwise read files from anywhere)."""
  try:
    names = set(json.loads(index.read_text())["weight_map"].values())
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{index} is not a safetensors index (a JSON object with a weight_map "
                     f"of tensor -> file): {e}") from None
  root = folder.resolve()
  paths = []
  for name in sorted(names):
    path = (folder / str(name)).resolve()
    if not isinstance(name, str) or path == root or not path.is_relative_to(root):
      raise ValueError(f"{index} names shard {name!r}, which is not a file inside {folder}")
    paths.append(path)
  return paths


def _read_tensors(paths) -> tuple[dict[str, jax.Array], dict[str, pathlib.Path]]:
  """(tensor name -> array, tensor name -> the file it came from)."""
  from safetensors import safe_open
  tensors, origin = {}, {}
  for path in paths:
    if not path.is_file():
      raise FileNotFoundError(f"shard {path} listed in model.safetensors.index.json is missing")
    # The flax framework, unlike numpy, reads bfloat16 checkpoints.
    with safe_open(path, framework="flax") as f:
      for name in f.keys():
        tensors[name], origin[name] = f.get_tensor(name), path
  return tensors, origin


def load_gpt2(folder, dtype=jnp.float32) -> tuple[TransformerConfig, dict]:
  """Loads a GPT-2 checkpoint from a local Hugging Face folder.

  Args:
    folder: directory with `config.json` and `model.safetensors` (or a sharded index).
    dtype: dtype of the returned parameters.

  Returns:
    (cfg, params): params is the nested dict `transformer.init_params(cfg, ...)` would give.

  Raises:
    ValueError: pickle-only folders, unsupported configs, missing, unexpected or misshapen tensors.
    FileNotFoundError: no config.json or no weights.
  """
  folder = pathlib.Path(folder)
  config_path = folder / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{folder} has no config.json (a Hugging Face GPT-2 folder needs one)")
  cfg = gpt2_config(json.loads(config_path.read_text()))
  paths = _weight_paths(folder)
  tensors, origin = _read_tensors(paths)
  prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
  used = set()

  def get(name, shape):
    key = "lm_head.weight" if name == "lm_head.weight" else prefix + name
    if key not in tensors:
      where = ", ".join(p.name for p in paths)
      raise ValueError(f"tensor {key!r} is missing from {folder} ({where})")
    x = tensors[key]
    if tuple(x.shape) != tuple(shape):
      raise ValueError(f"tensor {key!r} in {origin[key]} has shape {tuple(x.shape)}, expected "
                       f"{tuple(shape)} from {config_path}")
    used.add(key)
    return x

  d, h, e, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp

  def norm(name):
    return {"w": get(name + ".weight", (d,)), "b": get(name + ".bias", (d,))}

  params = {"embed": {"W_E": get("wte.weight", (cfg.vocab_size, d))},
            "pos_embed": {"W_pos": get("wpe.weight", (cfg.n_ctx, d))},
            "ln_final": norm("ln_f")}
  for L in range(cfg.n_layers):
    pre = f"h.{L}."
    # c_attn's output axis is [Q | K | V], each laid out as (head, d_head).
    qkv_w = get(pre + "attn.c_attn.weight", (d, 3 * d)).reshape(d, 3, h, e)
    qkv_b = get(pre + "attn.c_attn.bias", (3 * d,)).reshape(3, h, e)
    attn = {f"W_{n}": qkv_w[:, i] for i, n in enumerate("QKV")}
    attn.update({f"b_{n}": qkv_b[i] for i, n in enumerate("QKV")})
    attn["W_O"] = get(pre + "attn.c_proj.weight", (d, d)).reshape(h, e, d)
    attn["b_O"] = get(pre + "attn.c_proj.bias", (d,))
    mlp = {"W_in": get(pre + "mlp.c_fc.weight", (d, m)), "b_in": get(pre + "mlp.c_fc.bias", (m,)),
           "W_out": get(pre + "mlp.c_proj.weight", (m, d)),
           "b_out": get(pre + "mlp.c_proj.bias", (d,))}
    params[f"blocks_{L}"] = {"ln1": norm(pre + "ln_1"), "attn": attn, "ln2": norm(pre + "ln_2"),
                             "mlp": mlp}
  if not cfg.tied_embeddings:
    # lm_head is a torch Linear, [out, in], unlike the Conv1D layers.
    params["unembed"] = {"W_U": get("lm_head.weight", (cfg.vocab_size, d)).T}
  elif "lm_head.weight" in tensors:
    used.add("lm_head.weight")  # a saved copy of the tied wte

  unexpected = sorted(k for k in tensors if k not in used and not k.endswith(_BUFFER_SUFFIXES))
  if unexpected:
    raise ValueError(f"{folder}: unexpected tensors {unexpected[:8]}"
                     f"{' ...' if len(unexpected) > 8 else ''}; load_gpt2 reads GPT2LMHeadModel "
                     "and GPT2Model checkpoints only")
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
  _check_layout(cfg, params)
  return cfg, params


def _check_layout(cfg: TransformerConfig, params: dict) -> None:
  """Fails here, naming the parameter, if transformer.py's layout and this loader drift apart."""
  want = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  def shapes(tree):
    return {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  want_shapes, got_shapes = shapes(want), shapes(params)
  if want_shapes != got_shapes:
    diff = sorted(set(want_shapes.items()) ^ set(got_shapes.items()))
    raise ValueError(f"loaded GPT-2 params do not match transformer.init_params: {diff[:8]}")
