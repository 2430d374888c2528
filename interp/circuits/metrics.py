"""Metrics that read only a few vocabulary columns of the logits, so a sweep unembeds only those.

A logit difference reads two logits per prompt; the unembedding of every vocabulary column is
the largest single product of a short run (GPT-2: 50k columns, Gemma 3: 262k). A `ColumnMetric`
names the columns it reads, and the sweeps that know how (`interp.circuits.suffix_sweep`,
`interp.discovery.forward`) compute just those: the same numbers, since every other column is
never read. Called on full logits, a ColumnMetric is the ordinary metric.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.precision import Precision


@dataclasses.dataclass(frozen=True, eq=False)
class ColumnMetric:
  """A metric that reads only the vocabulary `columns` (int [b c]) of each prompt's logits.

  Called on full logits [b k v] it is the metric; `on_columns` takes the logits of `columns`
  only, [b k c]. Hashed by identity, as a closure would be (a static argument of a jit).
  """
  columns: jax.Array
  on_columns: Callable[[jax.Array], jax.Array]

  def __call__(self, logits):
    index = jnp.broadcast_to(self.columns[:, None, :], logits.shape[:2] + self.columns.shape[1:])
    return self.on_columns(jnp.take_along_axis(logits, index, axis=2))


def columns_of(metric) -> jax.Array | None:
  """The vocabulary columns a metric reads (int [b c]), or None when it needs every logit."""
  return metric.columns if isinstance(metric, ColumnMetric) else None


def apply_metric(metric, logits) -> jax.Array:
  """The metric of logits computed with `columns=columns_of(metric)` (full logits otherwise)."""
  return metric.on_columns(logits) if isinstance(metric, ColumnMetric) else metric(logits)


def column_logits(cfg: TransformerConfig, prec: Precision, params, x, columns) -> jax.Array:
  """float32 logits [..., b, k, c] of final-normed rows x [..., b, k, d] for each prompt's
  vocabulary `columns` int [b c], as `transformer.Unembed` (or the tied embedding) and the
  softcap compute them for those columns."""
  if cfg.tied_embeddings:
    w = jnp.take(params["embed"]["W_E"], columns, axis=0)  # [b c d]
  else:
    w = jnp.moveaxis(jnp.take(params["unembed"]["W_U"], columns, axis=1), 0, -1)
  logits = prec.einsum("...bkd,bcd->...bkc", x, w.astype(x.dtype), output=True).astype(
      jnp.float32)
  if not cfg.tied_embeddings and cfg.unembed_bias:
    logits = logits + jnp.take(params["unembed"]["b_U"], columns)[:, None].astype(jnp.float32)
  return transformer.softcap_logits(cfg, logits)
