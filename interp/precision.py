"""The precision policy: which dtype each kind of value has, chosen once per run.

Vocabulary (the names MaxText, Levanter and Penzai use for the same split):

  params dtype   what parameters and optimizer state are stored in ("master weights"):
                 always float32 here, so small updates are not rounded away.
  compute dtype  what the forward and backward passes compute in: parameters are cast to it
                 inside the jitted call, and the residual stream, the matrix products' outputs
                 and hook captures have it (so a bfloat16 cache is half the bytes).
  accumulation   matrix products sum in float32 whatever their inputs
                 (`preferred_element_type=float32`), then round to the compute dtype once.
  output dtype   logits, losses and metrics: float32. Softmax and norms also compute in float32
                 and return the compute dtype.

`--precision` names a policy: `float32` (everything float32), `bfloat16` (bfloat16 compute,
float32 parameters and outputs), or `auto`: float32 on CPU, bfloat16 on GPU and TPU
(`jax.default_backend()`), where bfloat16 matrix units are 2-16x faster and hold activations in
half the memory, while CPUs have no native bfloat16 arithmetic.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

AUTO = "auto"
# The `--precision` values, in the order `--helpfull` lists them.
CHOICES = (AUTO, "float32", "bfloat16")
# What `auto` becomes on each backend (`jax.default_backend()`); any other backend: float32.
AUTO_BY_BACKEND = {"cpu": "float32", "gpu": "bfloat16", "cuda": "bfloat16", "rocm": "bfloat16",
                   "tpu": "bfloat16"}
HELP = ("compute dtype (parameters, optimizer state, logits, losses and metrics stay float32): "
        "auto = float32 on CPU and bfloat16 on GPU/TPU, or float32, or bfloat16")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Precision:
  """A precision policy (see the module docstring); hashable, so it can be a static argument.

  Attributes:
    params: dtype name of stored parameters and optimizer state.
    compute: dtype name of activations and matrix-product outputs.
    output: dtype name of logits, losses and metrics.
  """

  params: str = "float32"
  compute: str = "float32"
  output: str = "float32"

  def __post_init__(self):
    for field in ("params", "compute", "output"):
      if getattr(self, field) not in DTYPES:
        raise ValueError(f"Precision.{field}={getattr(self, field)!r} is not one of: "
                         f"{', '.join(DTYPES)}")

  @classmethod
  def parse(cls, text: str, flag: str = "precision", backend: str | None = None) -> Precision:
    """The policy a `--precision` value names.

    Args:
      text: `auto`, `float32` or `bfloat16`.
      flag: the flag's name, for the error message.
      backend: what `auto` resolves against (default: `jax.default_backend()`).
    Returns:
      float32 parameters and outputs, with the compute dtype `text` names.
    Raises:
      ValueError: `--{flag}=...` is not one of the choices (one line).
    """
    if not isinstance(text, str) or text not in CHOICES:
      raise ValueError(f"--{flag}={text!r} is not one of: {', '.join(CHOICES)}")
    if text == AUTO:
      text = AUTO_BY_BACKEND.get(backend or jax.default_backend(), "float32")
    return cls(compute=text)

  @property
  def name(self) -> str:
    """The `--precision` value that gives this policy (the compute dtype's name)."""
    return self.compute

  @property
  def compute_dtype(self):
    return jnp.dtype(self.compute)

  @property
  def params_dtype(self):
    return jnp.dtype(self.params)

  @property
  def output_dtype(self):
    return jnp.dtype(self.output)

  @property
  def is_float32(self) -> bool:
    """True when nothing is cast: every computation is exactly the float32 one."""
    return self.compute == self.params == self.output == "float32"

  def cast_compute(self, tree):
    """Floating leaves of `tree` in the compute dtype; integer and boolean leaves untouched."""
    return _cast_floating(tree, self.compute_dtype)

  def cast_output(self, tree):
    """Floating leaves of `tree` in the output dtype (float32)."""
    return _cast_floating(tree, self.output_dtype)

  def matmul(self, a, b, *, output: bool = False):
    """`a @ b` summed in float32, returned in the compute dtype (the output dtype if `output`).

    Rounding once at the end, instead of after every partial sum, is what keeps a long
    bfloat16 contraction (d_model or d_mlp terms) within one bfloat16 ulp of the exact result.
    """
    a, b = _widen_on_cpu(a, b)
    out = jnp.matmul(a, b, preferred_element_type=jnp.float32)
    return out.astype(self.output_dtype if output else self.compute_dtype)

  def einsum(self, spec: str, a, b, *, output: bool = False):
    """`jnp.einsum(spec, a, b)` summed in float32, returned as `matmul` returns."""
    a, b = _widen_on_cpu(a, b)
    out = jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    return out.astype(self.output_dtype if output else self.compute_dtype)


FLOAT32 = Precision()
BFLOAT16 = Precision(compute="bfloat16")


def as_precision(value: Precision | str | None, flag: str = "precision") -> Precision:
  """`value` as a Precision: None is float32 (every existing number unchanged), text is parsed."""
  if value is None:
    return FLOAT32
  if isinstance(value, Precision):
    return value
  return Precision.parse(value, flag)


def _widen_on_cpu(a, b):
  """Both operands in float32 on the CPU backend, unchanged elsewhere.

  XLA's CPU dot has no bfloat16 x bfloat16 -> float32 kernel for every layout (a head-batched
  einsum such as `bphe,hed->bphd` fails with UNIMPLEMENTED). A product of two bfloat16 numbers
  is exact in float32, so widening first gives the same float32 sums, which is what the CPU
  compiler does for the layouts it does support; GPUs and TPUs keep the bfloat16 inputs.
  The cost: where the CPU has bfloat16 matrix units, its native kernels are 3-5x faster than
  the widened float32 product (measured on this project's Xeon with AMX, jax 0.10.2: a
  [256 640] x [640 2048] product 2.2 ms native, 11.6 ms widened; head-batched
  `nbpd,nde->nbpe` 1.6 vs 5.8 ms). The circuit-discovery edge forward, whose every product has
  its batch axes leading both operands, keeps its operands narrow (`interp.discovery.forward`).
  """
  if jax.default_backend() != "cpu":
    return a, b
  return jnp.asarray(a).astype(jnp.float32), jnp.asarray(b).astype(jnp.float32)


def _cast_floating(tree, dtype):
  def cast(x):
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
      return x.astype(dtype)
    return x
  return jax.tree.map(cast, tree)
