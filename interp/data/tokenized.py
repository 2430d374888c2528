"""Token windows of text under a real tokenizer (Gemma's SentencePiece, GPT-2's BPE).

`interp.data.sources` reads text as bytes (vocabulary 256), which is what the toy transformers
train on. A pretrained model needs its own tokens: here the text (the built-in corpus or files)
is tokenized once, kept in memory, and cut into random windows per (seed, step) exactly as
`sources.TokenWindows` does, with the tokenizer's BOS prepended when it uses one (Gemma does,
GPT-2 does not). Windows then have the same contract as every other source: a pure function of
(seed, step), each process computing only its rows.

  tok = SPMTokenizer.from_gguf(path)
  source = tokenized.make_source("corpus", tok)
  source.batch(seed=0, step=3, batch_size=8, length=128)   # int32 [8, 128], column 0 = <bos>
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np

from interp.data import corpus, sources, tokenize_bytes

# (tokenizer object, sha256 of the text) -> token ids; a few entries, most recent last.
_ENCODED: collections.OrderedDict = collections.OrderedDict()
_MAX_CACHED = 4


def corpus_text(spec: str | sources.DataSpec = "corpus") -> str:
  """The raw text of a `--data` text source (`corpus` or `files:GLOB`), as one string.

  The built-in corpus is valid UTF-8, so this is exactly the text its byte tokens spell; files
  with invalid UTF-8 show U+FFFD where their bytes do not decode.
  """
  spec = sources.DataSpec.parse(spec) if isinstance(spec, str) else spec
  if spec.kind == sources.SourceKind.CORPUS:
    return tokenize_bytes.decode(corpus.default_corpus())
  if spec.kind == sources.SourceKind.FILES:
    return tokenize_bytes.decode(corpus.text_files(spec.arg))
  raise ValueError(f"--data={spec}: not a text source; text sources are corpus | files:GLOB")


def bos_id(tokenizer) -> int | None:
  """The BOS id a tokenizer starts every text with, or None (GPT-2's BPE has no BOS)."""
  if getattr(tokenizer, "add_bos", False):
    return int(tokenizer.bos_id)
  return None


def encode(tokenizer, text: str) -> np.ndarray:
  """int32 token ids of `text` without BOS, memoised per (tokenizer, text) in memory."""
  key = (tokenizer, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
  if key in _ENCODED:
    _ENCODED.move_to_end(key)
    return _ENCODED[key]
  if hasattr(tokenizer, "add_bos"):
    ids = tokenizer.encode(text, add_bos=False)
  else:
    ids = tokenizer.encode(text)
  out = np.asarray(ids, dtype=np.int32)
  out.setflags(write=False)
  _ENCODED[key] = out
  while len(_ENCODED) > _MAX_CACHED:
    _ENCODED.popitem(last=False)
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedWindows:
  """Random windows of a tokenized text, each starting with `bos_id` when it is not None.

  Attributes:
    tokens: the text's token ids (int32, no BOS).
    name: the `--data` spec the text came from.
    bos_id: prepended to every window (its length includes it), or None.
    tokenizer: a short description of the tokenizer, for `describe`.
  """

  tokens: np.ndarray
  name: str
  bos_id: int | None = None
  tokenizer: str = ""

  def batch(self, seed, step, batch_size, length, rows=slice(None)):
    """Rows `rows` of the global batch for `step`: int32 [rows, length]."""
    body = length - (self.bos_id is not None)
    if body < 1:
      raise ValueError(f"window length {length} leaves no room for text after BOS")
    windows = sources.TokenWindows(self.tokens, self.name).batch(seed, step, batch_size, body,
                                                                 rows)
    if self.bos_id is None:
      return windows
    bos = np.full((windows.shape[0], 1), self.bos_id, np.int32)
    return np.concatenate([bos, windows], axis=1)

  def describe(self):
    return {"source": self.name, "tokenizer": self.tokenizer, "tokens": int(len(self.tokens)),
            "bos_id": self.bos_id, "sha256_16": corpus.fingerprint(self.tokens)}


def describe_tokenizer(tokenizer) -> str:
  return f"{type(tokenizer).__name__}(vocab_size={tokenizer.vocab_size})"


def from_text(text: str, tokenizer, name: str = "text") -> TokenizedWindows:
  """Windows of `text` under `tokenizer` (tokenized once; cached in memory)."""
  return TokenizedWindows(encode(tokenizer, text), name, bos_id(tokenizer),
                          describe_tokenizer(tokenizer))


def make_source(spec: str | sources.DataSpec, tokenizer=None, vocab_size: int = 256):
  """The token source a `--data` value names, under `tokenizer` (None: byte tokens).

  Args:
    spec: `corpus`, `files:GLOB` or `repeat[:SEGMENT_LEN]`.
    tokenizer: an object with `encode(text)` and `vocab_size` (and `add_bos`/`bos_id` if it
      uses a BOS), e.g. `SPMTokenizer` or `BPETokenizer`; None keeps `sources.make_source`.
    vocab_size: the model's vocabulary (byte sources need >= 256; repeat draws below it).

  Returns:
    A `sources.Source`.
  """
  spec = sources.DataSpec.parse(spec) if isinstance(spec, str) else spec
  if tokenizer is None or spec.kind == sources.SourceKind.REPEAT:
    return sources.make_source(spec, vocab_size)
  if tokenizer.vocab_size > vocab_size:
    raise ValueError(f"--data={spec}: the tokenizer has {tokenizer.vocab_size} tokens, more than "
                     f"the model's vocab_size={vocab_size}")
  return from_text(corpus_text(spec), tokenizer, str(spec))
