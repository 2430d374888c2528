"""One frozen config for every transformer family interp runs.

Vocabulary used across `interp.models` (shape letters in hook and parameter docs):

  b  batch                p  position (query)      k/s  key position
  d  d_model (residual)   h  query heads           g   key/value heads (GQA)
  e  d_head               m  d_mlp                 v   vocabulary

The same `TransformerConfig` describes the attention-only toys of Elhage et al. (2021) and
Olsson et al. (2022), GPT-2, and Gemma 3; the family-specific pieces are switches on it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers

from interp.choices import choice


class NormType(str, enum.Enum):
  NONE = "none"
  LAYERNORM = "layernorm"
  RMSNORM = "rmsnorm"


class PositionalType(str, enum.Enum):
  NONE = "none"
  LEARNED = "learned"
  ROPE = "rope"


class Activation(str, enum.Enum):
  RELU = "relu"
  GELU = "gelu"            # exact erf GELU
  GELU_TANH = "gelu_tanh"  # GPT-2's gelu_new and Gemma's gelu_pytorch_tanh


class MLPType(str, enum.Enum):
  NONE = "none"        # attention-only
  STANDARD = "standard"  # W_out act(W_in x + b_in) + b_out
  GATED = "gated"      # W_out (act(W_gate x) * W_in x)   (GeGLU in Gemma)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Architecture of a decoder-only transformer.

  Attributes:
    vocab_size: tokens in the vocabulary.
    d_model: residual width.
    n_layers: transformer blocks.
    n_heads: attention heads (d_head = d_model / n_heads unless given).
    d_head: width of each head's queries, keys and values.
    n_ctx: context length in tokens.
    n_kv_heads: key/value heads for grouped-query attention (None = n_heads).
    d_mlp: MLP width (0 = attention-only); ignored when `mlp` is NONE.
    mlp, act: MLP kind and nonlinearity.
    norm: normalisation before attention, MLP and unembed; none for norm-free toys.
    norm_eps: epsilon inside the norm.
    norm_offset: RMSNorm multiplies by (norm_offset + w); Gemma stores w around 0 and uses 1.
    post_norms: Gemma's extra norms on the attention and MLP outputs before the residual add.
    qk_norm: Gemma 3's RMSNorm over d_head on queries and keys.
    positional: position information: learned absolute (GPT-2), rotary (Gemma) or none.
    rope_base / rope_local_base: RoPE bases for global and sliding-window layers.
    sliding_window: window of local layers (None = all layers global).
    global_every: with a sliding window, every `global_every`-th layer is global (Gemma 3: 6).
    attn_scale: queries are multiplied by attn_scale**-0.5 (None = d_head).
    attn_bias, mlp_bias: GPT-2 has biases, Gemma does not.
    embed_scale: multiply token embeddings by sqrt(d_model) (Gemma).
    tied_embeddings: W_U = W_E^T.
    unembed_bias: a b_U parameter (untied toys only).
    smear_keys: Olsson's smeared keys: k_j <- sigmoid(a_h) k_j + (1 - sigmoid(a_h)) k_{j-1}.
    final_logit_softcap: tanh soft-capping of logits (None = off).
    init_std: normal init scale for weights of randomly initialised models.
  """

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  d_head: int
  n_ctx: int
  n_kv_heads: int | None = None
  d_mlp: int = 0
  mlp: MLPType = MLPType.STANDARD
  act: Activation = Activation.GELU_TANH
  norm: NormType = NormType.LAYERNORM
  norm_eps: float = 1e-5
  norm_offset: float = 0.0
  post_norms: bool = False
  qk_norm: bool = False
  positional: PositionalType = PositionalType.LEARNED
  rope_base: float = 10_000.0
  rope_local_base: float = 10_000.0
  sliding_window: int | None = None
  global_every: int = 1
  attn_scale: float | None = None
  attn_bias: bool = True
  mlp_bias: bool = True
  embed_scale: bool = False
  tied_embeddings: bool = False
  unembed_bias: bool = False
  smear_keys: bool = False
  final_logit_softcap: float | None = None
  init_std: float = 0.02

  def __post_init__(self):
    # Enums may arrive as strings from flags or JSON; normalise and validate them here.
    for field, enum_type in (("mlp", MLPType), ("act", Activation), ("norm", NormType),
                             ("positional", PositionalType)):
      object.__setattr__(self, field, choice(enum_type, getattr(self, field),
                                             f"TransformerConfig.{field}"))
    if self.n_kv_heads is None:
      object.__setattr__(self, "n_kv_heads", self.n_heads)
    # Field names are the flag names of the binaries that build models (train_lm: --d_model...).
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_head", "n_ctx",
                 "global_every"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"--{name}={value}: must be a positive integer")
    if not isinstance(self.d_mlp, numbers.Integral) or self.d_mlp < 0:
      raise ValueError(f"--d_mlp={self.d_mlp}: must be a non-negative integer (0 = no MLP)")
    if self.sliding_window is not None and self.sliding_window <= 0:
      raise ValueError(f"sliding_window={self.sliding_window}: must be positive (or None)")
    if not (math.isfinite(self.norm_eps) and self.norm_eps > 0):
      raise ValueError(f"norm_eps={self.norm_eps}: must be finite and positive")
    if not (math.isfinite(self.init_std) and self.init_std >= 0):
      raise ValueError(f"init_std={self.init_std}: must be finite and non-negative")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
    if self.mlp != MLPType.NONE and self.d_mlp <= 0:
      raise ValueError(f"d_mlp must be positive for mlp={self.mlp.value}")
    if self.tied_embeddings and self.unembed_bias:
      raise ValueError("unembed_bias needs untied embeddings")

  @property
  def has_mlp(self) -> bool:
    return self.mlp != MLPType.NONE

  @property
  def query_scale(self) -> float:
    return (self.attn_scale if self.attn_scale is not None else self.d_head) ** -0.5

  def is_local(self, layer: int) -> bool:
    """Whether `layer` uses the sliding window (Gemma 3: five local layers, then one global)."""
    if self.sliding_window is None:
      return False
    return (layer + 1) % self.global_every != 0

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in out.items()}

  @classmethod
  def from_dict(cls, d: dict) -> "TransformerConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown TransformerConfig keys {sorted(unknown)}; valid: {sorted(names)}")
    return cls(**d)


def attn_only(n_layers: int = 2, d_model: int = 512, n_heads: int = 8, n_ctx: int = 256,
              vocab_size: int = 4096, *, norm: NormType = NormType.NONE,
              positional: PositionalType = PositionalType.LEARNED, smear_keys: bool = False,
              d_mlp: int = 0) -> TransformerConfig:
  """Attention-only toy (optionally with MLPs when d_mlp > 0), as in Elhage et al. (2021)."""
  return TransformerConfig(
      vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
      d_head=d_model // n_heads, n_ctx=n_ctx, d_mlp=d_mlp,
      mlp=MLPType.STANDARD if d_mlp else MLPType.NONE, act=Activation.GELU_TANH, norm=norm,
      positional=positional, smear_keys=smear_keys, attn_bias=False, mlp_bias=True,
      tied_embeddings=False, unembed_bias=False)


def gpt2(size: str = "small", *, vocab_size: int = 50257, n_ctx: int = 1024,
         **overrides) -> TransformerConfig:
  """GPT-2 (Radford et al., 2019): learned positions, LayerNorm, gelu_new, tied unembedding."""
  sizes = {"small": (768, 12, 12), "medium": (1024, 24, 16), "large": (1280, 36, 20),
           "xl": (1600, 48, 25)}
  if size not in sizes:
    raise ValueError(f"gpt2 size {size!r}: expected one of {sorted(sizes)}")
  d, layers, heads = sizes[size]
  kw = dict(vocab_size=vocab_size, d_model=d, n_layers=layers, n_heads=heads, d_head=d // heads,
            n_ctx=n_ctx, d_mlp=4 * d, mlp=MLPType.STANDARD, act=Activation.GELU_TANH,
            norm=NormType.LAYERNORM, norm_eps=1e-5, positional=PositionalType.LEARNED,
            attn_bias=True, mlp_bias=True, tied_embeddings=True)
  kw.update(overrides)
  return TransformerConfig(**kw)


def gemma3_270m(**overrides) -> TransformerConfig:
  """Gemma 3 270M (Gemma Team, 2025), matching transformers' Gemma3TextConfig defaults for it."""
  kw = dict(vocab_size=262_144, d_model=640, n_layers=18, n_heads=4, n_kv_heads=1, d_head=256,
            n_ctx=32_768, d_mlp=2048, mlp=MLPType.GATED, act=Activation.GELU_TANH,
            norm=NormType.RMSNORM, norm_eps=1e-6, norm_offset=1.0, post_norms=True, qk_norm=True,
            positional=PositionalType.ROPE, rope_base=1_000_000.0, rope_local_base=10_000.0,
            sliding_window=512, global_every=6, attn_scale=256.0, attn_bias=False,
            mlp_bias=False, embed_scale=True, tied_embeddings=True)
  kw.update(overrides)
  return TransformerConfig(**kw)
