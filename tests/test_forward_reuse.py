"""`sharded.make_forward`'s output reuse, shared alias buffers and narrowed captures."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import config, hooks, sharded, transformer
from interp.parallel import mesh as mesh_lib

CFG = config.attn_only(n_layers=2, d_model=32, n_heads=4, n_ctx=16, vocab_size=64)
NAMES = ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre",
         "blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post")


@pytest.fixture(scope="module")
def model():
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:-1"))
  params, shardings = sharded.init(CFG, jax.random.key(0), mesh)
  rows = np.random.default_rng(0).integers(0, CFG.vocab_size, (8, 16), np.int32)
  return mesh, params, shardings, rows, mesh_lib.global_batch(mesh, rows)


def test_reuse_donates_only_unheld_outputs_and_keeps_numbers(model):
  mesh, params, shardings, rows, tokens = model
  fwd = sharded.make_forward(CFG, mesh, shardings, capture=NAMES)
  ref_logits, ref_cache = transformer.run_with_cache(CFG, params, jnp.asarray(rows), NAMES)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # an unusable donation warns: it must not happen
    kept_logits, kept = fwd(params, tokens)
    held = np.asarray(kept["blocks.1.hook_resid_post"])
    for _ in range(3):
      logits, cache = fwd(params, tokens)
    assert fwd.donated_calls == 0  # the first outputs are still held: never donated
    del kept_logits, kept
    for _ in range(3):
      del logits, cache
      logits, cache = fwd(params, tokens)
  assert fwd.donated_calls == 3
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5)
  for n in NAMES:
    np.testing.assert_allclose(np.asarray(cache[n]), np.asarray(ref_cache[n]), atol=1e-5)
  np.testing.assert_array_equal(held, np.asarray(cache["blocks.1.hook_resid_post"]))
  off = sharded.make_forward(CFG, mesh, shardings, capture=NAMES, reuse_outputs=False)
  for _ in range(3):
    logits, cache = off(params, tokens)
    del logits, cache
  assert off.donated_calls == 0


def test_aliased_hooks_share_one_buffer(model):
  mesh, params, shardings, rows, tokens = model
  _, cache = sharded.make_forward(CFG, mesh, shardings, capture=NAMES)(params, tokens)
  assert cache["blocks.0.hook_resid_post"] is cache["blocks.1.hook_resid_pre"]
  assert cache["blocks.0.hook_resid_pre"] is not cache["blocks.0.hook_resid_post"]
  # Eagerly too, and an edit between the two names breaks the sharing.
  _, eager = transformer.run_with_cache(CFG, params, jnp.asarray(rows), NAMES)
  assert eager["blocks.0.hook_resid_post"] is eager["blocks.1.hook_resid_pre"]
  _, edited = transformer.run_with_cache(CFG, params, jnp.asarray(rows), NAMES,
                                         edits={"blocks.1.hook_resid_pre": lambda x: x + 1})
  np.testing.assert_allclose(np.asarray(edited["blocks.1.hook_resid_pre"]),
                             np.asarray(edited["blocks.0.hook_resid_post"]) + 1, atol=1e-6)


def test_capture_positions_and_dtype(model):
  mesh, params, shardings, rows, tokens = model
  _, full = transformer.run_with_cache(CFG, params, jnp.asarray(rows), NAMES)
  fwd = sharded.make_forward(CFG, mesh, shardings, capture=NAMES, capture_positions=(0, -1),
                             capture_dtype="bfloat16")
  _, cache = fwd(params, tokens)
  pat = cache["blocks.1.attn.hook_pattern"]
  assert pat.shape == (8, 4, 2, 16) and pat.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(pat, np.float32),
                             np.asarray(full["blocks.1.attn.hook_pattern"])[:, :, [0, 15]],
                             atol=4e-3)
  res = cache["blocks.1.hook_resid_post"]
  assert res.shape == (8, 2, 32)
  np.testing.assert_allclose(np.asarray(res, np.float32),
                             np.asarray(full["blocks.1.hook_resid_post"])[:, [0, 15]],
                             rtol=1e-2, atol=1e-2)
  with pytest.raises(ValueError, match="outside the 16 positions"):
    transformer.run_with_cache(CFG, params, jnp.asarray(rows), NAMES, positions=(16,))
  with pytest.raises(ValueError, match="capture_dtype='int32'"):
    hooks.Hooks(capture=NAMES, capture_dtype="int32")
