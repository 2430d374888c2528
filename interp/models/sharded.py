"""Transformers on a mesh: sharded initialisation and a jitted forward with in/out shardings."""

from __future__ import annotations

import sys

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
                 precision: Precision | str | None = None, reuse_outputs: bool = True,
                 capture_positions=None, capture_dtype=None) -> Forward:
  """jit(forward) with parameters and tokens sharded in, logits and cache sharded over `data`.

  `precision` is `transformer.forward`'s: the float32 parameters are cast inside the jit, the
  cache comes out in the compute dtype, the logits in float32. `capture_positions` and
  `capture_dtype` narrow what the cache keeps (`Hooks`).

  Args:
    reuse_outputs: reuse the previous call's output buffers when the caller no longer holds
      any of them (see `Forward`); False always allocates fresh outputs.

  Returns:
    A `Forward`: f(params, tokens) -> (logits, cache) for the hook names in `capture`.
  """
  hooks = Hooks(capture=tuple(capture), capture_positions=capture_positions,
                capture_dtype=capture_dtype)
  hooks.validate(cfg)
  aliases: dict[str, str] = {}

  def fwd(params, tokens):
    with shd.activation_rules(mesh, act_rules):
      logits, cache = transformer.forward(cfg, params, tokens, hooks, precision=precision)
    # Only one buffer per tensor leaves the jit; `Forward` hands the repeats back as the same
    # array, so an aliased pair costs one buffer, not two.
    first: dict[int, str] = {}
    unique = {}
    for name, x in cache.items():
      if id(x) in first:
        aliases[name] = first[id(x)]
      else:
        first[id(x)] = name
        unique[name] = x
    return logits, unique

  def fwd_into(params, tokens, previous):
    del previous  # donated: XLA writes this call's outputs into its buffers
    return fwd(params, tokens)

  batch = NamedSharding(mesh, P("data"))
  outs = (batch, batch)  # a prefix: every cache entry is sharded over its batch axis
  tok = mesh_lib.batch_sharding(mesh)
  plain = jax.jit(fwd, in_shardings=(param_shardings, tok), out_shardings=outs)
  donating = jax.jit(fwd_into, in_shardings=(param_shardings, tok, outs), out_shardings=outs,
                     donate_argnums=2, keep_unused=True)
  return Forward(plain, donating, aliases, tuple(hooks.capture), reuse_outputs)


def _free_refcount() -> int:
  """sys.getrefcount of an object held only by a list, read inside a loop over that list."""
  held = [object()]
  for x in held:
    return sys.getrefcount(x)
  raise AssertionError


class Forward:
  """A jitted forward with cache that writes each call's outputs into the previous call's.

  Steady-state memory of repeated forward-with-cache calls is dominated by the outputs (logits
  and cache); allocating them fresh each call while the old ones are still being released
  roughly doubles the peak. So, after each call, this keeps the output arrays, and the next
  call donates them (`donate_argnums`) when it is safe: the caller holds none of them any more
  (their reference counts show only this object's), the token shape is unchanged, and the call
  is not being traced. Otherwise it allocates fresh outputs, as `jax.jit` would. A caller
  that keeps an earlier cache therefore never sees it overwritten.

  `lower`, `eval_shape` and tracing go to the plain jit (no donation): inside another jit the
  outer program plans the buffers.
  """

  def __init__(self, plain, donating, aliases: dict[str, str], names: tuple[str, ...],
               reuse_outputs: bool):
    self.plain, self.donating, self.reuse_outputs = plain, donating, reuse_outputs
    self._aliases, self._names = aliases, names  # filled in when `plain` traces
    self._compiled, self._compiled_shape = {}, None
    self._held: list[jax.Array] = []
    self._held_tree = None
    self._held_shape = None
    self._free = _free_refcount()
    self.donated_calls = 0  # how many calls reused the previous outputs (for benchmarks)

  def lower(self, params, tokens):
    return self.plain.lower(params, tokens)

  def eval_shape(self, params, tokens):
    return jax.eval_shape(self.plain, params, tokens)

  def compile(self, params, tokens) -> dict:
    """Ahead-of-time compiles both programs for these shapes; returns XLA's memory analysis."""
    self._compiled_shape = tokens.shape
    self._compiled["plain"] = self.plain.lower(params, tokens).compile()
    if self.reuse_outputs:
      prev = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=s.sharding),
                          self.eval_shape(params, tokens))
      self._compiled["donating"] = self.donating.lower(params, tokens, prev).compile()
    ma = self._compiled["plain"].memory_analysis()
    return {} if ma is None else {
        "temp_bytes": ma.temp_size_in_bytes, "output_bytes": ma.output_size_in_bytes,
        "temp_plus_output_bytes": ma.temp_size_in_bytes + ma.output_size_in_bytes,
        "argument_bytes": ma.argument_size_in_bytes}

  def _reusable(self, tokens) -> bool:
    if not (self.reuse_outputs and self._held) or self._held_shape != tokens.shape:
      return False
    for x in self._held:  # anyone else's reference (a cache kept, a logit) makes it unsafe
      if sys.getrefcount(x) > self._free:
        return False
    return True

  def __call__(self, params, tokens):
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((params, tokens))):
      return self._expand(self.plain(params, tokens))
    compiled = self._compiled if tokens.shape == self._compiled_shape else {}
    if self._reusable(tokens):
      previous = jax.tree.unflatten(self._held_tree, self._held)
      self._held = []
      out = compiled.get("donating", self.donating)(params, tokens, previous)
      del previous
      self.donated_calls += 1
    else:
      self._held = []
      out = compiled.get("plain", self.plain)(params, tokens)
    if self.reuse_outputs:
      self._held, self._held_tree = jax.tree.flatten(out)
      self._held_shape = tokens.shape
    return self._expand(out)

  def _expand(self, out):
    logits, unique = out
    return logits, {n: unique[self._aliases.get(n, n)] for n in self._names}
