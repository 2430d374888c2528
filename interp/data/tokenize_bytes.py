"""Byte-level tokens: a token is one byte of UTF-8 text, so the vocabulary is exactly 256.

There is no BOS or padding token. Training windows are random crops of a byte stream, so most
of them start mid-document; a BOS token would only mark the rare window that begins a file, and
keeping the vocabulary at 256 lets a token id be read back as a byte with no table.
"""

from __future__ import annotations

import numpy as np

VOCAB_SIZE = 256


def encode(text: str | bytes) -> np.ndarray:
  """UTF-8 bytes of `text` as a uint8 array (bytes are taken as they are)."""
  raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
  return np.frombuffer(raw, dtype=np.uint8).copy()


def decode(tokens) -> str:
  """Text of byte tokens; invalid UTF-8 (e.g. a window cut mid-character) shows as U+FFFD."""
  return np.asarray(tokens, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")
