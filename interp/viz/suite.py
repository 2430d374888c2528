"""The figure suite: every experiment's paper figures on built-in offline defaults, one report.

Each entry is a function `(workdir, quick) -> Section` registered in `SUITE`; it runs its
experiment into `<workdir>/<name>/`, draws its figures there and returns the numbers for the
report. `quick` shrinks everything for the smoke test. Later experiments add their entry here.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from typing import Callable

import numpy as np

from interp.viz.report import Section, write_report

Entry = Callable[[str, bool], Section]
SUITE: dict[str, Entry] = {}


def register(name: str):
  def deco(fn: Entry) -> Entry:
    SUITE[name] = fn
    return fn
  return deco


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


@register("lm_training")
def lm_training(workdir: str, quick: bool) -> Section:
  """A 2-layer byte-level transformer trained on the default corpus: the loss curve."""
  from interp.data import corpus
  from interp.models import config
  from interp.train import lm

  model = config.attn_only(2, 128, 4, 128, 256, d_mlp=512,
                           norm=config.NormType.LAYERNORM)
  steps = 20 if quick else 600
  cfg = lm.TrainLMConfig(workdir=workdir, model=model, data="corpus", batch_size=16,
                         num_steps=steps, log_every=5 if quick else 20)
  results = lm.train_lm(cfg)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  tokens = corpus.default_corpus()
  counts = np.bincount(tokens, minlength=256) / len(tokens)
  unigram = float(-(counts[counts > 0] * np.log(counts[counts > 0])).sum())
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss")
  ax.axhline(unigram, color="gray", ls="--", label="unigram entropy of the corpus")
  ax.axhline(math.log(256), color="black", ls=":", label="uniform over bytes")
  ax.set_xlabel("step")
  ax.set_ylabel("cross-entropy (nats / byte)")
  ax.legend()
  fig.tight_layout()
  path = os.path.join(workdir, "loss.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  final = results["final"]["loss"]
  return Section(
      title="Byte-level LM on the built-in corpus (2 layers, d_model 128)",
      summary="Trained by `experiments/train_lm.py`'s library call; the loss must fall well "
              "below the corpus's unigram entropy, i.e. the model uses context.",
      figures=[path],
      rows=[("final train loss (nats/byte)", final, "< unigram entropy"),
            ("bits per byte", final / math.log(2), "-"),
            ("unigram entropy (nats/byte)", unigram, "-"),
            ("steps", results["step"], "-")])


def run_suite(workdir: str, only: tuple[str, ...] = (), quick: bool = False) -> str:
  """Runs the registered entries (all, or `only`) and writes `<workdir>/report.md`."""
  unknown = set(only) - set(SUITE)
  if unknown:
    raise ValueError(f"--only: unknown entries {sorted(unknown)}; valid: {sorted(SUITE)}")
  os.makedirs(workdir, exist_ok=True)
  sections = []
  for name, fn in SUITE.items():
    if only and name not in only:
      continue
    start = time.time()
    try:
      section = fn(os.path.join(workdir, name), quick)
    except Exception as e:  # one broken entry must not hide the others' figures
      traceback.print_exc()
      section = Section(title=name, error=f"{type(e).__name__}: {e}")
    section.seconds = time.time() - start
    sections.append(section)
    print(f"figures: {name} done in {section.seconds:.1f}s", flush=True)
  path = write_report(workdir, sections)
  if any(s.error for s in sections):
    raise RuntimeError(f"some figure entries failed; see {path}")
  return path
