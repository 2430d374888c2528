"""Phase-change detection from training snapshots (Olsson et al., 2022).

A loss drop alone is not a phase change: a 1-layer model's in-context gain grows gradually
without any induction head. Olsson et al.'s phase change is a head's induction behaviour
appearing abruptly, at the same time as the in-context-learning gain. So it is called only
when all three hold:
  gain      the ICL score ends below -`min_gain` nats (a real in-context gain)
  jump      some head's score (prefix-matching by default) rises by at least `min_jump`
            within a window of `window` x the training length, ending above `min_score`
  together  over that jump's steps, widened by half a window on each side, the ICL score
            falls by at least `share` of its whole fall (first snapshot -> lowest)
The reported step is where the ICL score first reaches half its final value inside that
widened interval.

Vocabulary:
  snapshot    a row {"step", "icl", "prefix_matching": [l h], ...} recorded during training
  ICL fall    icl(first snapshot) - icl(later): positive as in-context learning improves
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """Attributes: min_gain (nats), min_jump, min_score, window (fraction of the snapshot span),
  share, score (the snapshot key of the head scores [l h]); see the module docstring."""

  min_gain: float = 0.5
  min_jump: float = 0.3
  min_score: float = 0.5
  window: float = 0.2
  share: float = 0.5
  score: str = "prefix_matching"


def largest_jump(steps: np.ndarray, scores: np.ndarray, width: float) -> dict:
  """The largest rise of any head's score between two snapshots at most `width` steps apart.

  Args:
    steps: [t] increasing snapshot steps; scores: [t l h] head scores.
    width: the longest span (in steps) a rise may take.
  Returns:
    {"rise", "head": [l, h], "from_step", "to_step", "to_score"} (rise 0 and head None if no
    score ever rises).
  """
  best = {"rise": 0.0, "head": None, "from_step": None, "to_step": None, "to_score": None}
  flat = scores.reshape(len(steps), -1)
  for i in range(len(steps)):
    for j in range(i + 1, len(steps)):
      if steps[j] - steps[i] > width:
        break
      rise = flat[j] - flat[i]
      k = int(np.argmax(rise))
      if rise[k] > best["rise"]:
        layer, head = np.unravel_index(k, scores.shape[1:])
        best = {"rise": float(rise[k]), "head": [int(layer), int(head)],
                "from_step": int(steps[i]), "to_step": int(steps[j]),
                "to_score": float(flat[j, k])}
  return best


def detect(snapshots: list[dict], config: PhaseConfig = PhaseConfig()) -> dict:
  """Whether and when the snapshots show a phase change (see the module docstring).

  Args:
    snapshots: rows with "step", "icl" and `config.score` ([l h]), in step order.
    config: the thresholds.
  Returns:
    {"detected", "step" (None unless detected), "reason", "jump" (`largest_jump`),
    "icl_fall_in_jump", "icl_fall_total", "icl_initial", "icl_final", "icl_half_step"
    (where ICL first reaches half its final value, whatever the head scores; None without a
    gain), "icl_before" (the snapshot before it), "<score>_above_half_step" (where the best
    head's score first exceeds 0.5)}.
  """
  steps = np.array([r["step"] for r in snapshots])
  icl = np.array([r["icl"] for r in snapshots], float)
  scores = np.array([r[config.score] for r in snapshots], float)
  final = icl[-1]
  gain = final < -config.min_gain
  half = np.flatnonzero(icl <= final / 2) if gain else np.array([], int)
  out = {"detected": False, "step": None, "icl_initial": float(icl[0]),
         "icl_final": float(final), "icl_fall_total": float(icl[0] - icl.min()),
         "icl_half_step": int(steps[half[0]]) if half.size else None,
         "icl_before": float(icl[half[0] - 1]) if half.size and half[0] else float(icl[0])}
  width = config.window * float(steps[-1] - steps[0])
  jump = largest_jump(steps, scores, width)
  out["jump"] = jump
  above = np.flatnonzero(scores.reshape(len(steps), -1).max(-1) > 0.5)
  out[f"{config.score}_above_half_step"] = int(steps[above[0]]) if above.size else None
  out["icl_fall_in_jump"] = 0.0
  if not gain:
    out["reason"] = f"no in-context gain: final ICL {final:.2f} > -{config.min_gain} nats"
    return out
  if jump["rise"] < config.min_jump or jump["to_score"] < config.min_score:
    out["reason"] = (f"no head-score jump: the largest {config.score} rise within "
                     f"{width:.0f} steps is {jump['rise']:.2f}")
    return out
  inside = (steps >= jump["from_step"] - width / 2) & (steps <= jump["to_step"] + width / 2)
  idx = np.flatnonzero(inside)
  fall = float(icl[idx[0]] - icl[idx[-1]])
  out["icl_fall_in_jump"] = fall
  if fall < config.share * out["icl_fall_total"]:
    out["reason"] = (f"the ICL score fell {fall:.2f} of {out['icl_fall_total']:.2f} nats around "
                     f"the head-score jump (steps {jump['from_step']}-{jump['to_step']}): "
                     f"not together")
    return out
  crossed = idx[icl[idx] <= final / 2]
  out["step"] = int(steps[crossed[0]]) if crossed.size else jump["to_step"]
  out["detected"] = True
  out["reason"] = (f"head L{jump['head'][0]}H{jump['head'][1]} {config.score} rose "
                   f"{jump['rise']:.2f} over steps {jump['from_step']}-{jump['to_step']}, "
                   f"with {fall:.2f} of {out['icl_fall_total']:.2f} nats of ICL")
  return out
