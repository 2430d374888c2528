"""Weight-level circuits (Elhage et al., 2021): QK and OV circuits as factored matrices, and
Q-, K-, V-composition between heads with the random-matrix baseline.

Row-vector convention (as TransformerLens): a residual vector x [d] is read by a head as
x W_Q, x W_K, x W_V, and the head writes z W_O. So
  QK circuit  W_Q W_K^T [d d]   (attention score of query x_q on key x_k is x_q W_Q W_K^T x_k^T)
  OV circuit  W_V W_O   [d d]   (what the head writes when it attends to x)
both of rank <= d_head; with `full=True` they are wrapped in the embedding and unembedding,
W_E W_Q W_K^T W_E^T and W_E W_V W_O W_U [v v], still as factors (`FactoredMatrix`), so nothing
vocab x vocab is formed unless asked (`.materialize()`).

Composition of an earlier head 1 into a later head 2 is ||W_A W_B||_F / (||W_A||_F ||W_B||_F)
with W_A = OV_1 and W_B = QK_2 (Q), QK_2^T (K) or OV_2 (V): how much of head 2's query, key or
value input can read what head 1 writes. Every norm is computed from d_head x d_head Gram
matrices. Random matrices of the same shapes already score well above 0 (about 1/sqrt(d) for
rank-e products in d dimensions), so `composition` also returns that baseline, estimated from
Gaussian weights of the same shapes, and the excess over it.

Stacked head weights ([l h ...]) expand grouped K/V heads to every query head and, with
`fold_norms`, fold the ln1 weight (norm_offset + w) into W_Q, W_K, W_V. Everything else a norm
does (centring, the data-dependent scale), RoPE and Gemma's QK norms are ignored: the weight
circuits are exact for the norm-free, learned-position attention-only toys.
"""

from __future__ import annotations

import enum
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from interp.models.config import NormType, TransformerConfig


@flax.struct.dataclass
class FactoredMatrix:
  """The matrix A @ B kept as its factors: A [... m r], B [... r n] (leading axes batch)."""

  A: jax.Array
  B: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    return self.A.shape[:-1] + self.B.shape[-1:]

  @property
  def T(self) -> "FactoredMatrix":  # pylint: disable=invalid-name
    return FactoredMatrix(jnp.swapaxes(self.B, -1, -2), jnp.swapaxes(self.A, -1, -2))

  def __matmul__(self, other):
    if isinstance(other, FactoredMatrix):
      return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
    return FactoredMatrix(self.A, self.B @ other)

  def __rmatmul__(self, other):
    return FactoredMatrix(other @ self.A, self.B)

  def materialize(self) -> jax.Array:
    return self.A @ self.B

  def norm(self) -> jax.Array:
    """Frobenius norm, from r x r Gram matrices: ||AB||^2 = sum((A^T A) * (B B^T))."""
    ga = jnp.swapaxes(self.A, -1, -2) @ self.A
    gb = self.B @ jnp.swapaxes(self.B, -1, -2)
    return jnp.sqrt(jnp.maximum(jnp.sum(ga * gb, axis=(-1, -2)), 0.0))

  def eigenvalues(self) -> jax.Array:
    """The r eigenvalues of B A, which are the nonzero eigenvalues of the square A B."""
    if self.shape[-1] != self.shape[-2]:
      raise ValueError(f"eigenvalues of a non-square {self.shape} matrix")
    return jnp.linalg.eigvals(self.B @ self.A)


def eigenvalue_positivity(m: FactoredMatrix) -> jax.Array:
  """sum(lambda) / sum(|lambda|) over each matrix's eigenvalues (real part over modulus)."""
  lam = m.eigenvalues()
  return jnp.real(lam.sum(-1)) / jnp.abs(lam).sum(-1)


def _stack(params, name: str, cfg: TransformerConfig) -> jax.Array:
  return jnp.stack([params[f"blocks_{i}"]["attn"][name] for i in range(cfg.n_layers)])


def _per_query_head(w: jax.Array, cfg: TransformerConfig) -> jax.Array:
  """[l d g e] K/V weights -> [l h d e], each KV head serving its group of query heads."""
  w = jnp.moveaxis(w, 2, 1)
  return jnp.repeat(w, cfg.n_heads // cfg.n_kv_heads, axis=1)


def head_weights(cfg: TransformerConfig, params, fold_norms: bool = True) -> dict[str, jax.Array]:
  """W_Q, W_K, W_V [l h d e] and W_O [l h e d], stacked over layers (see module docstring)."""
  w_q = jnp.moveaxis(_stack(params, "W_Q", cfg), 2, 1)
  w_k = _per_query_head(_stack(params, "W_K", cfg), cfg)
  w_v = _per_query_head(_stack(params, "W_V", cfg), cfg)
  w_o = _stack(params, "W_O", cfg)
  if fold_norms and cfg.norm != NormType.NONE:
    g = jnp.stack([cfg.norm_offset + params[f"blocks_{i}"]["ln1"]["w"]
                   for i in range(cfg.n_layers)])[:, None, :, None]
    w_q, w_k, w_v = w_q * g, w_k * g, w_v * g
  return {"W_Q": w_q, "W_K": w_k, "W_V": w_v, "W_O": w_o}


def embedding(cfg: TransformerConfig, params) -> jax.Array:
  """W_E [v d] as the residual stream sees it (times sqrt(d_model) where the model scales)."""
  w_e = params["embed"]["W_E"]
  return w_e * cfg.d_model ** 0.5 if cfg.embed_scale else w_e


def unembedding(cfg: TransformerConfig, params, fold_norms: bool = True) -> jax.Array:
  """W_U [d v] (W_E^T when tied), with the final norm weight folded in when `fold_norms`."""
  w_u = params["embed"]["W_E"].T if cfg.tied_embeddings else params["unembed"]["W_U"]
  if fold_norms and cfg.norm != NormType.NONE:
    w_u = (cfg.norm_offset + params["ln_final"]["w"])[:, None] * w_u
  return w_u


@functools.partial(jax.jit, static_argnames=("cfg", "full", "fold_norms"))
def qk_circuit(cfg: TransformerConfig, params, full: bool = False,
               fold_norms: bool = True) -> FactoredMatrix:
  """W_Q W_K^T [l h d d], or W_E W_Q W_K^T W_E^T [l h v v] when `full` (unscaled by 1/sqrt(e))."""
  w = head_weights(cfg, params, fold_norms)
  qk = FactoredMatrix(w["W_Q"], jnp.swapaxes(w["W_K"], -1, -2))
  if full:
    w_e = embedding(cfg, params)
    qk = FactoredMatrix(w_e @ qk.A, qk.B @ w_e.T)
  return qk


@functools.partial(jax.jit, static_argnames=("cfg", "full", "fold_norms"))
def ov_circuit(cfg: TransformerConfig, params, full: bool = False,
               fold_norms: bool = True) -> FactoredMatrix:
  """W_V W_O [l h d d], or W_E W_V W_O W_U [l h v v] when `full`."""
  w = head_weights(cfg, params, fold_norms)
  ov = FactoredMatrix(w["W_V"], w["W_O"])
  if full:
    ov = FactoredMatrix(embedding(cfg, params) @ ov.A,
                        ov.B @ unembedding(cfg, params, fold_norms))
  return ov


class Composition(str, enum.Enum):
  Q = "q"
  K = "k"
  V = "v"


def _pair_scores(w: dict[str, jax.Array], kind: Composition) -> jax.Array:
  """||OV_1 W_B||_F / (||OV_1|| ||W_B||) for every (source, target) head pair: [l h l h]."""
  kind = Composition(kind)
  if kind == Composition.V:
    b_left, b_right = w["W_V"], w["W_O"]  # W_B = W_V W_O
  elif kind == Composition.Q:
    b_left, b_right = w["W_Q"], jnp.swapaxes(w["W_K"], -1, -2)  # W_B = W_Q W_K^T
  else:
    b_left, b_right = w["W_K"], jnp.swapaxes(w["W_Q"], -1, -2)  # W_B = W_K W_Q^T
  t = lambda x: jnp.swapaxes(x, -1, -2)
  g_v = t(w["W_V"]) @ w["W_V"]          # [l h e e] Gram of the OV's left factor
  g_b = b_right @ t(b_right)            # [l h e e] Gram of W_B's right factor
  ov_norm = FactoredMatrix(w["W_V"], w["W_O"]).norm()
  b_norm = FactoredMatrix(b_left, b_right).norm()

  def from_layer(src):  # one source layer at a time bounds memory for wide models
    gv, wo = g_v[src], w["W_O"][src]                      # [h e e], [h e d]
    m = jnp.einsum("aed,lbdf->albef", wo, b_left)         # O_1 B_left [h l h e f]
    sq = jnp.einsum("aeg,albgf->albef", gv, m) * jnp.einsum("albef,lbfg->albeg", m, g_b)
    return jnp.sqrt(jnp.maximum(sq.sum((-1, -2)), 0.0))   # [h l h]

  num = jax.lax.map(from_layer, jnp.arange(g_v.shape[0]))  # [l h l h]
  return num / (ov_norm[:, :, None, None] * b_norm[None, None])


def earlier_to_later(n_layers: int) -> jax.Array:
  """[l 1 l 1] mask of (source layer < target layer) pairs, broadcastable over heads."""
  layer = jnp.arange(n_layers)
  return (layer[:, None] < layer[None, :])[:, None, :, None]


@functools.partial(jax.jit, static_argnames=("cfg", "kind", "fold_norms"))
def composition_scores(cfg: TransformerConfig, params, kind: Composition,
                       fold_norms: bool = True) -> jax.Array:
  """Composition of every head into every later head: [l h l h] (source, target), NaN where
  the target is not in a later layer."""
  scores = _pair_scores(head_weights(cfg, params, fold_norms), kind)
  return jnp.where(earlier_to_later(cfg.n_layers), scores, jnp.nan)


def composition_baselines(cfg: TransformerConfig, seed: int = 0,
                          samples: int = 16) -> dict[str, float]:
  """Mean Q-, K-, V-composition score between heads of Gaussian weights of this model's shapes.

  Drawn with numpy from `seed` (a constant of the shapes, nothing to compile).
  """
  d, e = cfg.d_model, cfg.d_head
  rng = np.random.default_rng(seed)
  q, k, v = (rng.standard_normal((samples, 2, d, e)) for _ in range(3))
  o = rng.standard_normal((samples, 2, e, d))
  t = lambda x: np.swapaxes(x, -1, -2)
  ov1 = v[:, 0] @ o[:, 0]
  targets = {"q": q[:, 1] @ t(k[:, 1]), "k": k[:, 1] @ t(q[:, 1]), "v": v[:, 1] @ o[:, 1]}
  norm = lambda x: np.linalg.norm(x, axis=(-1, -2))
  return {kind: float(np.mean(norm(ov1 @ b) / (norm(ov1) * norm(b))))
          for kind, b in targets.items()}


def composition(cfg: TransformerConfig, params, seed: int = 0, samples: int = 16,
                fold_norms: bool = True) -> dict[str, dict]:
  """Q, K and V composition: {"q"|"k"|"v": {"scores" [l h l h], "baseline", "excess"}}."""
  baselines = composition_baselines(cfg, seed, samples)
  out = {}
  for kind in Composition:
    scores = composition_scores(cfg, params, kind, fold_norms)
    base = baselines[kind.value]
    out[kind.value] = {"scores": scores, "baseline": base, "excess": scores - base}
  return out
