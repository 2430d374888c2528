"""Prompt pairs for circuit discovery: a clean and a corrupted prompt of the same length, and
the answer pair the metric reads at the last position.

Vocabulary:
  PromptPairs  clean, corrupt int [n p]; answers int [n 2] (correct, wrong); end int [n 1], the
               position the metric reads (`logits_at`).
  ioi          Wang et al.'s prompts with p_ABC corruptions (`interp.ioi.prompts`); answers
               (IO, S).
  induction    clean = A + A[:-1] for a random segment A, so the last position predicts A's last
               token by induction; corrupt = C + A[:-1] for another random segment C (the same
               second half, nothing to copy from); answers (A[-1], C[-1]).
  pairs file   a JSON list of {"clean", "corrupt", "correct", "wrong"} strings; each pair's
               prompts tokenise to the same length and each answer to one token (with the
               model's tokenizer); prompts of different lengths are right-padded.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from interp import jsonio
from interp.data import tokenized
from interp.ioi import prompts as ioi_prompts


class Task(str, enum.Enum):
  IOI = "ioi"
  INDUCTION = "induction"
  PAIRS = "pairs"


@dataclasses.dataclass(frozen=True)
class PromptPairs:
  """Attributes: clean, corrupt [n p]; answers [n 2]; end [n 1]; text (clean prompts)."""

  clean: np.ndarray
  corrupt: np.ndarray
  answers: np.ndarray
  end: np.ndarray
  text: tuple[str, ...] = ()


def ioi(tokenizer, n: int, seed: int) -> PromptPairs:
  d = ioi_prompts.generate(tokenizer, n, seed=seed)
  return PromptPairs(d.tokens, d.corrupt, d.answers, d.end, d.text)


def induction(n: int, seg: int, low: int, high: int, seed: int, bos: int | None = None
              ) -> PromptPairs:
  """Repeated random segments of `seg` distinct ids from [low, high) (see the module docstring).

  Args:
    n: prompts; seg: segment length; low, high: the id range; seed: the draw;
    bos: an id put first (Gemma), or None (the toys).
  """
  rng = np.random.default_rng(seed)
  head = [] if bos is None else [bos]
  clean, corrupt, answers = [], [], []
  for _ in range(n):
    a = rng.choice(np.arange(low, high), seg, replace=False)
    c = rng.choice(np.setdiff1d(np.arange(low, high), a[-1:]), seg, replace=False)
    clean.append(head + list(a) + list(a[:-1]))
    corrupt.append(head + list(c) + list(a[:-1]))
    answers.append((a[-1], c[-1]))
  clean, corrupt = np.array(clean, np.int32), np.array(corrupt, np.int32)
  end = np.full((n, 1), clean.shape[1] - 1, np.int32)
  return PromptPairs(clean, corrupt, np.array(answers, np.int32), end)


def from_file(path: str, tokenizer) -> PromptPairs:
  """Prompt pairs from a JSON file (see the module docstring); errors name the file and pair."""
  rows = jsonio.read_json(path)
  if not isinstance(rows, list) or not rows:
    raise ValueError(f"{path}: expected a non-empty JSON list of "
                     '{"clean", "corrupt", "correct", "wrong"} objects')
  bos = tokenized.bos_id(tokenizer)
  head = [] if bos is None else [bos]
  clean, corrupt, answers, text = [], [], [], []
  for i, row in enumerate(rows):
    if not isinstance(row, dict) or set(row) != {"clean", "corrupt", "correct", "wrong"}:
      raise ValueError(f"{path}: pair {i} must have exactly the keys clean, corrupt, correct, "
                       f"wrong")
    a = head + [int(t) for t in tokenized.encode(tokenizer, row["clean"])]
    b = head + [int(t) for t in tokenized.encode(tokenizer, row["corrupt"])]
    if len(a) != len(b):
      raise ValueError(f"{path}: pair {i}: clean and corrupt prompts tokenise to {len(a)} and "
                       f"{len(b)} tokens; they must match position for position")
    ids = []
    for key in ("correct", "wrong"):
      toks = tokenized.encode(tokenizer, row[key])
      if len(toks) != 1:
        raise ValueError(f"{path}: pair {i}: {key}={row[key]!r} is {len(toks)} tokens; "
                         "it must be one")
      ids.append(int(toks[0]))
    clean.append(a)
    corrupt.append(b)
    answers.append(ids)
    text.append(row["clean"])
  width = max(len(r) for r in clean)
  pad = lambda rs: np.array([r + [0] * (width - len(r)) for r in rs], np.int32)
  end = np.array([[len(r) - 1] for r in clean], np.int32)
  return PromptPairs(pad(clean), pad(corrupt), np.array(answers, np.int32), end, tuple(text))
