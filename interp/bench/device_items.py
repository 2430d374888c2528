"""What one item of the device check runs, by (section, side): the dispatch table for workers.

An item is `what/precision` (e.g. `relu/bfloat16`, `gpt2_small/float32`, `2048/float32`).
Each side's functions live in `device_jax` (ours: JAX) and `device_peers` (torch); a worker
imports only its own side's module, so a torch worker never imports JAX and the reverse.
"""

from __future__ import annotations

import importlib

from interp.bench.device_sizes import ModelShape, Sizes


class Unavailable(Exception):
  """A measurement this checkout or machine cannot make: recorded as skipped, not failed."""


# (section, side) -> (module, function); each function is f(what, precision, sizes) -> dict.
TABLE = {
    ("env", "ours"): ("device_jax", "environment"),
    ("parity", "ours"): ("device_jax", "parity"),
    ("lm", "ours"): ("device_jax", "lm_step"),
    ("sae", "ours"): ("device_workloads", "sae_step"),
    ("forward", "ours"): ("device_workloads", "forward_cache"),
    ("graph", "ours"): ("device_workloads", "graph_build"),
    ("sae", "saelens"): ("device_peers", "saelens_step"),
    ("forward", "transformer_lens"): ("device_peers", "tl_forward_cache"),
}


def run_item(section: str, side: str, item: str, sizes: Sizes) -> dict:
  """Runs one item in this process and returns its measurements.

  Args:
    section, side: which table entry (`TABLE`).
    item: `what/precision`, or `env`.
    sizes: the run's sizes.

  Returns:
    The item's numbers (JSON-ready).
  """
  if (section, side) not in TABLE:
    raise ValueError(f"no worker for section {section!r}, side {side!r}; valid: {sorted(TABLE)}")
  module, name = TABLE[(section, side)]
  fn = getattr(importlib.import_module(f"interp.bench.{module}"), name)
  what, _, precision = item.partition("/")
  return fn(what, precision or "float32", sizes)


def shape(x) -> ModelShape:
  """A ModelShape (a worker's config arrives with nested dicts inside `Sizes` mappings)."""
  return x if isinstance(x, ModelShape) else ModelShape(**x)


def bf16_policy():
  """The bfloat16 precision policy (`interp.precision`): bf16 compute, float32 state."""
  from interp import precision as precision_lib  # pylint: disable=import-outside-toplevel
  return precision_lib.Precision.parse("bfloat16")
