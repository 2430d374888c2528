"""Prompt pairs for circuit discovery: a clean and a corrupted prompt of the same length, and
the answers the metric reads at the last position: one pair of tokens, or two sets.

Vocabulary:
  PromptPairs  clean, corrupt int [n p]; answers int [n 2] (correct, wrong); end int [n 1], the
               position the metric reads (`logits_at`); signs int8 [n v] or None, the answer
               sets: +1 on the tokens that count for the clean answer, -1 on those against it.
  mass difference  the answer-set metric: mean over prompts of sum_v p(v) signs[v] at the read
               position, the probability on the clean answer's set minus that on the other.
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

import jax
import jax.numpy as jnp
import numpy as np

from interp import jsonio
from interp.data import tokenized
from interp.ioi import prompts as ioi_prompts


class Task(str, enum.Enum):
  IOI = "ioi"
  INDUCTION = "induction"
  PAIRS = "pairs"
  GREATER_THAN = "greater_than"


@dataclasses.dataclass(frozen=True)
class PromptPairs:
  """Attributes: clean, corrupt [n p]; answers [n 2]; end [n 1]; text (clean prompts); signs
  [n v] answer sets or None (see the module docstring)."""

  clean: np.ndarray
  corrupt: np.ndarray
  answers: np.ndarray
  end: np.ndarray
  text: tuple[str, ...] = ()
  signs: np.ndarray | None = None


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


# Hanna et al.'s template, with nouns of theirs that read naturally with "lasted".
NOUNS = ("war", "siege", "reign", "drought", "expedition", "occupation", "dynasty", "famine",
         "campaign", "rebellion", "conflict", "voyage", "crisis", "epidemic", "truce", "alliance")
CENTURIES = tuple(range(11, 18))
GREATER_THAN_TEMPLATE = "The {noun} lasted from the year {xx}{yy} to the year {xx}"


def _single_ids(tokenizer, texts) -> list[int] | None:
  """Each text's one token id, or None if any of them is not one token."""
  ids = [tokenized.encode(tokenizer, t) for t in texts]
  return [int(i[0]) for i in ids] if all(len(i) == 1 for i in ids) else None


def greater_than(tokenizer, n: int, seed: int, vocab_size: int) -> PromptPairs:
  """`n` greater-than prompt pairs with their answer sets (see the module docstring).

  Args:
    tokenizer: the model's; decides two-digit or one-digit answers.
    n: prompts; seed: the draw of nouns, centuries and years.
    vocab_size: the model's vocabulary (the width of `signs`).

  Raises:
    ValueError: the tokenizer has neither one token per two-digit number nor per digit.
  """
  two = _single_ids(tokenizer, [f"{v:02d}" for v in range(100)])
  one = None if two else _single_ids(tokenizer, [str(d) for d in range(10)])
  if two is None and one is None:
    raise ValueError("--task=greater_than needs a tokenizer with one token per two-digit number "
                     "(GPT-2) or per digit (Gemma)")
  rng = np.random.default_rng(seed)
  bos = tokenized.bos_id(tokenizer)
  head = [] if bos is None else [bos]
  clean, corrupt, signs, text = [], [], [], []
  for _ in range(100 * n):
    if len(clean) == n:
      break
    noun, xx = NOUNS[rng.integers(len(NOUNS))], CENTURIES[rng.integers(len(CENTURIES))]
    if two:
      yy = int(rng.integers(2, 99))
      sign = np.where(np.arange(100) > yy, 1, -1)
      ids = two
    else:
      yy = 10 * int(rng.integers(1, 9)) + 9
      sign = np.where(np.arange(10) > yy // 10, 1, -1)
      ids = one
    words = dict(noun=noun, xx=xx)
    a = head + tokenized.encode(tokenizer, GREATER_THAN_TEMPLATE.format(yy=f"{yy:02d}", **words)
                                ).tolist()
    b = head + tokenized.encode(tokenizer, GREATER_THAN_TEMPLATE.format(yy="01", **words)
                                ).tolist()
    # Keep a prompt only if its year reads as the century's tokens (the prompt's last) then YY's
    # (BPE may merge " 1800" into one token or split " 1101" as " 110" "1").
    yy_ids = [ids[yy]] if two else [ids[yy // 10], ids[yy % 10]]
    one_ids = [ids[1]] if two else [ids[0], ids[1]]
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y] if len(a) == len(b) else []
    if (not differ or [a[i] for i in differ] != yy_ids or [b[i] for i in differ] != one_ids
        or differ != list(range(differ[0], differ[0] + len(yy_ids)))
        or a[differ[0] - 1] != a[-1]):
      continue
    row = np.zeros(vocab_size, np.int8)
    row[ids] = sign
    clean.append(a)
    corrupt.append(b)
    signs.append(row)
    text.append(GREATER_THAN_TEMPLATE.format(yy=f"{yy:02d}", **words))
  if len(clean) < n:
    raise ValueError(f"--task=greater_than: only {len(clean)} of {n} prompts tokenise to equal "
                     "clean and corrupted lengths with this tokenizer")
  # Nouns differ in length: right-pad, and read each prompt at its own last position.
  width = max(len(r) for r in clean)
  pad = lambda rs: np.array([r + [0] * (width - len(r)) for r in rs], np.int32)
  end = np.array([[len(r) - 1] for r in clean], np.int32)
  return PromptPairs(pad(clean), pad(corrupt), np.zeros((n, 0), np.int32), end, tuple(text),
                     np.stack(signs))


def mass_difference(signs):
  """The answer-set metric over logits [b k v] (last read position): mean over prompts of
  sum_v softmax(logits)[v] * signs[v].

  Args:
    signs: [b v] +1 / -1 / 0 per token (`PromptPairs.signs`).
  """
  w = jnp.asarray(signs, jnp.float32)
  return lambda logits: (jax.nn.softmax(logits[:, -1].astype(jnp.float32), -1) * w).sum(-1).mean()
