"""Greedy decoding by full recomputation: simple, exact, and one compilation per length bucket.

  out = greedy(cfg, params, tokenizer.encode("The capital of France is"), n_new=5)

There is no KV cache: each step runs `transformer.forward` over a fixed-size buffer and unembeds
only the last real position of each row (`logits_at`: with Gemma's 262k-token vocabulary,
unembedding all 64 positions of a buffer is ~21 of a step's ~34 GFLOP). The buffer is right-padded, which is safe
because attention is causal: padding after position t cannot change the logits at t, so rows of
different prompt lengths run together (`lengths`). The whole loop is one jitted loop; buffers
are rounded up to a multiple of `_BUCKET`, and the prompt lengths and the number of new tokens
are traced values, so calls share a compilation unless the buffer shape changes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.precision import Precision, as_precision

_BUCKET = 64
_PAD = 0  # any id works: later positions never influence earlier ones


def greedy(cfg: TransformerConfig, params, tokens, n_new: int, make_edits=None,
           edit_args=None, precision: Precision | str | None = None,
           lengths=None) -> np.ndarray:
  """Extends `tokens` by `n_new` argmax tokens (no stopping at end-of-sequence).

  Args:
    cfg: the model config.
    params: its parameters.
    tokens: prompt ids, shape [p] or [b, p] (p >= 1).
    n_new: number of tokens to generate.
    make_edits: optional `make_edits(edit_args) -> {hook name: edit}` applied at every step
      (a clamp, a steering vector); a hashable function, so calls with new `edit_args` (any
      pytree of arrays, traced) share one compilation.
    precision: the policy each step's forward runs in (`interp.precision`; default float32).
    lengths: optional [b] prompt lengths of right-padded rows (1 <= length <= p; default:
      every row is p tokens). Row r's new tokens follow its first lengths[r] tokens.

  Returns:
    int32 numpy array [p + n_new] or [b, p + n_new]: each row's prompt followed by its new
    tokens (a row shorter than p ends in p - lengths[r] padding ids).
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  squeeze = tokens.ndim == 1
  if squeeze:
    tokens = tokens[None]
  if tokens.ndim != 2 or tokens.shape[1] == 0:
    raise ValueError(f"tokens must be a non-empty [p] or [b, p] array, got shape {tokens.shape}")
  if n_new < 0:
    raise ValueError(f"n_new must be >= 0, got {n_new}")
  b, p = tokens.shape
  lengths = np.full(b, p, np.int32) if lengths is None else np.asarray(lengths, np.int32)
  if lengths.shape != (b,) or lengths.min() < 1 or lengths.max() > p:
    raise ValueError(f"lengths must be [{b}] prompt lengths in [1, {p}], got {lengths.tolist()}")
  if n_new == 0:
    return tokens[0] if squeeze else tokens
  total = p + n_new
  size = -(-total // _BUCKET) * _BUCKET
  buf = np.full((b, size), _PAD, np.int32)
  buf[:, :p] = np.where(np.arange(p) < lengths[:, None], tokens, _PAD)
  out = _greedy_loop(cfg, make_edits, as_precision(precision), params, jnp.asarray(buf),
                     jnp.asarray(lengths), jnp.int32(n_new), edit_args)
  out = np.asarray(out)[:, :total]
  return out[0] if squeeze else out


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _greedy_loop(cfg, make_edits, prec, params, buf, start, n_new, edit_args):
  hooks = Hooks(edits=make_edits(edit_args)) if make_edits is not None else None
  rows = jnp.arange(buf.shape[0])

  def step(i, buf):
    pos = start + i  # [b] the slots to fill; the logits that predict them sit at pos - 1
    logits, _ = transformer.forward(cfg, params, buf, hooks, logits_at=(pos - 1)[:, None],
                                    precision=prec)
    return buf.at[rows, pos].set(jnp.argmax(logits[:, 0], axis=-1).astype(buf.dtype))
  return jax.lax.fori_loop(0, n_new, step, buf)
