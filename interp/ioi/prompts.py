"""Indirect-object-identification prompts (Wang et al., 2022) for any tokenizer.

  "When Mary and John went to the store, John gave a drink to"  ->  " Mary"

Vocabulary:
  IO     the indirect object, the name to predict (" Mary").
  S      the subject, the name mentioned twice (" John"); S1 and S2 are its two mentions.
  ABBA   IO is named first ("Mary and John ... John"); BABA: S first ("John and Mary ... John").
  END    the last position (" to"), where the model predicts the name.
  p_ABC  the corrupted distribution: the same template with three unrelated names A, B, C in
         the three name slots, so nothing in the prompt says which name should come next.

Every name, place and object is a single token (with its leading space) for the tokenizer in
use, so all prompts of a template have the same length and the same role positions; a batch
mixes templates and is right-padded (attention is causal, so padding after END changes
nothing; metrics read END through `logits_at`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interp.data import tokenized

TEMPLATES = (
    "Then, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {S} gave it to",
    "When {A} and {B} went to the {PLACE}, {S} handed a {OBJECT} to",
)
NAMES = (
    "Mary", "John", "Tom", "James", "Paul", "Mark", "David", "Sarah", "Anna", "Emma", "Laura",
    "Peter", "Michael", "Lisa", "Kate", "Jack", "Ben", "Sam", "Alice", "Bob", "Daniel", "Rachel",
    "Steve", "Linda", "George", "Helen", "Frank", "Susan", "Henry", "Grace", "Robert", "Emily",
    "Thomas", "Jessica", "Richard", "Karen", "Charles", "Nancy", "Joseph", "Betty", "Kevin",
    "Amy", "Brian", "Anne", "Eric", "Jane", "Adam", "Ruth", "Carl", "Rose", "Max", "Lucy",
)
PLACES = ("store", "park", "school", "office", "hospital", "station", "garden", "restaurant",
          "house", "market", "beach", "library")
OBJECTS = ("drink", "ring", "book", "bone", "kiss", "basketball", "computer", "necklace",
           "snack", "gift", "letter", "flower")
ROLES = ("IO", "S1", "S1+1", "S2", "END")


def single_tokens(tokenizer, words) -> tuple[str, ...]:
  """The words that are one token with a leading space (" Mary") for `tokenizer`."""
  return tuple(w for w in words if len(tokenized.encode(tokenizer, " " + w)) == 1)


@dataclasses.dataclass(frozen=True)
class IOIData:
  """A batch of IOI prompts and their p_ABC corruptions.

  Attributes:
    tokens, corrupt: int32 [n p], BOS first, right-padded with `pad`.
    answers: int32 [n 2]: (IO, S) token ids; the logit difference is IO - S.
    roles: int32 [n 5]: positions of IO, S1, S1+1, S2 and END (`ROLES`) in each prompt.
    template: int32 [n]: index into `TEMPLATES`; abba: bool [n].
    text: the clean prompts as strings.
  """

  tokens: np.ndarray
  corrupt: np.ndarray
  answers: np.ndarray
  roles: np.ndarray
  template: np.ndarray
  abba: np.ndarray
  text: tuple[str, ...]

  @property
  def end(self) -> np.ndarray:
    """[n 1] END positions, as `logits_at`."""
    return self.roles[:, 4:5]

  def subset(self, rows) -> "IOIData":
    rows = np.asarray(rows)
    return IOIData(self.tokens[rows], self.corrupt[rows], self.answers[rows], self.roles[rows],
                   self.template[rows], self.abba[rows], tuple(self.text[i] for i in rows))


def generate(tokenizer, n: int, seed: int = 0, templates=TEMPLATES, pad: int = 0) -> IOIData:
  """`n` prompts, alternating ABBA and BABA, templates and names drawn from `seed`.

  Raises:
    ValueError: if fewer than 5 names (or no place/object) are single tokens for `tokenizer`.
  """
  names = single_tokens(tokenizer, NAMES)
  places, objects = single_tokens(tokenizer, PLACES), single_tokens(tokenizer, OBJECTS)
  if len(names) < 5 or not places or not objects:
    raise ValueError(f"IOI needs >= 5 single-token names and a single-token place and object "
                     f"for this tokenizer; found names={names}, places={places}, "
                     f"objects={objects}")
  bos = tokenized.bos_id(tokenizer)
  if bos is None and getattr(tokenizer, "eos_id", None) is not None:
    bos = int(tokenizer.eos_id)  # GPT-2 convention (as TransformerLens): <|endoftext|> first
  rng = np.random.default_rng(seed)
  rows, corrupt, answers, roles, tmpl, abba, texts = [], [], [], [], [], [], []
  for i in range(n):
    t = int(rng.integers(len(templates)))
    io, s, c1, c2, c3 = rng.choice(names, 5, replace=False)
    place, obj = rng.choice(places), rng.choice(objects)
    is_abba = i % 2 == 0
    first, second = (io, s) if is_abba else (s, io)
    ids, pos = _slotted(tokenizer, templates[t], bos, {"A": first, "B": second, "S": s,
                                                        "PLACE": place, "OBJECT": obj})
    cids, cpos = _slotted(tokenizer, templates[t], bos, {"A": c1, "B": c2, "S": c3,
                                                          "PLACE": place, "OBJECT": obj})
    if len(cids) != len(ids) or cpos != pos:
      raise AssertionError("corrupted prompt does not align with the clean one")
    io_pos, s1 = (pos["A"][0], pos["B"][0]) if is_abba else (pos["B"][0], pos["A"][0])
    rows.append(ids)
    corrupt.append(cids)
    answers.append((ids[io_pos], ids[s1]))
    roles.append((io_pos, s1, s1 + 1, pos["S"][0], len(ids) - 1))
    tmpl.append(t)
    abba.append(is_abba)
    texts.append(tokenizer.decode(ids[1:] if bos is not None else ids))
  width = max(len(r) for r in rows)
  padded = lambda rs: np.array([r + [pad] * (width - len(r)) for r in rs], np.int32)
  return IOIData(padded(rows), padded(corrupt), np.array(answers, np.int32),
                 np.array(roles, np.int32), np.array(tmpl, np.int32), np.array(abba, bool),
                 tuple(texts))


def _slotted(tokenizer, template: str, bos, fill: dict):
  """Token ids of `template` with `fill`, tokenised slot by slot; returns (ids, {slot: [pos]}).

  Each slot value is encoded as " value" (one token); the text between slots is encoded on its
  own, which for these templates (slots always follow a space) equals encoding the whole
  string.
  """
  ids = [bos] if bos is not None else []
  pos: dict[str, list[int]] = {}
  rest = template
  while "{" in rest:
    head, _, tail = rest.partition("{")
    slot, _, rest = tail.partition("}")
    head = head[:-1] if head.endswith(" ") else head
    if head:
      ids += [int(t) for t in tokenized.encode(tokenizer, head)]
    value = fill[slot]
    pos.setdefault(slot, []).append(len(ids))
    ids += [int(t) for t in tokenized.encode(tokenizer, " " + value)]
  if rest:
    ids += [int(t) for t in tokenized.encode(tokenizer, rest)]
  return ids, pos
