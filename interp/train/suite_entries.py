"""The language-model entry of the figure suite (`interp.figures`): the loss curve of a small
byte-level transformer trained on the built-in corpus through `interp.train.lm`."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from interp.data import corpus
from interp.models import config
from interp.train import lm
from interp.viz import plotting
from interp.viz.report import Registry, Section

ENTRIES = Registry()


@ENTRIES.register("lm_training")
def lm_training(workdir: str, quick: bool) -> Section:
  """A 2-layer byte-level transformer trained on the default corpus: the loss curve."""
  model = config.attn_only(2, 128, 4, 128, 256, d_mlp=512,
                           norm=config.NormType.LAYERNORM)
  steps = 20 if quick else 600
  run = lm.DEFAULT_RUN.replace(workdir=workdir, num_steps=steps, log_every=5 if quick else 20)
  cfg = lm.TrainLMConfig(model=model, run=run, data="corpus", batch_size=16)
  results = lm.train_lm(cfg)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  tokens = corpus.default_corpus()
  counts = np.bincount(tokens, minlength=256) / len(tokens)
  unigram = float(-(counts[counts > 0] * np.log(counts[counts > 0])).sum())
  plt = plotting.pyplot()
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
