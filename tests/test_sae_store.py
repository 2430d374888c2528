"""The activation store: model activations, exact resume, meshes, the disk cache, errors."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from interp.data import sources, tokenized
from interp.models import config, sharded, transformer
from interp.parallel import mesh as mesh_lib
from interp.sae import activation_cache as cache_lib
from interp.sae import activation_sources as sources_lib
from interp.sae import store as store_lib

CFG = config.attn_only(n_layers=2, d_model=32, n_heads=4, n_ctx=16, vocab_size=256, d_mlp=64)
SITE = "blocks.1.hook_resid_post"
SITES = ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out")
CTX, MODEL_BATCH, BUFFER, BATCH = 8, 8, 2, 16  # 64 activations a token batch, 8 batches a refill
GPT2_DIR = os.path.join(os.path.dirname(__file__), ".cache", "gpt2-tokenizer")


def _mesh(spec):
  return mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(spec),
                            jax.devices()[:1] if spec == "data:1" else None)


@functools.cache
def _params():
  return jax.jit(lambda key: transformer.init_params(CFG, key))(jax.random.key(0))


def _run_with_cache(cfg, params, tokens, sites):
  """`transformer.run_with_cache` at `sites` (jitted with only the cache out, so it compiles to
  the layers the sites need), on the host's default device."""
  out = _cache_fn(cfg, tuple(sites))(params, np.asarray(tokens))
  return {k: np.asarray(v) for k, v in out.items()}


@functools.cache
def _cache_fn(cfg, sites):
  return jax.jit(lambda p, t: transformer.run_with_cache(cfg, p, t, sites)[1])


def _store(spec="data:8", sites=SITE, params=None, source=None, **kw):
  mesh = _mesh(spec)
  placed, shardings = sharded.place(CFG, params or _params(), mesh)
  source = source or sources.make_source("corpus", 256)
  return store_lib.ModelStore(CFG, placed, mesh, sites, source, batch_size=BATCH,
                              context_length=CTX, model_batch_size=MODEL_BATCH,
                              buffer_batches=BUFFER, seed=3, param_shardings=shardings, **kw)


def _reference(store, t, sites):
  """Activations of token batch t by the unsharded `run_with_cache`."""
  cache = _run_with_cache(CFG, _params(), store.source.tokens(t), sites)
  drop = int(store.source.drop_bos)
  acts = [cache[s][:, drop:].reshape(-1, CFG.d_model) for s in sites]
  return acts[0] if len(acts) == 1 else np.stack(acts, axis=1)


@pytest.mark.parametrize("sites,drop_bos", [(SITE, False), (SITES, True)])
def test_activations_equal_run_with_cache(sites, drop_bos):
  store = _store(sites=sites, drop_bos=drop_bos)
  names = (sites,) if isinstance(sites, str) else sites
  for t in (0, 3):
    ref = _reference(store, t, names)
    got = store.source.chunk(t)
    assert got.shape == ref.shape == (MODEL_BATCH * (CTX - drop_bos),) + store.source.row_shape
    assert got.sharding.spec[0] == "data"
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5)
  batch = store.batch(0)
  assert batch.shape == (BATCH,) + store.source.row_shape and batch.sharding.spec[0] == "data"
  assert store.d_in == CFG.d_model


def test_every_activation_of_a_refill_is_served_exactly_once():
  store = _store()
  assert store.batches_per_refill == 8 and store.chunks_of(1) == [2, 3]
  served = np.concatenate([np.asarray(store.batch(s)) for s in range(8, 16)])
  buffer = np.concatenate([np.asarray(store.source.chunk(t)) for t in (2, 3)])
  np.testing.assert_array_equal(served, buffer[store.permutation(1)])
  assert not np.array_equal(store.permutation(1), store.permutation(2))


def test_reuse_serves_each_load_twice_reshuffled_and_runs_the_model_half_as_often():
  store = _store(reuse=2)
  assert store.chunks_of(2) == store.chunks_of(3) == [2, 3] and store.describe()["reuse"] == 2
  calls = []
  chunk = store.source.chunk
  store.source.chunk = lambda t: calls.append(t) or chunk(t)
  served = [np.concatenate([np.asarray(store.batch(s)) for s in range(8 * r, 8 * r + 8)])
            for r in (2, 3)]
  assert calls == [2, 3]  # refill 3 reshuffles refill 2's load
  buffer = np.concatenate([np.asarray(chunk(t)) for t in (2, 3)])
  for r, rows in zip((2, 3), served):
    np.testing.assert_array_equal(rows, buffer[store.permutation(r)])
  assert "reuse" not in _store().describe()  # older run folders' data.json still match
  with pytest.raises(ValueError, match="--buffer_reuse=0 must be an integer >= 1"):
    _store(reuse=0)


def test_batches_are_a_pure_function_of_the_step_on_any_mesh():
  store = _store()
  steps = (0, 5, 13, 7)  # 13 before 7: going back rebuilds refill 0
  first = {s: np.asarray(store.batch(s)) for s in steps}
  resumed = _store()  # a run restarted from scratch at step 13
  np.testing.assert_array_equal(np.asarray(resumed.batch(13)), first[13])
  for spec in ("data:1", "data:4,model:2"):
    other = _store(spec)
    for s in steps:
      np.testing.assert_allclose(np.asarray(other.batch(s)), first[s], atol=1e-5)
  served = np.concatenate([first[0], np.asarray(store.batch(1)), np.asarray(store.batch(2))])
  np.testing.assert_array_equal(store.sample(40), served[:40])
  desc = store.describe()
  json.dumps(desc)
  assert desc["sites"] == [SITE] and desc["source"]["model_config"]["d_model"] == CFG.d_model
  assert desc["rows_per_refill"] == 128 and desc["batches_per_refill"] == 8


def test_array_store_is_exact_across_meshes():
  data = np.random.default_rng(0).normal(size=(100, 2, 8)).astype(np.float32)  # 100 % 8 != 0
  stores = [store_lib.ArrayStore(data, 8, _mesh(s), seed=1) for s in ("data:8", "data:1",
                                                                       "data:4,model:2")]
  assert stores[0].batches_per_refill == 12  # 96 of the 100 rows an epoch
  epoch = np.concatenate([np.asarray(stores[0].batch(s)) for s in range(12)])
  np.testing.assert_array_equal(epoch, data[stores[0].permutation(0)[:96]])
  for other in stores[1:]:
    for s in (0, 11, 12, 30):
      np.testing.assert_array_equal(np.asarray(other.batch(s)), np.asarray(stores[0].batch(s)))
  assert stores[0].batch(0).shape == (8, 2, 8) and stores[0].d_in == 8
  np.testing.assert_array_equal(stores[0].sample(20), epoch[:20])


def test_disk_cache_round_trip_and_resume_after_a_kill(tmp_path):
  store = _store()
  out = str(tmp_path / "cache")
  meta = cache_lib.cache_activations(store, out, n_tokens=300, tokens_per_shard=48)
  assert meta["n_shards"] == 7 and [e["index"] for e in meta["shards"]] == list(range(7))
  assert meta["sites"] == [SITE] and meta["d_in"] == 32 and meta["dtype"] == "float32"
  stream = np.concatenate([np.asarray(store.source.chunk(t)) for t in range(6)])  # 384 rows
  for k in (0, 1, 6):  # shard 1 straddles token batches 0 and 1
    np.testing.assert_array_equal(np.load(cache_lib.shard_path(out, k)),
                                  stream[48 * k:48 * (k + 1)])

  cached = store_lib.CachedStore(out, BATCH, _mesh("data:8"), seed=5, buffer_shards=2)
  assert cached.refills_per_epoch == 3 and cached.batches_per_refill == 6
  batches = {s: np.asarray(cached.batch(s)) for s in (0, 7, 20)}
  epoch0 = sorted(c for r in range(3) for c in cached.chunks_of(r))
  assert len(set(epoch0)) == 6 and cached.chunks_of(3) != cached.chunks_of(0)
  again = store_lib.CachedStore(out, BATCH, _mesh("data:4,model:2"), seed=5, buffer_shards=2)
  for s, b in batches.items():
    np.testing.assert_array_equal(np.asarray(again.batch(s)), b)

  # A kill: shard 3 half-written (its .tmp left behind), shards 3-6 not yet in meta.json.
  files = {k: open(cache_lib.shard_path(out, k), "rb").read() for k in range(7)}
  times = {k: os.path.getmtime(cache_lib.shard_path(out, k)) for k in range(3)}
  killed = dict(meta, shards=meta["shards"][:3])
  with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(killed, f)
  for k in range(3, 7):
    os.remove(cache_lib.shard_path(out, k))
  with open(cache_lib.shard_path(out, 3) + ".tmp", "wb") as f:
    f.write(files[3][:100])
  with pytest.raises(cache_lib.CacheError, match=r"incomplete \(3 of 7 shards\)"):
    store_lib.CachedStore(out, BATCH, _mesh("data:8"))
  resumed = cache_lib.cache_activations(_store(), out, n_tokens=300, tokens_per_shard=48)
  assert resumed == meta and not [p for p in os.listdir(out) if p.endswith(".tmp")]
  for k in range(7):
    assert open(cache_lib.shard_path(out, k), "rb").read() == files[k]
  assert all(os.path.getmtime(cache_lib.shard_path(out, k)) == times[k] for k in range(3))


def test_bfloat16_cache_round_trip(tmp_path):
  data = np.random.default_rng(1).normal(size=(64, 2, 8)).astype(jax.numpy.bfloat16)
  mesh = _mesh("data:8")
  cache_lib.cache_activations(sources_lib.ArraySource(data, mesh), str(tmp_path), 64,
                              tokens_per_shard=32)
  assert json.load(open(tmp_path / "meta.json"))["dtype"] == "bfloat16"
  cached = store_lib.CachedStore(str(tmp_path), 8, mesh, seed=2, buffer_shards=2)
  direct = store_lib.ArrayStore(data, 8, mesh, seed=2)
  # Stored as bfloat16, served to the dictionary as float32 (exact widening).
  assert cached.source.dtype == direct.source.dtype == jax.numpy.bfloat16
  assert cached.batch(0).dtype == direct.batch(0).dtype == jax.numpy.float32
  epoch = np.concatenate([np.asarray(cached.batch(s)) for s in range(8)]).astype(np.float32)
  ref = np.asarray(data).astype(np.float32)
  key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))
  assert key(epoch) == key(ref)  # one refill holds both shards: every row once


def test_cache_errors_name_the_file_and_what_was_expected(tmp_path):
  data = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
  source = sources_lib.ArraySource(data, _mesh("data:8"), name="synthetic")
  out = str(tmp_path / "c")
  cache_lib.cache_activations(source, out, n_tokens=64, tokens_per_shard=32)
  mesh = _mesh("data:8")
  with pytest.raises(cache_lib.CacheError, match=r"meta.json: the cache has d_in=16, expected 32"):
    store_lib.CachedStore(out, 8, mesh, expect={"d_in": 32})
  with pytest.raises(cache_lib.CacheError, match=r"sites=\['synthetic'\], expected \['blocks"):
    store_lib.CachedStore(out, 8, mesh, expect={"sites": SITE})
  with pytest.raises(cache_lib.CacheError, match=r"dtype='float32', expected 'bfloat16'"):
    store_lib.CachedStore(out, 8, mesh, expect={"dtype": "bfloat16"})
  other = sources_lib.ArraySource(data[:, :8], mesh, name="synthetic")
  with pytest.raises(cache_lib.CacheError, match=r"meta.json holds other activations: d_in is 16"):
    cache_lib.cache_activations(other, out, n_tokens=64, tokens_per_shard=32)

  shard = cache_lib.shard_path(out, 1)
  raw = open(shard, "rb").read()
  with open(shard, "wb") as f:  # truncated
    f.write(raw[:-40])
  store = store_lib.CachedStore(out, 8, mesh, buffer_shards=1)
  with pytest.raises(cache_lib.CacheError, match=r"shard_000001.npy is truncated or corrupt: "
                     r"\d+ bytes, expected \d+ bytes: 32 rows x \[16\] float32"):
    for step in range(8):  # epoch 0 reads both shards
      store.batch(step)
  with open(shard, "wb") as f:  # same size, one value changed
    f.write(raw[:-4] + b"\0\0\0\0")
  with pytest.raises(cache_lib.CacheError, match=r"shard_000001.npy is corrupt: SHA-256"):
    for step in range(8):
      store_lib.CachedStore(out, 8, mesh, buffer_shards=1).batch(step)


def test_nan_activations_name_the_step_and_site(tmp_path):
  params = _params()
  w_e = np.asarray(params["embed"]["W_E"]).copy()
  w_e[ord("e")] = np.inf  # every 'e' in the corpus poisons its position downstream
  params = dict(params, embed=dict(params["embed"], W_E=w_e))
  store = _store(params=params)
  with pytest.raises(sources_lib.NonFiniteActivationError,
                     match=rf"at step 9, site {SITE} \(\d+ of 2048 values\) in token batch 2 of "
                           r"refill 1"):
    store.batch(9)
  with pytest.raises(sources_lib.NonFiniteActivationError, match=rf"token batch 0, site {SITE}"):
    cache_lib.cache_activations(store, str(tmp_path), 64, tokens_per_shard=64)


def test_unknown_or_unsuitable_hook_site():
  with pytest.raises(ValueError, match=r"unknown --hook name.*'blocks.2.hook_resid_post' \(did "
                                       r"you mean blocks.1.hook_resid_post"):
    _store(sites="blocks.2.hook_resid_post")
  with pytest.raises(ValueError, match=r"--hook=blocks.0.attn.hook_pattern: attention"):
    sources_lib.check_sites(CFG, "blocks.0.attn.hook_pattern")
  with pytest.raises(ValueError, match="different widths"):
    sources_lib.check_sites(CFG, ("blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"))
  with pytest.raises(ValueError, match=r"--batch_size=12 is not divisible"):
    store_lib.ModelStore(CFG, _params(), _mesh("data:8"), SITE, sources.make_source("repeat", 256),
                         batch_size=12, context_length=CTX)


def test_gpt2_tokenized_corpus():
  if not os.path.isfile(os.path.join(GPT2_DIR, "vocab.bpe")):
    pytest.skip("GPT-2 tokenizer files not fetched (tests/fetch_gpt2_tokenizer.sh)")
  from interp.models.tokenizer_bpe import BPETokenizer
  tok = BPETokenizer.from_folder(GPT2_DIR)
  source = tokenized.make_source("corpus", tok, vocab_size=50257)
  assert source.bos_id is None and source.describe()["tokens"] == len(source.tokens) > 100_000
  windows = source.batch(0, 4, 8, 16)
  np.testing.assert_array_equal(windows, source.batch(0, 4, 8, 16))
  text = tokenized.corpus_text()
  for row in windows[:2]:
    assert tok.decode(row) in text
  cfg = config.gpt2(n_layers=1, d_model=32, n_heads=2, n_ctx=16)
  mesh = _mesh("data:8")
  params = jax.jit(lambda key: transformer.init_params(cfg, key))(jax.random.key(0))
  store = store_lib.ModelStore(cfg, params, mesh, "blocks.0.hook_resid_post", source,
                               batch_size=32, context_length=16, model_batch_size=8,
                               buffer_batches=1, model_name="gpt2")
  assert not store.source.drop_bos and store.batches_per_refill == 4
  cache = _run_with_cache(cfg, params, store.source.tokens(0), ("blocks.0.hook_resid_post",))
  np.testing.assert_allclose(np.asarray(store.source.chunk(0)),
                             cache["blocks.0.hook_resid_post"].reshape(-1, 32), atol=1e-5)


def test_gemma_smoke(gemma, gemma_tokenizer):
  cfg, params = gemma
  site = "blocks.6.hook_resid_post"
  source = tokenized.from_text(tokenized.corpus_text()[:20_000], gemma_tokenizer, "corpus[:20000]")
  assert source.bos_id == gemma_tokenizer.bos_id
  # One device: placing Gemma on 8 simulated ones costs more time than this test may take (the
  # toy model covers the meshes).
  store = store_lib.ModelStore(cfg, params, _mesh("data:1"), site, source, batch_size=5,
                               context_length=16, model_batch_size=2, buffer_batches=1,
                               model_name="gemma-3-270m")
  assert store.source.drop_bos and store.batches_per_refill == 6  # 2 x 15 activations a refill
  tokens = np.asarray(store.source.tokens(0))
  assert (tokens[:, 0] == gemma_tokenizer.bos_id).all()
  ref = _run_with_cache(cfg, params, tokens, (site,))[site][:, 1:].reshape(-1, cfg.d_model)
  got = np.concatenate([np.asarray(store.batch(s)) for s in range(6)])
  np.testing.assert_allclose(got, ref[store.permutation(0)], rtol=1e-4, atol=1e-3)
  assert store.describe()["model"] == "gemma-3-270m"
