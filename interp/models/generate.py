"""Greedy decoding by full recomputation: simple, exact, and one compilation per length bucket.

  out = greedy(cfg, params, tokenizer.encode("The capital of France is"), n_new=5)

There is no KV cache: each step runs `transformer.forward` over a fixed-size buffer and reads the
logits at the last real position. The buffer is right-padded, which is safe because attention is
causal: padding after position t cannot change the logits at t. The whole loop is one jitted
loop; buffers are rounded up to a multiple of `_BUCKET`, and the prompt length and the number of
new tokens are traced values, so calls share a compilation unless the buffer shape changes.
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
           edit_args=None, precision: Precision | str | None = None) -> np.ndarray:
  """Extends `tokens` by `n_new` argmax tokens (no stopping at end-of-sequence).

  Args:
    cfg: the model config.
    params: its parameters.
    tokens: prompt ids, shape [p] or [b, p] (every row the same length, p >= 1).
    n_new: number of tokens to generate.
    make_edits: optional `make_edits(edit_args) -> {hook name: edit}` applied at every step
      (a clamp, a steering vector); a hashable function, so calls with new `edit_args` (any
      pytree of arrays, traced) share one compilation.
    precision: the policy each step's forward runs in (`interp.precision`; default float32).

  Returns:
    int32 numpy array [p + n_new] or [b, p + n_new]: the prompt followed by the new tokens.
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  squeeze = tokens.ndim == 1
  if squeeze:
    tokens = tokens[None]
  if tokens.ndim != 2 or tokens.shape[1] == 0:
    raise ValueError(f"tokens must be a non-empty [p] or [b, p] array, got shape {tokens.shape}")
  if n_new < 0:
    raise ValueError(f"n_new must be >= 0, got {n_new}")
  if n_new == 0:
    return tokens[0] if squeeze else tokens
  b, p = tokens.shape
  total = p + n_new
  size = -(-total // _BUCKET) * _BUCKET
  buf = np.full((b, size), _PAD, np.int32)
  buf[:, :p] = tokens
  out = _greedy_loop(cfg, make_edits, as_precision(precision), params, jnp.asarray(buf),
                     jnp.int32(p), jnp.int32(n_new), edit_args)
  out = np.asarray(out)[:, :total]
  return out[0] if squeeze else out


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _greedy_loop(cfg, make_edits, prec, params, buf, start, n_new, edit_args):
  hooks = Hooks(edits=make_edits(edit_args)) if make_edits is not None else None

  def step(i, buf):
    logits, _ = transformer.forward(cfg, params, buf, hooks, precision=prec)
    pos = start + i  # the slot to fill; the logits that predict it sit at pos - 1
    last = jax.lax.dynamic_index_in_dim(logits, pos - 1, axis=1, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(
        buf, jnp.argmax(last, axis=-1).astype(buf.dtype), pos, axis=1)
  return jax.lax.fori_loop(0, n_new, step, buf)
