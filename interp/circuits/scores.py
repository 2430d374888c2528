"""Head scores (Olsson et al., 2022; Elhage et al., 2021), vectorised over layers and heads.

Attention scores are the mean attention a head puts on the key positions a token-defined mask
selects, averaged over the queries that have at least one such key (and over the batch):

  previous-token    key = query - 1
  prefix-matching   keys j <= query with tokens[j - 1] == tokens[query]: the token after an
                    earlier occurrence of the current token (induction heads; measured on
                    repeated random tokens, where only the later copies have such keys)
  duplicate-token   keys j < query with tokens[j] == tokens[query]

Patterns are stacked over layers, [l b h p s] (`stacked_patterns`). Copying scores read the
weights: a head's OV circuit W_E W_V W_O W_U [v v] copies when its eigenvalues are mostly
positive; the share sum(lambda) / sum(|lambda|) is +1 for pure copying, -1 for anti-copying.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from interp.circuits import weights
from interp.models import transformer
from interp.models.config import TransformerConfig


def pattern_names(cfg: TransformerConfig) -> list[str]:
  return [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]


def stacked_patterns(cfg: TransformerConfig, params, tokens, edits=None,
                     precision=None) -> jax.Array:
  """Every layer's attention pattern from one forward pass (under `precision`, None: float32):
  [l b h p s] float32."""
  names = pattern_names(cfg)
  _, cache = transformer.run_with_cache(cfg, params, tokens, names, edits, precision)
  return jnp.stack([cache[n].astype(jnp.float32) for n in names])


def previous_token_mask(tokens) -> jax.Array:
  """[b p s]: key = query - 1."""
  b, p = tokens.shape
  q, s = jnp.arange(p)[:, None], jnp.arange(p)[None, :]
  return jnp.broadcast_to(s == q - 1, (b, p, p))


def prefix_matching_mask(tokens) -> jax.Array:
  """[b p s]: keys s <= query whose previous token equals the query's token."""
  p = tokens.shape[1]
  q, s = jnp.arange(p)[:, None], jnp.arange(p)[None, :]
  before = jnp.concatenate([jnp.full_like(tokens[:, :1], -1), tokens[:, :-1]], axis=1)
  return (before[:, None, :] == tokens[:, :, None]) & (s >= 1) & (s <= q)


def duplicate_token_mask(tokens) -> jax.Array:
  """[b p s]: earlier keys holding the query's token."""
  p = tokens.shape[1]
  q, s = jnp.arange(p)[:, None], jnp.arange(p)[None, :]
  return (tokens[:, None, :] == tokens[:, :, None]) & (s < q)


def masked_attention_score(patterns, mask) -> jax.Array:
  """Mean attention on `mask`ed keys over queries with at least one such key.

  Args:
    patterns: [l b h p s] (or [b h p s] for one layer).
    mask: [b p s] boolean.
  Returns:
    [l h] (or [h]).
  """
  on_mask = jnp.einsum("...bhps,bps->...bhp", patterns, mask.astype(patterns.dtype))
  has_key = mask.any(-1).astype(patterns.dtype)  # [b p]
  total = jnp.einsum("...bhp,bp->...h", on_mask, has_key)
  return total / jnp.maximum(has_key.sum(), 1.0)


def previous_token_scores(patterns, tokens) -> jax.Array:
  return masked_attention_score(patterns, previous_token_mask(tokens))


def prefix_matching_scores(patterns, tokens) -> jax.Array:
  return masked_attention_score(patterns, prefix_matching_mask(tokens))


def duplicate_token_scores(patterns, tokens) -> jax.Array:
  return masked_attention_score(patterns, duplicate_token_mask(tokens))


@functools.partial(jax.jit, static_argnames=("cfg", "precision"))
def head_scores(cfg: TransformerConfig, params, tokens, precision=None) -> dict[str, jax.Array]:
  """The three attention scores, each [l h], from one forward pass over `tokens` (under
  `precision`, None: float32; the scores are float32)."""
  patterns = stacked_patterns(cfg, params, tokens, precision=precision)
  return {"previous_token": previous_token_scores(patterns, tokens),
          "prefix_matching": prefix_matching_scores(patterns, tokens),
          "duplicate_token": duplicate_token_scores(patterns, tokens)}


@functools.partial(jax.jit, static_argnames=("cfg", "fold_norms"))
def copying_scores(cfg: TransformerConfig, params, fold_norms: bool = True) -> jax.Array:
  """OV-circuit eigenvalue share sum(lambda) / sum(|lambda|) per head: [l h].

  The nonzero eigenvalues of the full OV circuit (W_E W_V)(W_O W_U) [v v] are those of the
  small (W_O W_U)(W_E W_V) [e e] (`weights.FactoredMatrix.eigenvalues`), so no vocab x vocab
  matrix is formed. Norms other than the folded ln1 weight are ignored (exact for norm-free
  toys). Uses a non-symmetric eigensolver, which XLA provides on CPU only.
  """
  return weights.eigenvalue_positivity(weights.ov_circuit(cfg, params, full=True,
                                                          fold_norms=fold_norms))


@functools.partial(jax.jit, static_argnames=("cfg", "fold_norms"))
def direct_copying_scores(cfg: TransformerConfig, params, tokens=None,
                          fold_norms: bool = True) -> jax.Array:
  """Fraction of tokens a head's direct path maps to themselves as the top logit: [l h].

  Row t of the full OV circuit is the logit change when the head attends to token t; a copying
  head ranks t itself first. `tokens` picks the rows (default: the whole vocabulary).
  """
  ov = weights.ov_circuit(cfg, params, full=True, fold_norms=fold_norms)
  tokens = jnp.arange(cfg.vocab_size) if tokens is None else jnp.asarray(tokens)
  rows = ov.A[:, :, tokens, :] @ ov.B  # [l h t v]
  return jnp.mean(jnp.argmax(rows, axis=-1) == tokens, axis=-1)
