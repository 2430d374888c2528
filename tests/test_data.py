"""Token sources: determinism per (seed, step), structure, the corpus, files, and global batches."""

import jax
import numpy as np
import pytest

from interp.data import corpus, sources, tokenize_bytes
from interp.parallel import mesh as mesh_lib


def test_default_corpus_is_real_english_text():
  tokens = corpus.default_corpus()
  assert tokens.dtype == np.uint8 and len(tokens) > 300_000
  text = tokenize_bytes.decode(tokens)
  for phrase in ("The \"if\" statement", "exception", "while"):
    assert phrase in text
  assert corpus.fingerprint(tokens) == corpus.fingerprint(corpus.default_corpus())


def test_bytes_round_trip():
  text = "induction heads — résumé"
  assert tokenize_bytes.decode(tokenize_bytes.encode(text)) == text
  assert tokenize_bytes.encode(text).max() < tokenize_bytes.VOCAB_SIZE


@pytest.mark.parametrize("spec", ["corpus", "repeat:8"])
def test_batches_are_a_pure_function_of_seed_and_step(spec):
  source = sources.make_source(spec, 256)
  a = source.batch(seed=3, step=7, batch_size=8, length=33)
  assert a.shape == (8, 33) and a.dtype == np.int32
  np.testing.assert_array_equal(a, sources.make_source(spec, 256).batch(3, 7, 8, 33))
  assert not np.array_equal(a, source.batch(3, 8, 8, 33))
  assert not np.array_equal(a, source.batch(4, 7, 8, 33))
  # A process's rows are exactly its slice of the global batch, whatever the process count.
  np.testing.assert_array_equal(source.batch(3, 7, 8, 33, rows=slice(2, 6)), a[2:6])


def test_corpus_windows_are_contiguous_text():
  tokens = corpus.default_corpus()
  batch = sources.make_source("corpus", 256).batch(0, 0, 4, 65)
  flat = tokens.tobytes()
  for row in batch:
    assert bytes(row.astype(np.uint8)) in flat


def test_repeated_segments_repeat_with_their_period():
  batch = sources.make_source("repeat:8", 100).batch(0, 5, 6, 33)
  np.testing.assert_array_equal(batch[:, 8:], batch[:, :-8])
  assert batch.min() >= 0 and batch.max() < 100
  assert len({tuple(r[:8]) for r in batch}) == 6  # a fresh segment per row
  with pytest.raises(ValueError, match="segment length"):
    sources.make_source("repeat:40", 100).batch(0, 0, 2, 33)


def test_text_files_by_glob(tmp_path):
  (tmp_path / "a.txt").write_text("alpha " * 20)
  (tmp_path / "b.txt").write_text("beta " * 20)
  source = sources.make_source(f"files:{tmp_path}/*.txt", 256)
  text = tokenize_bytes.decode(source.tokens)
  assert text.startswith("alpha") and "beta" in text
  assert source.describe()["tokens"] == len(source.tokens)
  with pytest.raises(FileNotFoundError, match="matched no files"):
    sources.make_source(f"files:{tmp_path}/*.md", 256)


@pytest.mark.parametrize("spec,message", [
    ("wikipedia", "unknown source 'wikipedia'; valid: corpus \\| files:GLOB \\| repeat"),
    ("files:", "give a glob"),
    ("repeat:x", "positive integer"),
    ("corpus:big", "takes no argument"),
])
def test_bad_data_flag_lists_the_choices(spec, message):
  with pytest.raises(ValueError, match=message):
    sources.make_source(spec, 256)


def test_global_batch_is_sharded_over_data():
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:4,model:2"))
  source = sources.make_source("repeat:4", 256)
  batch = sources.make_batches(source, mesh, seed=1, batch_size=8, length=17)(3)
  assert batch.shape == (8, 17)
  assert batch.sharding.spec == jax.sharding.PartitionSpec("data", None)
  np.testing.assert_array_equal(np.asarray(batch), source.batch(1, 3, 8, 17))


def test_batch_size_not_divisible_by_data_axis_names_the_flag():
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:4,model:2"))
  with pytest.raises(ValueError, match=r"--batch_size=6 is not divisible by the mesh's data axis"):
    sources.make_batches(sources.make_source("repeat", 256), mesh, 0, 6, 33)
