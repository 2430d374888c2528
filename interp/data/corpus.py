"""Text corpora as one byte stream: the built-in default, or text files named by a glob.

The default corpus is CPython's `pydoc_data.topics`: the topic pages of the Python Language
Reference (the text `help("if")` prints), about 0.47 MB of English technical prose in 3.11.
We use it because it is real, varied natural language with code mixed in, it ships inside every
CPython install (so runs need no download and nothing reaches the network), its licence (PSF)
allows it, and it is large enough that a small model trained on it for a few thousand steps
learns words, spelling and syntax rather than memorising it. Its exact bytes vary with the
Python version, so runs that must agree should use the same interpreter (a run records the
corpus size and a content hash in its data.json).
"""

from __future__ import annotations

import glob
import hashlib
import os

import numpy as np

from interp.data import tokenize_bytes

# Files and topics are joined with a blank line, so no window silently glues two texts together
# mid-word.
SEPARATOR = b"\n\n"


def default_corpus() -> np.ndarray:
  """The Python Language Reference topics as byte tokens (uint8), topics in sorted order."""
  from pydoc_data import topics  # stdlib; imported lazily because it is a large module
  pages = [topics.topics[name] for name in sorted(topics.topics)]
  return tokenize_bytes.encode(SEPARATOR.decode().join(pages))


def text_files(pattern: str) -> np.ndarray:
  """Byte tokens of every file matching `pattern` (recursive `**` allowed), in sorted order.

  Raises:
    FileNotFoundError: when the pattern matches no regular file.
  """
  paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                 if os.path.isfile(p))
  if not paths:
    raise FileNotFoundError(f"--data=files:{pattern}: the glob matched no files "
                            f"(relative to {os.getcwd()!r})")
  chunks = []
  for path in paths:
    with open(path, "rb") as f:
      chunks.append(f.read())
  return np.frombuffer(SEPARATOR.join(chunks), dtype=np.uint8).copy()


def fingerprint(tokens: np.ndarray) -> str:
  """Short content hash, recorded with a run so a changed corpus is noticed."""
  return hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest()[:16]
