"""SentencePiece BPE tokenizer (Gemma's), built from a GGUF file's vocabulary.

  tok = SPMTokenizer.from_gguf(default_gemma_path())
  ids = tok.encode("Hello world")        # [2, 9259, 1902]  (<bos> first)
  tok.decode(ids)                        # "<bos>Hello world"

Encoding, as SentencePiece's BPE model (and llama.cpp's llm_tokenizer_spm) does it:
  1. ' ' becomes '▁'. Gemma adds no leading '▁' (the file's add_space_prefix is false), and a
     literal '▁' in the text is a space like any other (llama.cpp alone keeps it apart).
  2. Pieces that are never merged are cut out whole, leftmost-longest first: the user-defined ones
     (Gemma: runs of up to 31 spaces, of newlines and of tabs, some HTML tags) always, the control
     ones (<bos>, <start_of_turn>, ...) when `parse_special`.
  3. The rest is split into characters, and the adjacent pair whose concatenation is the
     best-scoring normal piece is merged, repeatedly, ties going to the leftmost pair.
  4. A character that is not a piece becomes its UTF-8 bytes, as the <0xNN> tokens.

The merge order comes from the piece scores. Gemma's GGUF scores its normal pieces -(rank) in file
order, the order transformers derives from token positions, so the two agree; they part on space
runs longer than 31, which transformers builds from merges (40 -> 16 + 24) and SentencePiece and
this class match whole (31 + 9). Speed: ~80k tokens/s on one CPU core.
"""

from __future__ import annotations

import heapq

# llama.cpp's token types (tokenizer.ggml.token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # '▁', SentencePiece's visible space


class SPMTokenizer:
  """Gemma's tokenizer: SentencePiece BPE with byte fallback.

  Attributes:
    vocab_size: number of token ids.
    bos_id, eos_id: ids of <bos> and <eos>.
    add_bos: whether `encode` starts with <bos> by default (the file's add_bos_token).
  """

  def __init__(self, tokens, scores, token_types, *, bos_id: int, eos_id: int,
               unk_id: int | None = None, add_bos: bool = True, add_space_prefix: bool = False):
    """Builds the tokenizer from a vocabulary.

    Args:
      tokens: piece strings, indexed by id.
      scores: merge score of each piece (higher merges first).
      token_types: llama.cpp type of each piece (NORMAL, CONTROL, USER_DEFINED, BYTE, ...).
      bos_id, eos_id, unk_id: special ids.
      add_bos: default for `encode(..., add_bos=None)`.
      add_space_prefix: prepend '▁' to the text, as SentencePiece's add_dummy_prefix.
    """
    if not len(tokens) == len(scores) == len(token_types):
      raise ValueError(f"vocabulary arrays disagree: {len(tokens)} tokens, {len(scores)} scores, "
                       f"{len(token_types)} types")
    self._pieces = list(tokens)
    self._types = [int(t) for t in token_types]
    self.vocab_size = len(self._pieces)
    self.bos_id, self.eos_id, self.unk_id = int(bos_id), int(eos_id), unk_id
    self.add_bos, self.add_space_prefix = bool(add_bos), bool(add_space_prefix)
    # Only normal pieces take part in merges and stand for characters; the rest are whole-match.
    self._normal = {}
    self._score = {}
    for i, (piece, score, kind) in enumerate(zip(self._pieces, scores, self._types)):
      if kind == NORMAL and piece not in self._normal:
        self._normal[piece] = i
        self._score[piece] = float(score)
    self._byte_ids = [None] * 256
    self._byte_values = {}
    for i, (piece, kind) in enumerate(zip(self._pieces, self._types)):
      if kind == BYTE and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        self._byte_ids[int(piece[3:5], 16)] = i
        self._byte_values[i] = int(piece[3:5], 16)
    # Whole pieces are matched after ' ' -> '▁', as SentencePiece does: llama.cpp's converter
    # spells Gemma's space-run pieces with real spaces, so they are spelled back here.
    self._whole = {True: _WholeMatcher(), False: _WholeMatcher()}
    for i, (piece, kind) in enumerate(zip(self._pieces, self._types)):
      if piece and kind in (USER_DEFINED, CONTROL):
        for parse_special in (True, False):
          if kind == USER_DEFINED or parse_special:
            self._whole[parse_special].add(piece.replace(" ", SPACE), i)

  @classmethod
  def from_gguf(cls, path=None) -> "SPMTokenizer":
    """The tokenizer stored in a GGUF file's metadata (None: Gemma 3 270M's, from its package).

    Raises:
      ValueError: naming the file, if it is unreadable or holds no SentencePiece vocabulary.
    """
    from interp.models import gguf_loader
    f = gguf_loader.read_gguf(gguf_loader.default_gemma_path() if path is None else path)
    md = f.metadata
    model = md.get("tokenizer.ggml.model")
    if model != "llama":  # llama.cpp's name for SentencePiece vocabularies
      raise ValueError(f"GGUF file {f.path!r} has tokenizer model {model!r}; SPMTokenizer reads "
                       f"SentencePiece ('llama') vocabularies")
    for key in ("tokens", "scores", "token_type", "bos_token_id", "eos_token_id"):
      if "tokenizer.ggml." + key not in md:
        raise ValueError(f"GGUF file {f.path!r} lacks metadata key 'tokenizer.ggml.{key}'")
    return cls(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.scores"],
               md["tokenizer.ggml.token_type"], bos_id=md["tokenizer.ggml.bos_token_id"],
               eos_id=md["tokenizer.ggml.eos_token_id"],
               unk_id=md.get("tokenizer.ggml.unknown_token_id"),
               add_bos=md.get("tokenizer.ggml.add_bos_token", True),
               add_space_prefix=md.get("tokenizer.ggml.add_space_prefix", False))

  def encode(self, text: str, add_bos: bool | None = None, *, parse_special: bool = True,
             ) -> list[int]:
    """Token ids of `text`.

    Args:
      text: the string.
      add_bos: start with <bos>; None uses the file's setting (True for Gemma).
      parse_special: match control pieces such as "<start_of_turn>" written in the text (as
        transformers does); False tokenizes them as plain text.

    Returns:
      The ids, as a list of ints.
    """
    ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) else []
    text = text.replace(" ", SPACE)
    if self.add_space_prefix and text:
      text = SPACE + text
    start = 0
    for begin, end, token in self._whole[parse_special].find_all(text):
      self._encode_plain(text[start:begin], ids)
      ids.append(token)
      start = end
    self._encode_plain(text[start:], ids)
    return ids

  def _encode_plain(self, text: str, out: list[int]) -> None:
    if not text:
      return
    for piece in self._merge(text):
      token = self._normal.get(piece)
      if token is not None:
        out.append(token)
        continue
      for byte in piece.encode("utf-8"):  # byte fallback
        token = self._byte_ids[byte]
        out.append(self.unk_id if token is None else token)

  def _merge(self, text: str) -> list[str]:
    """BPE: merge the best-scoring adjacent pair until none is a piece (a heap of bigrams)."""
    pieces: list[str | None] = list(text)
    nxt = list(range(1, len(pieces) + 1))
    nxt[-1] = -1
    prev = list(range(-1, len(pieces) - 1))
    score = self._score

    def bigram(i):
      j = nxt[i]
      if j == -1:
        return None
      merged = pieces[i] + pieces[j]
      s = score.get(merged)
      return None if s is None else (-s, i, merged)  # best score first, then leftmost

    heap = [b for b in map(bigram, range(len(pieces) - 1)) if b]
    heapq.heapify(heap)
    while heap:
      _, i, merged = heapq.heappop(heap)
      j = nxt[i]
      # Stale entry: one side has since been merged into something else.
      if pieces[i] is None or j == -1 or pieces[i] + pieces[j] != merged:
        continue
      pieces[i], pieces[j] = merged, None
      nxt[i] = nxt[j]
      if nxt[j] != -1:
        prev[nxt[j]] = i
      for k in (prev[i], i):
        if k != -1 and (b := bigram(k)):
          heapq.heappush(heap, b)
    return [p for p in pieces if p is not None]

  def decode(self, ids, *, skip_special: bool = False) -> str:
    """The text of `ids`: '▁' back to ' ', <0xNN> runs back to UTF-8 (invalid bytes as U+FFFD).

    Args:
      ids: token ids (any iterable of ints).
      skip_special: drop control tokens such as <bos> instead of writing their names.

    Returns:
      The string.
    """
    out = bytearray()
    for token in ids:
      token = int(token)
      if not 0 <= token < self.vocab_size:
        raise ValueError(f"token id {token} is outside the vocabulary (size {self.vocab_size})")
      kind = self._types[token]
      if kind == BYTE:
        out.append(self._byte_values[token])
      elif kind in (CONTROL, UNKNOWN) and skip_special:
        continue
      else:
        out += self._pieces[token].replace(SPACE, " ").encode("utf-8")
    text = out.decode("utf-8", errors="replace")
    if self.add_space_prefix and text.startswith(" "):
      text = text[1:]
    return text

  def id_to_piece(self, token: int) -> str:
    """The vocabulary string of one id (with '▁' for spaces, <0xNN> for bytes)."""
    if not 0 <= int(token) < self.vocab_size:  # a negative index would wrap around silently
      raise ValueError(f"token id {int(token)} is outside the vocabulary (size {self.vocab_size})")
    return self._pieces[int(token)]


class _WholeMatcher:
  """Finds pieces matched whole in a text, leftmost first and longest at each position."""

  def __init__(self):
    self._ids: dict[str, int] = {}
    self._lengths: dict[str, list[int]] = {}  # first character -> candidate lengths, longest first

  def add(self, piece: str, token: int) -> None:
    self._ids.setdefault(piece, token)
    lengths = self._lengths.setdefault(piece[0], [])
    if len(piece) not in lengths:
      lengths.append(len(piece))
      lengths.sort(reverse=True)

  def find_all(self, text: str):
    """Yields (begin, end, id) of non-overlapping matches, left to right."""
    i, n = 0, len(text)
    ids, lengths = self._ids, self._lengths
    while i < n:
      candidates = lengths.get(text[i])
      if candidates:
        for length in candidates:
          token = ids.get(text[i:i + length])
          if token is not None:
            yield i, i + length, token
            i += length
            break
        else:
          i += 1
      else:
        i += 1
