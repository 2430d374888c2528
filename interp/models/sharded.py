"""Transformers on a mesh: sharded initialisation and a jitted forward with in/out shardings."""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd
from interp.precision import Precision


def rules_for(cfg: TransformerConfig, mesh: Mesh, rules: shd.Rules) -> shd.Rules:
  """Replicates K/V heads when there are fewer of them than the mesh axis they map to.

  Grouped-query models (Gemma 3 270M has one KV head) cannot split K/V over `model`; as in
  MaxText, every model-parallel shard then keeps the whole (small) K/V projection.
  """
  axis = dict(rules).get("kv_heads")
  if axis is not None and cfg.n_kv_heads % mesh.shape[axis]:
    return shd.override(rules, kv_heads=None)
  return rules


def init(cfg: TransformerConfig, key: jax.Array, mesh: Mesh, rules: shd.Rules = shd.PARAM_RULES):
  """Random parameters created already sharded over `mesh`. Returns (params, shardings)."""
  return mesh_lib.sharded_init(lambda: transformer.init_params(cfg, key), transformer.param_axes,
                               mesh, rules_for(cfg, mesh, rules))


def place(cfg: TransformerConfig, params, mesh: Mesh, rules: shd.Rules = shd.PARAM_RULES):
  """Puts loaded (host) parameters onto `mesh`. Returns (params, shardings)."""
  return mesh_lib.put_params(params, transformer.param_axes(params), mesh,
                             rules_for(cfg, mesh, rules))


def make_forward(cfg: TransformerConfig, mesh: Mesh, param_shardings, capture=(),
                 act_rules: shd.Rules = shd.ACT_RULES,
                 precision: Precision | str | None = None):
  """jit(forward) with parameters and tokens sharded in, logits and cache sharded over `data`.

  `precision` is `transformer.forward`'s: the float32 parameters are cast inside the jit, the
  cache comes out in the compute dtype, the logits in float32.

  Returns:
    f(params, tokens) -> (logits, cache) for the hook names in `capture`.
  """
  hooks = Hooks(capture=tuple(capture))
  hooks.validate(cfg)

  def fwd(params, tokens):
    with shd.activation_rules(mesh, act_rules):
      return transformer.forward(cfg, params, tokens, hooks, precision=precision)

  batch = NamedSharding(mesh, P("data"))
  return jax.jit(fwd, in_shardings=(param_shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(batch, {n: batch for n in hooks.capture}))
