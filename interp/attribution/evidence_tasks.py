"""The prompt batches of the evidence report (`evidence.Prompts`), and its toy with a known
mechanism.

  ioi          IOI prompts (`interp.ioi.prompts`): metric logit(IO) - logit(S) at END,
               counterfactual p_ABC, head source IO. Prompts of different templates are
               right-padded; the padding sits after END, so it is kept, never a player.
  repeated     <bos>? + a random segment A of L tokens + A again, cut one token short:
               the read position is the last (it holds A[L-2]) and the metric is the
               log-probability of A[L-1], which only induction predicts. Head source: the token
               after the first occurrence of A[L-2], i.e. A[L-1] in the first copy.
               Counterfactual: another such sequence.
  toy          the 2-layer attention-only induction toy of `interp.induction.experiment`, trained
               on `pairs:4-16`; its induction head (best prefix-matching score, last layer)
               and previous-token head (best previous-token score, layer 0) are measured on
               held-out repeated tokens, and the tokens known to matter are A[L-2] and A[L-1] of
               the first copy (what the previous-token head and the induction head move).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from interp.attribution.evidence import Prompts
from interp.circuits import scores
from interp.induction import experiment
from interp.induction import segments
from interp.induction import training as train_lib
from interp.ioi import prompts as ioi_data


def _labels(tokenizer, tokens: np.ndarray) -> tuple[tuple[str, ...], ...]:
  if tokenizer is None:
    return tuple(tuple(str(int(t)) for t in row) for row in tokens)
  piece = lambda t: tokenizer.decode([int(t)]).replace("\n", "\\n") or f"<{int(t)}>"
  return tuple(tuple(piece(t) for t in row) for row in tokens)


def ioi(tokenizer, n: int, seed: int = 0) -> Prompts:
  """`n` IOI prompts (alternating ABBA / BABA) for `tokenizer`."""
  d = ioi_data.generate(tokenizer, n, seed=seed)
  b, p = d.tokens.shape
  end = d.roles[:, ioi_data.ROLES.index("END")]
  keep = (np.arange(p)[None, :] >= end[:, None]) | (np.arange(p)[None, :] == 0)
  return Prompts(tokens=d.tokens, corrupt=d.corrupt, read=end, good=d.answers[:, 0],
                 bad=d.answers[:, 1], source=d.roles[:, ioi_data.ROLES.index("IO")], keep=keep,
                 labels=_labels(tokenizer, d.tokens))


def repeated_layout(seg_len: int, bos: bool) -> dict:
  """Positions in a repeated-token prompt: read, source and the known tokens (A[L-2], A[L-1]
  of the first copy)."""
  o = int(bos)
  read = o + 2 * seg_len - 2
  return {"length": read + 1, "read": read, "source": read - seg_len + 1,
          "known": (o + seg_len - 2, o + seg_len - 1)}


def repeated(key: jax.Array, n: int, seg_len: int, high: int, low: int = 0,
             bos: int | None = None, tokenizer=None) -> Prompts:
  """`n` repeated-random-token prompts (module docstring); tokens from [low, high)."""
  k_clean, k_corrupt = jax.random.split(key)
  lay = repeated_layout(seg_len, bos is not None)
  full = lambda k: np.asarray(segments.repeated_tokens(k, n, seg_len, high, low=low, bos=bos))
  tokens, corrupt = full(k_clean), full(k_corrupt)
  answer = tokens[:, lay["length"]]
  tokens, corrupt = tokens[:, :lay["length"]], corrupt[:, :lay["length"]]
  keep = np.zeros(tokens.shape, bool)
  keep[:, lay["read"]] = True
  if bos is not None:
    keep[:, 0] = True
  return Prompts(tokens=tokens, corrupt=corrupt, read=np.full(n, lay["read"]), good=answer,
                 source=np.full(n, lay["source"]), keep=keep, labels=_labels(tokenizer, tokens))


def known_tokens(prompts: Prompts, seg_len: int, bos: bool) -> np.ndarray:
  """bool [b p]: the tokens the induction mechanism reads (A[L-2], A[L-1] of the first copy)."""
  out = np.zeros(prompts.tokens.shape, bool)
  out[:, list(repeated_layout(seg_len, bos)["known"])] = True
  return out


def train_toy(workdir: str, num_steps: int, seed: int = 0, precision=None):
  """Trains (or resumes) the 2-layer attention-only induction toy in `workdir` (in float32;
  `precision`, default float32, is the policy of the head-scoring forward).

  Returns:
    (cfg, params, {"induction": (layer, head), "previous_token": (layer, head)}, head scores
    {name: [l h]} on held-out repeated tokens, n_ctx, vocab_size).
  """
  config = experiment.InductionConfig(workdir=workdir, models=("attn2",), gemma=False,
                                      num_steps=num_steps, seed=seed, snapshot_every=0,
                                      log_every=max(1, num_steps // 10))
  cfg = config.model("attn2")
  run = train_lib.train(config.train_config("attn2"))
  head = {k: np.asarray(v) for k, v in
          scores.head_scores(cfg, run.params, config.eval_tokens(), precision).items()}
  last = cfg.n_layers - 1
  known = {"induction": (last, int(np.argmax(head["prefix_matching"][last]))),
           "previous_token": (0, int(np.argmax(head["previous_token"][0])))}
  return cfg, run.params, known, head, config.n_ctx, config.vocab_size


def toy_model_dir(workdir: str) -> str:
  return os.path.join(workdir, "toy_model")
