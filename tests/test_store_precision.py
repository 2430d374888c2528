"""The activation store in bfloat16 (`--activation_dtype`): half the bytes on device and on disk,
an exact on-disk round trip, float32 batches for the dictionary, and a dictionary trained from
it that stays close to the float32 one."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from interp.data import sources
from interp.models import config, sharded, transformer
from interp.parallel import mesh as mesh_lib
from interp.sae import activation_cache as cache_lib
from interp.sae import experiment
from interp.sae import store as store_lib
from interp.sae import synthetic
from interp.sae import train as sae_train
from interp.sae.activation_sources import to_host
from interp.sae.config import SAEConfig
from interp.train.optim import OptimizerConfig

CFG = config.attn_only(n_layers=2, d_model=32, n_heads=4, n_ctx=16, vocab_size=256, d_mlp=64)
SITE = "blocks.1.hook_resid_post"
CTX, MODEL_BATCH, BUFFER, BATCH = 8, 8, 2, 16  # 64 activations a token batch


@functools.cache
def _params():
  return jax.jit(lambda key: transformer.init_params(CFG, key))(jax.random.key(0))


def _store(dtype, mesh):
  placed, shardings = sharded.place(CFG, _params(), mesh)
  return store_lib.ModelStore(CFG, placed, mesh, SITE, sources.make_source("corpus", 256),
                              batch_size=BATCH, context_length=CTX, model_batch_size=MODEL_BATCH,
                              buffer_batches=BUFFER, seed=3, param_shardings=shardings,
                              dtype=dtype)


def _payload(path: str) -> int:
  """Bytes of a .npy shard after its header."""
  return os.path.getsize(path) - np.load(path, mmap_mode="r").offset


def test_bf16_store_halves_buffer_and_cache_and_round_trips_exactly(tmp_path):
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:2"), jax.devices()[:2])
  f32, bf16 = _store("float32", mesh), _store("bfloat16", mesh)
  a, b = f32.batch(0), bf16.batch(0)
  # Batches reach the dictionary as float32; the bfloat16 store rounded each value once.
  assert a.dtype == b.dtype == jnp.float32
  rounded = np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(b), rounded)
  assert bf16.buffer_bytes * 2 == f32.buffer_bytes == BUFFER * MODEL_BATCH * CTX * 32 * 4
  metas, sizes = {}, {}
  for name, store in (("float32", f32), ("bfloat16", bf16)):
    out = str(tmp_path / name)
    metas[name] = cache_lib.cache_activations(store, out, 128, tokens_per_shard=64)
    sizes[name] = [_payload(cache_lib.shard_path(out, k)) for k in range(2)]
  assert metas["bfloat16"]["dtype"] == "bfloat16" and metas["float32"]["dtype"] == "float32"
  assert [2 * s for s in sizes["bfloat16"]] == sizes["float32"] == [64 * 32 * 4] * 2
  print(f"\nshard payload bytes float32 {sizes['float32']}, bfloat16 {sizes['bfloat16']}; "
        f"buffer bytes {f32.buffer_bytes} vs {bf16.buffer_bytes}")
  # The disk format (uint16 bits, meta.json's dtype) gives back the very bits the store held.
  cached = store_lib.CachedStore(str(tmp_path / "bfloat16"), BATCH, mesh, seed=3,
                                 expect={"dtype": "bfloat16"})
  held = to_host(bf16.source.chunk(0))
  assert held.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(np.asarray(cached.source.shard(0)).view(np.uint16),
                                held.view(np.uint16))
  assert cached.batch(0).dtype == jnp.float32


def test_cache_of_another_dtype_is_one_line_naming_flag_and_folder(tmp_path):
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:8"))
  data = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
  out = str(tmp_path / "cache")
  cache_lib.cache_activations(store_lib.ArrayStore(data, 8, mesh), out, 64,
                              tokens_per_shard=64)
  experiment.check_cache_dtype(out, "float32")
  with pytest.raises(ValueError) as e:
    experiment.check_cache_dtype(out, "bfloat16")
  assert str(e.value) == (f"--activation_dtype=bfloat16, but --cache_dir={out} holds float32 "
                          f"activations; pass --activation_dtype=float32 or another --cache_dir")
  with pytest.raises(ValueError, match=r"^--activation_dtype='fp16' is not one of: float32, "
                                       r"bfloat16$"):
    experiment.SourceConfig(source="toy:x", activation_dtype="fp16")
  with pytest.raises(ValueError, match=r"^--activation_dtype=bfloat16 applies to model sources"):
    experiment.SourceConfig(source="planted", activation_dtype="bfloat16")


def test_sae_from_a_bf16_store_is_close_to_one_from_float32():
  """The same topk SAE trained 30 steps on planted activations served from a float32 store and
  from a bfloat16 one (same shuffle): the inputs differ by bfloat16's rounding (2**-9 relative)."""
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1"), jax.devices()[:1])
  features = synthetic.PlantedFeatures(d=32, n_features=64, density=1 / 16)
  data = np.asarray(features.sample(jax.random.key(0), 2048))
  cfg = SAEConfig(d_in=32, d_sae=64, activation="topk", k=4)
  progs = sae_train.programs(cfg, OptimizerConfig(lr=3e-3, warmup_steps=0, grad_clip=0.0), mesh,
                             init_sample=256)
  final, losses = {}, {}
  for dtype in ("float32", "bfloat16"):
    store = store_lib.ArrayStore(data, 128, mesh, seed=1, dtype=dtype)
    # Initialised from the same float32 sample, so only the streamed batches differ.
    state = progs.init(jax.random.key(0), jnp.asarray(data[:256]))
    for step in range(30):
      state, metrics = progs.step(state, store.batch(step))
    final[dtype], losses[dtype] = jax.device_get(state.params), float(metrics["loss"])
  # Relative to the whole state's scale: Adam normalises each update, so a leaf near zero (a
  # bias) moves by the learning rate whatever its gradient, and per-leaf ratios mean nothing.
  a, b = (np.concatenate([np.ravel(final[d][k]) for k in sorted(final[d])]) for d in final)
  rel = float(np.linalg.norm(a - b) / np.linalg.norm(a))
  worst = float(np.abs(a - b).max() / np.abs(a).max())
  print(f"\nSAE after 30 steps: loss float32 {losses['float32']:.5f}, bf16-store "
        f"{losses['bfloat16']:.5f}; state difference |d|/|x| {rel:.2e}, max |d| / max |x| "
        f"{worst:.2e}")
  assert abs(losses["float32"] - losses["bfloat16"]) <= 0.02 * losses["float32"]
  assert rel <= 1e-2 and worst <= 1e-2
