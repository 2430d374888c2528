"""Step-indexed token sources, and global batches assembled from each process's rows.

Vocabulary:
  source   something that maps (seed, step) to that step's global batch of token windows,
           [batch_size, length] int32, as a pure function: no iterator state, so resuming at
           step s reproduces exactly the batches an uninterrupted run would have seen. The only
           "data position" a checkpoint needs is the step.
  rows     the slice of the global batch this process supplies (`mesh.process_rows`). Every
           process draws the randomness for the whole global batch (a few integers) and keeps
           its rows, so the global batch does not depend on how many processes made it.
  length   tokens per window: n_ctx + 1 for language modelling (inputs and shifted targets).

Sources, chosen with `--data`:
  corpus               random windows of the built-in corpus (`interp.data.corpus`)
  files:GLOB           random windows of the concatenated text files matching GLOB
  repeat[:SEGMENT_LEN] a random segment of SEGMENT_LEN tokens (default 32), repeated to fill
                       the window: the second and later copies are predictable only by looking
                       back one period, the task induction heads solve (Olsson et al., 2022).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from interp.data import corpus
from interp.parallel import mesh as mesh_lib

DEFAULT_SEGMENT_LEN = 32


def step_rng(seed: int, step: int) -> np.random.Generator:
  """The generator for one step's batch: a pure function of (seed, step)."""
  if seed < 0 or step < 0:
    raise ValueError(f"seed and step must be non-negative, got seed={seed}, step={step}")
  return np.random.default_rng(np.random.SeedSequence([seed, step]))


class Source(Protocol):
  def batch(self, seed: int, step: int, batch_size: int, length: int,
            rows: slice = slice(None)) -> np.ndarray:
    """Rows `rows` of the global batch for `step`: int32 [rows, length]."""

  def describe(self) -> dict:
    """What this source is (JSON-able), recorded in the run folder."""


@dataclasses.dataclass(frozen=True, eq=False)
class TokenWindows:
  """Uniformly random windows of a token stream."""

  tokens: np.ndarray
  name: str

  def batch(self, seed, step, batch_size, length, rows=slice(None)):
    if len(self.tokens) < length:
      raise ValueError(f"data {self.name!r} has {len(self.tokens)} tokens, fewer than one window "
                       f"of {length} (n_ctx + 1)")
    starts = step_rng(seed, step).integers(0, len(self.tokens) - length + 1, size=batch_size)
    return self.tokens[starts[rows, None] + np.arange(length)].astype(np.int32)

  def describe(self):
    return {"source": self.name, "tokens": int(len(self.tokens)),
            "sha256_16": corpus.fingerprint(self.tokens)}


@dataclasses.dataclass(frozen=True)
class RepeatedSegments:
  """A random segment of `segment_len` tokens in [0, vocab_size), tiled to fill each window."""

  vocab_size: int
  segment_len: int = DEFAULT_SEGMENT_LEN

  def batch(self, seed, step, batch_size, length, rows=slice(None)):
    if not 0 < self.segment_len < length:
      raise ValueError(f"--data=repeat:{self.segment_len}: the segment length must be between 1 "
                       f"and the window length - 1 ({length - 1}) so that it repeats")
    segments = step_rng(seed, step).integers(0, self.vocab_size,
                                             size=(batch_size, self.segment_len))[rows]
    reps = -(-length // self.segment_len)
    return np.tile(segments, (1, reps))[:, :length].astype(np.int32)

  def describe(self):
    return {"source": f"repeat:{self.segment_len}", "vocab_size": self.vocab_size}


@dataclasses.dataclass(frozen=True)
class RepeatedPairs:
  """Windows of random segments each followed by its copy, for induction.

  `RepeatedPairs` (spec `pairs:MIN-MAX`) fills each window with random segments, each followed
  by its copy: `A A B B C C ...`, segment lengths uniform in [MIN, MAX], tokens without
  replacement within a segment (so each copied token has one earlier occurrence). The second
  copy of a segment is predictable only by induction: find the previous occurrence of the current
  token, read what followed it. Unlike `repeat:L` (one segment tiled with a fixed period), the lag
  varies, so no head can solve it by attending a fixed distance back (a 1-layer model does exactly
  that on `repeat:L`: measured, its loss on another period then rises to ~8 nats), and first
  occurrences sit anywhere in the window, so a previous-token head must work at every position.
  
  Every window starts at a segment boundary. That alignment is a scaffold: the 2-layer toy's
  phase change comes at ~400 steps; cut at a random phase, it came only at ~2,500 (measured, 24
  tokens, d_model 64, batch 64). It is also a shortcut: late positions are more often at the
  longest lags, and after ~1,000 steps a 1-layer model learns to guess the lag from the absolute
  position (ICL score -1.4 on held-out repeats at 1,500 steps, prefix-matching 0.29, no
  previous-token head).
  """

  vocab_size: int
  min_len: int = 4
  max_len: int = 16

  def __post_init__(self):
    if not 1 <= self.min_len <= self.max_len <= self.vocab_size:
      raise ValueError(f"pairs:{self.min_len}-{self.max_len}: need 1 <= MIN <= MAX <= "
                       f"vocab_size ({self.vocab_size})")

  def batch(self, seed, step, batch_size, length, rows=slice(None)):
    rng = step_rng(seed, step)
    # Enough segments for the shortest lengths; every row draws the same amount of randomness,
    # so a row does not depend on which process asks for it.
    n_seg = -(-length // (2 * self.min_len))
    lengths = rng.integers(self.min_len, self.max_len + 1, size=(batch_size, n_seg))
    order = np.argsort(rng.random((batch_size, n_seg, self.vocab_size)), axis=-1)
    out = np.empty((batch_size, length), np.int32)
    for i in range(batch_size):
      parts = []
      for seg, n in zip(order[i], lengths[i]):
        parts += [seg[:n], seg[:n]]
      out[i] = np.concatenate(parts)[:length]
    return out[rows]

  def describe(self):
    return {"source": f"pairs:{self.min_len}-{self.max_len}", "vocab_size": self.vocab_size}


class SourceKind(str, enum.Enum):
  CORPUS = "corpus"
  FILES = "files"
  REPEAT = "repeat"
  PAIRS = "pairs"


USAGE = "corpus | files:GLOB | repeat[:SEGMENT_LEN] | pairs:MIN-MAX"


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """A parsed `--data` value: the source kind and its argument."""

  kind: SourceKind
  arg: str = ""

  @classmethod
  def parse(cls, text: str) -> "DataSpec":
    name, _, arg = text.partition(":")
    try:
      kind = SourceKind(name)
    except ValueError:
      raise ValueError(f"--data={text!r}: unknown source {name!r}; valid: {USAGE}") from None
    if kind == SourceKind.FILES and not arg:
      raise ValueError(f"--data={text!r}: give a glob, e.g. files:/path/to/*.txt")
    if kind == SourceKind.CORPUS and arg:
      raise ValueError(f"--data={text!r}: the built-in corpus takes no argument")
    if kind == SourceKind.REPEAT and arg and not arg.isdigit():
      raise ValueError(f"--data={text!r}: the segment length must be a positive integer")
    lo, sep, hi = arg.partition("-")
    if kind == SourceKind.PAIRS and not (sep and lo.isdigit() and hi.isdigit()):
      raise ValueError(f"--data={text!r}: expected pairs:MIN-MAX (segment lengths, e.g. "
                       f"pairs:4-16)")
    return cls(kind, arg)

  def __str__(self) -> str:
    return f"{self.kind.value}:{self.arg}" if self.arg else self.kind.value


def _corpus(arg: str, vocab_size: int) -> Source:
  del arg, vocab_size
  return TokenWindows(corpus.default_corpus(), "corpus")


def _files(arg: str, vocab_size: int) -> Source:
  del vocab_size
  return TokenWindows(corpus.text_files(arg), f"files:{arg}")


def _repeat(arg: str, vocab_size: int) -> Source:
  return RepeatedSegments(vocab_size, int(arg) if arg else DEFAULT_SEGMENT_LEN)


def _pairs(arg: str, vocab_size: int) -> Source:
  lo, _, hi = arg.partition("-")
  return RepeatedPairs(vocab_size, int(lo), int(hi))


_BUILDERS: dict[SourceKind, Callable[[str, int], Source]] = {
    SourceKind.CORPUS: _corpus, SourceKind.FILES: _files, SourceKind.REPEAT: _repeat,
    SourceKind.PAIRS: _pairs,
}


def make_source(spec: str | DataSpec, vocab_size: int) -> Source:
  """Builds the source a `--data` value names (byte-level text sources need vocab_size >= 256)."""
  spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
  if spec.kind in (SourceKind.CORPUS, SourceKind.FILES) and vocab_size < 256:
    raise ValueError(f"--data={spec}: byte tokens need vocab_size >= 256, got {vocab_size}")
  return _BUILDERS[spec.kind](spec.arg, vocab_size)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises a ValueError naming --batch_size when it does not split over `data` and processes."""
  n_data = mesh.shape["data"]
  if batch_size <= 0 or batch_size % n_data:
    raise ValueError(f"--batch_size={batch_size} is not divisible by the mesh's data axis "
                     f"({n_data} from --mesh); use a multiple of {n_data}")
  mesh_lib.process_rows(batch_size)  # also divisible by the number of processes


def make_batches(source: Source, mesh: Mesh, seed: int, batch_size: int,
                 length: int) -> Callable[[int], jax.Array]:
  """step -> the global [batch_size, length] batch, sharded over `data`.

  Each process computes only its own rows and `global_batch` stitches them together.
  """
  check_batch_size(batch_size, mesh)
  rows = mesh_lib.process_rows(batch_size)

  def batch(step: int) -> jax.Array:
    return mesh_lib.global_batch(mesh, source.batch(seed, step, batch_size, length, rows))

  return batch
