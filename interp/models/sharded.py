"""Transformers on a mesh: sharded initialisation and a jitted forward with in/out shardings."""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd


def init(cfg: TransformerConfig, key: jax.Array, mesh: Mesh, rules: shd.Rules = shd.PARAM_RULES):
  """Random parameters created already sharded over `mesh`. Returns (params, shardings)."""
  return mesh_lib.sharded_init(lambda: transformer.init_params(cfg, key), transformer.param_axes,
                               mesh, rules)


def place(params, mesh: Mesh, rules: shd.Rules = shd.PARAM_RULES):
  """Puts loaded (host) parameters onto `mesh`. Returns (params, shardings)."""
  return mesh_lib.put_params(params, transformer.param_axes(params), mesh, rules)


def make_forward(cfg: TransformerConfig, mesh: Mesh, param_shardings, capture=(),
                 act_rules: shd.Rules = shd.ACT_RULES):
  """jit(forward) with parameters and tokens sharded in, logits and cache sharded over `data`.

  Returns:
    f(params, tokens) -> (logits, cache) for the hook names in `capture`.
  """
  hooks = Hooks(capture=tuple(capture))
  hooks.validate(cfg)

  def fwd(params, tokens):
    with shd.activation_rules(mesh, act_rules):
      return transformer.forward(cfg, params, tokens, hooks)

  batch = NamedSharding(mesh, P("data"))
  return jax.jit(fwd, in_shardings=(param_shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(batch, {n: batch for n in hooks.capture}))
