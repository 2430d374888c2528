"""The feature-clamping experiment ("Golden Gate" at small scale): the library behind
`experiments/feature_clamping.py`.

Given a trained SAE run folder (`experiments/train_sae.py`) on a model:
  1. find the latent for a concept: the largest mean activation on `concept` sentences minus
     that on `neutral` sentences (or take `--latent`), and show its top-activating contexts on
     held-out windows of the built-in corpus, with its maximum activation there;
  2. clamp it to `multiples` x that maximum at every position and measure, per dose: the
     probability mass of the latent's output tokens (the 10 tokens whose log-probability a
     clamp at `reference_multiple` raises most on the prompts; the decoder row's logit-lens
     tokens are reported too, but at a middle layer they ignore the rest of the model)
     on unrelated prompts, the KL divergence from the unclamped next-token distribution there,
     and the next-token loss on held-out text (`steering.dose_response`);
  3. generate greedily from the unrelated prompts at a few doses, and count how often the
     generated tokens are concept words.
Writes results.json and figures into `workdir`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax.numpy as jnp
import numpy as np

from interp import choices, jsonio
from interp import precision as precision_lib
from interp.data import tokenized
from interp.models import generate, transformer, zoo
from interp.sae import dictionary
from interp.steering import plots, clamp as steering
from interp.train import run_folder

CONCEPT = ("The function raises an exception if the file does not exist.",
           "An error occurred and the exception was caught by the handler.",
           "If the exception is not handled, the program stops with a traceback.",
           "Raise a ValueError when the argument is invalid, and catch it with except.")
NEUTRAL = ("The weather was sunny and warm all week.",
           "She walked to the market to buy fresh bread and apples.",
           "The children played football in the park after school.",
           "He painted the old fence a bright blue colour.")
PROMPTS = ("My favourite food is", "Yesterday I went to the", "The best way to spend a weekend is",
           "Once upon a time, there was a")
CONCEPT_WORDS = ("exception", "exceptions", "error", "errors", "raise", "raised", "raises",
                 "except", "traceback", "handler", "invalid", "problem", "problems", "fail",
                 "failed", "failure", "wrong", "complaint", "complaints", "fraud")


@dataclasses.dataclass(frozen=True)
class ClampConfig:
  """Attributes: workdir; sae_dir (an SAE run folder); latent (-1: find it from the concept
  sentences); multiples (doses, x the latent's max activation); reference_multiple (the dose
  that defines the output tokens); n_new (generated tokens);
  context_windows / heldout_windows, window (corpus windows for contexts and the loss);
  precision: compute dtype of every model forward (the SAE reads the hook, and logits, KL and
  losses are computed, in float32 either way): auto, float32 or bfloat16."""

  workdir: str
  sae_dir: str
  latent: int = -1
  concept: tuple[str, ...] = CONCEPT
  neutral: tuple[str, ...] = NEUTRAL
  prompts: tuple[str, ...] = PROMPTS
  concept_words: tuple[str, ...] = CONCEPT_WORDS
  multiples: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
  generate_multiples: tuple[float, ...] = (1.5, 2.5, 4.0)
  reference_multiple: float = 2.0
  n_new: int = 24
  context_windows: int = 32
  heldout_windows: int = 8
  window: int = 64
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES,
                                               "help": precision_lib.HELP})

  def __post_init__(self):
    choices.numbers(self, positive=("reference_multiple", "n_new", "context_windows",
                                    "heldout_windows", "window"))
    precision_lib.Precision.parse(self.precision)  # a bad value fails here, naming --precision
    if any(not (math.isfinite(m) and m >= 0) for m in self.multiples + self.generate_multiples):
      raise ValueError(f"--multiples={list(self.multiples)} and --generate_multiples="
                       f"{list(self.generate_multiples)}: must be finite numbers >= 0")
    if not os.path.exists(os.path.join(self.sae_dir, "sae_config.json")):
      raise ValueError(f"--sae_dir={self.sae_dir!r} holds no sae_config.json: give the run "
                       "folder of experiments/train_sae.py (e.g. runs/figures/sae_gemma)")


def _batch(tokenizer, texts) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded [n p] ids (BOS first) and their real-token mask."""
  bos = tokenized.bos_id(tokenizer)
  rows = [([bos] if bos is not None else []) + [int(t) for t in tokenized.encode(tokenizer, t)]
          for t in texts]
  width = max(map(len, rows))
  ids = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    ids[i, :len(r)], mask[i, :len(r)] = r, True
  mask[:, 0] = bos is None  # never count BOS
  return ids, mask


def _load(config: ClampConfig):
  from interp.sae import train as sae_train
  sae_cfg, sae_params = sae_train.load_params(config.sae_dir)
  source = jsonio.read_json(os.path.join(config.sae_dir, "results.json"))["source"]
  model = zoo.load(zoo.ModelSpec.parse(source["source"], flag="source"))
  sae_params = {k: jnp.asarray(v) for k, v in sae_params.items()}
  return model, source["hook"], sae_cfg, sae_params


def top_contexts(tokenizer, tokens, acts, n: int = 5, width: int = 8) -> list[dict]:
  """The n strongest (window, position) activations with `width` tokens either side."""
  flat = np.argsort(-acts, axis=None)[:n]
  out = []
  for w, p in zip(*np.unravel_index(flat, acts.shape)):
    lo, hi = max(1, p - width), min(tokens.shape[1], p + width + 1)
    out.append({"activation": float(acts[w, p]),
                "before": tokenizer.decode(tokens[w, lo:p]),
                "token": tokenizer.decode(tokens[w, p:p + 1]),
                "after": tokenizer.decode(tokens[w, p + 1:hi])})
  return out


def run(config: ClampConfig) -> dict:
  os.makedirs(config.workdir, exist_ok=True)
  run_folder.record_flags(config.workdir, dataclasses.asdict(config))
  t0 = time.time()
  model, hook, sae_cfg, sae = _load(config)
  cfg, params, tok = model.cfg, model.params, model.tokenizer
  prec = precision_lib.Precision.parse(config.precision)
  results: dict = {"model": model.name, "hook": hook, "sae_dir": config.sae_dir,
                   "precision": prec.name}
  latent = config.latent
  if latent < 0:
    c_ids, c_mask = _batch(tok, config.concept)
    n_ids, n_mask = _batch(tok, config.neutral)
    score = (steering.mean_activations(cfg, params, sae_cfg, sae, hook, c_ids, c_mask, prec)
             - steering.mean_activations(cfg, params, sae_cfg, sae, hook, n_ids, n_mask, prec))
    latent = int(jnp.argmax(score))
    results["concept_score"] = float(score[latent])
  results["latent"] = latent
  corpus = tokenized.make_source("corpus", tok, cfg.vocab_size)
  windows = corpus.batch(7_000_001, 0, config.context_windows, config.window)
  _, cache = transformer.run_with_cache(cfg, params, jnp.asarray(windows), [hook],
                                        precision=prec)
  acts = np.array(dictionary.encode(sae_cfg, sae, cache[hook].astype(jnp.float32))[..., latent])
  if tokenized.bos_id(tok) is not None:
    acts[:, 0] = 0.0  # BOS
  max_act = float(acts.max())
  results["max_activation"] = max_act
  results["top_contexts"] = top_contexts(tok, windows, acts)
  lens_tokens = steering.output_tokens(cfg, params, sae, latent, k=10)
  results["logit_lens_tokens"] = [tok.decode([int(t)]) for t in lens_tokens]
  p_ids, p_mask = _batch(tok, config.prompts)
  targets = steering.promoted_tokens(cfg, params, sae_cfg, sae, hook, jnp.array([latent]),
                                     jnp.array([config.reference_multiple * max_act]),
                                     jnp.asarray(p_ids), jnp.asarray(p_mask), precision=prec)
  results["output_tokens"] = [tok.decode([int(t)]) for t in targets]

  heldout = corpus.batch(7_000_002, 0, config.heldout_windows, config.window)
  doses = jnp.asarray(config.multiples, jnp.float32)[:, None] * max_act
  t = time.time()
  dr = steering.dose_response(cfg, params, sae_cfg, sae, hook, jnp.array([latent]), doses,
                              jnp.asarray(p_ids), jnp.asarray(p_mask), jnp.asarray(heldout),
                              jnp.ones(heldout.shape, bool), jnp.asarray(targets), prec)
  results["dose_response"] = {"multiples": list(config.multiples),
                              "doses": np.asarray(doses[:, 0]).tolist(),
                              **{k: np.asarray(v).tolist() for k, v in dr.items()},
                              "seconds": time.time() - t}
  results["generations"] = _generations(config, model, hook, sae_cfg, sae, latent, max_act,
                                        prec)
  results["figures"] = plots.save_all(config.workdir, results)
  results["wall_s"] = time.time() - t0
  with open(os.path.join(config.workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results


def _generations(config, model, hook, sae_cfg, sae, latent, max_act, prec) -> dict:
  """Greedy continuations of every prompt at each dose (the prompts in one call per dose), and
  the rate of concept words in them."""
  tok = model.tokenizer
  words = {w.lower() for w in config.concept_words}
  ids, mask = _batch(tok, config.prompts)
  lengths = mask.sum(1) + (tokenized.bos_id(tok) is not None)  # _batch's mask leaves BOS out
  out = {}
  for m in (0.0,) + tuple(config.generate_multiples):
    texts, hits, total = [], 0, 0
    if m == 0.0:
      gens = generate.greedy(model.cfg, model.params, ids, config.n_new, precision=prec,
                             lengths=lengths)
    else:
      gens = steering.generate_clamped(model.cfg, model.params, sae_cfg, sae, hook, ids,
                                       config.n_new, [latent], [m * max_act], prec, lengths)
    for prompt, gen, n in zip(config.prompts, gens, lengths):
      new = tok.decode([int(t) for t in gen[n:n + config.n_new]])
      texts.append(prompt + new)
      found = [w.strip(".,;:()'\"").lower() for w in new.split()]
      hits += sum(w in words for w in found)
      total += len(found)
    out[f"{m:g}"] = {"texts": texts, "concept_word_rate": hits / max(total, 1)}
  return out
