"""The IOI experiment: the library behind `experiments/ioi.py`.

On `n_prompts` IOI prompts (`ioi.prompts`, ABBA and BABA, p_ABC corruptions) for a model
(Gemma 3 270M, or GPT-2 small from a local Hugging Face folder) it measures
  baseline       logit difference IO - S at END, accuracy (LD > 0), IO top-1 rate
  direct effect  every head's path-patched effect on the logits (MLPs frozen) and its direct
                 logit attribution, relative to the clean LD
  classes        name movers, negative name movers, S-inhibition, induction, duplicate-token,
                 previous-token heads (`ioi.circuit.find_circuit`)
  faithfulness   LD of the circuit with every other head mean-ablated per template
  patching maps  residual stream (layer x role) and heads (layer x head), denoising
                 (corrupted run, clean activations patched in), normalised; and attribution
                 patching's estimate of the same maps with its agreement (Pearson r,
                 Kendall tau) against the real patching
Writes results.json and figures (PNG) into `workdir`. `precision` (`--precision`) is the
policy of every forward: the baseline, attention, path patching, the patching maps
(`interp.circuits.patching`) and faithfulness; logits and every metric are float32.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax.numpy as jnp
import numpy as np
from scipy import stats

from interp import choices
from interp import precision as precision_lib
from interp.ioi import circuit as ioi
from interp.ioi import plots
from interp.ioi import prompts as ioi_data

from interp.circuits import patching
from interp.models import transformer, zoo
from interp.train import run_folder


@dataclasses.dataclass(frozen=True)
class IOIConfig:
  """Attributes:
    workdir: the run folder.
    model: gemma3_270m | gpt2:DIR.
    n_prompts: IOI prompts (ABBA and BABA).
    seed: the prompts' draw.
    circuit: the classification thresholds.
    patching: compute the patching maps.
    precision: compute dtype of every forward (baseline, attention, path patching, patching
      maps, faithfulness; logits and logit differences stay float32): auto, float32 or
      bfloat16.
  """

  workdir: str
  model: str = "gemma3_270m"
  n_prompts: int = 16
  seed: int = 0
  circuit: ioi.CircuitConfig = ioi.CircuitConfig()
  patching: bool = True
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    choices.numbers(self, non_negative=("seed",))
    precision_lib.Precision.parse(self.precision)  # a bad value fails here, naming --precision
    if self.n_prompts < 2:
      raise ValueError(f"--n_prompts={self.n_prompts}: need at least 2 (ABBA and BABA)")
    # IOI prompts need a tokenizer with single-token names: not the byte-level toys.
    zoo.ModelSpec.parse(self.model, kinds=(zoo.ModelKind.GEMMA3_270M, zoo.ModelKind.GPT2))


def agreement(estimate: np.ndarray, exact: np.ndarray, k: int = 5) -> dict:
  """Pearson r, Kendall tau and top-k overlap (by |value|) of two same-shaped maps."""
  a, b = np.ravel(estimate), np.ravel(exact)
  top = lambda x: set(np.argsort(-np.abs(x))[:k].tolist())
  return {"pearson_r": float(np.corrcoef(a, b)[0, 1]),
          "kendall_tau": float(stats.kendalltau(a, b).statistic),
          f"top{k}_overlap": len(top(a) & top(b)) / k}


def patching_maps(model, data: ioi_data.IOIData, chunk: int,
                  precision: precision_lib.Precision | str | None = None) -> dict:
  """Denoising activation patching and attribution patching, normalised by the clean-corrupt
  gap: resid [l roles] and heads [l h]; every forward under `precision` (None: float32).
  `chunk` is the residual sweep's sites per vmapped batch; the heads run as one program."""
  cfg, params = model.cfg, model.params
  tokens, corrupt = jnp.asarray(data.tokens), jnp.asarray(data.corrupt)
  end, roles = jnp.asarray(data.end), jnp.asarray(data.roles)
  metric = patching.logit_diff(jnp.asarray(data.answers))
  # The clean run's metric: one forward (the base run's comes with attribution patching).
  clean = float(metric(transformer.forward(cfg, params, tokens, logits_at=end,
                                           precision=precision)[0]))
  out = {}
  for kind in ("resid", "heads"):
    positions = roles if kind == "resid" else None
    t = time.time()
    # Heads in one program (`patching`'s suffix sweep, chunk None): 8 sites a chunk compiles one
    # program per layer, which on Gemma 3 270M took 27 s of compiling against 10 s.
    act = patching.activation_patching(cfg, params, corrupt, tokens, metric, kind,
                                       positions=positions, logits_at=end,
                                       chunk=chunk if kind == "resid" else None,
                                       precision=precision)
    act_s = time.time() - t
    t = time.time()
    base, est = patching.attribution_patching(cfg, params, corrupt, tokens, metric, kind,
                                              positions=positions, logits_at=end,
                                              precision=precision)
    attr_s = time.time() - t
    gap = clean - float(base)
    exact = (np.asarray(act) - float(base)) / gap
    approx = np.asarray(est) / gap
    out[kind] = {"activation": exact.tolist(), "attribution": approx.tolist(),
                 "agreement": agreement(approx, exact), "seconds_activation": act_s,
                 "seconds_attribution": attr_s}
  return out


def run(config: IOIConfig) -> dict:
  os.makedirs(config.workdir, exist_ok=True)
  run_folder.record_flags(config.workdir, dataclasses.asdict(config))
  t0 = time.time()
  model = zoo.load(zoo.ModelSpec.parse(config.model))
  data = ioi_data.generate(model.tokenizer, config.n_prompts, seed=config.seed)
  precision = precision_lib.Precision.parse(config.precision)
  results, classes = ioi.find_circuit(model.cfg, model.params, data, config.circuit, precision)
  heads = sorted({x for v in classes.values() for x in v})
  results["faithfulness"] = ioi.faithfulness(model.cfg, model.params, data, heads, precision)
  results["model"], results["precision"] = model.name, precision.name
  results["prompts"] = list(data.text[:8])
  direct = np.asarray(results["effects"]["direct"])
  order = np.argsort(direct, axis=None)
  name = lambda i: f"{i // model.cfg.n_heads}.{i % model.cfg.n_heads}"
  results["largest_negative_direct"] = [(name(i), float(direct.flat[i])) for i in order[:5]]
  results["largest_positive_direct"] = [(name(i), float(direct.flat[i])) for i in order[::-1][:5]]
  if config.patching:
    results["patching"] = patching_maps(model, data, config.circuit.chunk, precision)
  results["figures"] = plots.save_all(config.workdir, results, classes, model.cfg)
  results["wall_s"] = time.time() - t0
  with open(os.path.join(config.workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results
