"""Logical axis names -> mesh axes, for parameters, batches and activations.

The model names every axis logically (`batch`, `seq`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`, `vocab`, ...). A run maps those names to mesh axes (`data`, `model`) with a small rules
table; changing the table (e.g. adding `("embed", "data")` for FSDP) re-shards everything without
touching the model. Parameters and activations use separate tables so the two can differ.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Rules = tuple[tuple[str, str | None], ...]

# Megatron-style tensor parallelism on `model`, data parallelism on `data`.
PARAM_RULES: Rules = (
    ("vocab", "model"),
    ("heads", "model"),
    ("kv_heads", "model"),  # see `interp.models.sharded.rules_for`: replicated when too few
    ("mlp", "model"),
    ("latent", "model"),  # dictionary (SAE / transcoder) latents
    ("embed", None),
    ("head_dim", None),
    ("ctx", None),
    ("norm", None),
)
ACT_RULES: Rules = (
    ("batch", "data"),
    ("seq", None),
    ("seq_kv", None),
    ("embed", None),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("head_dim", None),
    ("mlp", "model"),
    ("vocab", "model"),
    ("latent", "model"),
)
FSDP_RULES: Rules = (("embed", "data"),) + tuple(r for r in PARAM_RULES if r[0] != "embed")

_ACTIVE = contextvars.ContextVar("interp_activation_rules", default=None)


def override(rules: Rules, **changes: str | None) -> Rules:
  """`rules` with the mesh axes of some logical names replaced (added if missing)."""
  table = dict(rules)
  table.update(changes)
  return tuple(table.items())


def logical_to_spec(axes: Sequence[str | None], rules: Rules) -> P:
  """PartitionSpec for logical `axes`; names missing from `rules` are replicated."""
  table = dict(rules)
  mesh_axes = [table.get(a) if a is not None else None for a in axes]
  used = [m for m in mesh_axes if m is not None]
  if len(used) != len(set(used)):
    raise ValueError(f"logical axes {tuple(axes)} map two dimensions to one mesh axis: {mesh_axes}")
  return P(*mesh_axes)


def _axis_size(mesh: Mesh, axis) -> int:
  if axis is None:
    return 1
  names = axis if isinstance(axis, tuple) else (axis,)
  return int(np.prod([mesh.shape[n] for n in names]))


def check_divisible(shape, spec: P, mesh: Mesh, what: str) -> None:
  """Raises ValueError when a dimension does not divide evenly over its mesh axis."""
  for dim, (size, axis) in enumerate(zip(shape, tuple(spec) + (None,) * len(shape))):
    n = _axis_size(mesh, axis)
    if size % n:
      raise ValueError(
          f"{what}: dimension {dim} has size {size}, which is not divisible by mesh axis "
          f"{axis!r} of size {n} (shape {tuple(shape)}, spec {spec}). Change the mesh "
          f"(--mesh) or the width.")


@contextlib.contextmanager
def activation_rules(mesh: Mesh | None, rules: Rules = ACT_RULES):
  """Within this context (entered inside the traced function), `constrain` shards activations."""
  token = _ACTIVE.set(None if mesh is None else (mesh, tuple(rules)))
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def active() -> tuple[Mesh, Rules] | None:
  """The (mesh, rules) of the enclosing `activation_rules` context, or None outside one."""
  return _ACTIVE.get()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint from logical axes; a no-op outside `activation_rules`.

  A dimension that does not divide its mesh axis is left unsharded rather than padded.
  """
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  spec = logical_to_spec(axes, rules)
  fixed = [a if x.shape[i] % _axis_size(mesh, a) == 0 else None for i, a in enumerate(spec)]
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*fixed)))


def tree_specs(logical_tree, rules: Rules):
  """Maps a pytree of logical-axes tuples to PartitionSpecs."""
  return jax.tree.map(lambda axes: logical_to_spec(axes, rules), logical_tree,
                      is_leaf=lambda x: isinstance(x, tuple))


def tree_shardings(mesh: Mesh, spec_tree):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), spec_tree,
                      is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_bytes_per_device(params) -> dict[str, int]:
  """Bytes of `params` held on each device (to check that large parameters really are sharded)."""
  out: dict[str, int] = {}
  for leaf in jax.tree.leaves(params):
    for shard in leaf.addressable_shards:
      key = str(shard.device)
      out[key] = out.get(key, 0) + shard.data.nbytes
  return out


def describe(rules: Iterable[tuple[str, str | None]]) -> str:
  return ", ".join(f"{k}->{v}" for k, v in rules)


def as_rules(mapping: Mapping[str, str | None]) -> Rules:
  return tuple(mapping.items())
