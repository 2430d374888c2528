"""Matching latents across dictionaries, and the seed-stability study built on it.

Dictionaries trained from different random seeds are known to be similar but not identical
(e.g. Paulo & Belrose 2025). Vocabulary:
  cosine matrix  C[i, j] = cos(latent i of A, latent j of B), over decoder rows W_dec [d_sae, d_in]
                 or encoder columns W_enc[:, i] (the two can disagree: encoders also absorb
                 interference between features).
  matching       the one-to-one assignment maximising the summed cosine (the Hungarian method,
                 `scipy.optimize.linear_sum_assignment`).
  shared@t       fraction of A's latents whose partner has cosine > t.

`run_seed_stability` trains K seeds of one configuration per (architecture, width) with
`interp.sae.train.train_sae` (each in <workdir>/<arch>_w<width>/seed<k>/, so a rerun resumes),
matches every pair of seeds, and writes results.json and seed_stability.png into the workdir.
Its `precision` is each training's `TrainSAEConfig.precision` (`--precision` of `train_sae`:
the encoder and decoder products in the compute dtype, parameters, optimizer state, losses and
metrics float32); results.json records the resolved policy.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
import time
from typing import NamedTuple

import numpy as np
from absl import logging
from scipy.optimize import linear_sum_assignment

from interp import precision as precision_lib
from interp.parallel import mesh as mesh_lib
from interp.parallel.mesh import DEFAULT_MESH
from interp.sae import synthetic
from interp.sae import train as train_lib
from interp.sae.config import Activation, SAEConfig
from interp.train import run_folder
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig
from interp.train.run_config import RunConfig


class Match(NamedTuple):
  """For each latent i of A: its partner `cols[i]` in B (-1: none) and their `cosine[i]`."""
  cols: np.ndarray
  cosine: np.ndarray


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosines [n, m] between the rows of a [n, d] and b [m, d], in float64."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return a @ b.T


def match(a: np.ndarray, b: np.ndarray) -> Match:
  """The one-to-one matching of rows of a [n, d] to rows of b [m, d] maximising summed cosine.

  With n > m, the n - m latents of A left over get partner -1 and cosine 0.
  """
  c = cosine_matrix(a, b)
  rows, cols = linear_sum_assignment(c, maximize=True)
  partner = np.full(c.shape[0], -1, np.int64)
  partner[rows] = cols
  cosine = np.zeros(c.shape[0])
  cosine[rows] = c[rows, cols]
  return Match(partner, cosine)


def shared_fraction(m: Match, threshold: float) -> float:
  """Fraction of A's latents matched with cosine above `threshold`."""
  return float(np.mean(m.cosine > threshold))


def compare(params_a: dict, params_b: dict, thresholds=(0.7, 0.9)) -> dict:
  """Decoder and encoder matchings of two dictionaries of the same input width.

  Returns:
    {"decoder_mean_cosine", "decoder_shared@0.7", ..., "encoder_mean_cosine", ...}: floats.
  """
  out = {}
  for name, get in (("decoder", lambda p: p["W_dec"]), ("encoder", lambda p: np.asarray(
      p["W_enc"]).T)):
    m = match(np.asarray(get(params_a)), np.asarray(get(params_b)))
    out[f"{name}_mean_cosine"] = float(m.cosine.mean())
    for t in thresholds:
      out[f"{name}_shared@{t:g}"] = shared_fraction(m, t)
  return out


# ---------------------------------------------------------------------------------------------
# The seed-stability study


class Source(str, enum.Enum):
  PLANTED = "planted"  # `interp.sae.synthetic.SyntheticStore`
  MODEL = "model"      # a model's activations (left for later: needs the activation store)


@dataclasses.dataclass(frozen=True)
class SeedStabilityConfig:
  """Attributes:
    workdir: the run folder (one sub-folder per trained dictionary).
    widths: dictionary widths d_sae to train.
    architectures: activation rules to compare (relu = ReLU + L1, topk = TopK).
    seeds: dictionaries per (architecture, width); every pair is matched.
    thresholds: cosine thresholds of the shared fractions.
    source: where the activations come from.
    d, n_features, density, features_seed: the planted features (d is d_in). The features'
      seed is kept apart from the init seeds (refused if equal), a second guard beside
      `PlantedFeatures.directions` folding a constant into its key, so that no dictionary
      starts at the truth.
    data_seed: the activation stream, the same for every seed (seeds differ in init only).
    batch_size, num_steps, lr: training.
    k: TopK's latents per token.
    l1_coeff: ReLU's L1 weight (on inputs normalised to mean squared coordinate 1).
    mesh: `--mesh` for training.
    precision: compute dtype of the dictionaries' encoder and decoder products in training
      (`train_sae --precision`; parameters, optimizer state, losses and metrics stay float32):
      auto = float32 on CPU and bfloat16 on GPU/TPU, or float32, or bfloat16.
  """

  workdir: str
  widths: tuple[int, ...] = (128, 256, 512)
  architectures: tuple[Activation, ...] = (Activation.RELU, Activation.TOPK)
  seeds: int = 3
  thresholds: tuple[float, ...] = (0.7, 0.9)
  source: Source = Source.PLANTED
  d: int = 64
  n_features: int = 256
  density: float = 1 / 64
  features_seed: int = 1234
  data_seed: int = 0
  batch_size: int = 1024
  num_steps: int = 2000
  lr: float = 3e-3
  k: int = 4
  l1_coeff: float = 2.0
  mesh: str = DEFAULT_MESH
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    precision_lib.Precision.parse(self.precision)  # a bad value fails here, naming --precision
    set_ = lambda k, v: object.__setattr__(self, k, v)
    try:
      set_("architectures", tuple(Activation(a) for a in self.architectures))
      set_("source", Source(self.source))
    except ValueError as e:
      raise ValueError(f"{e}; architectures are from {[a.value for a in Activation]}, sources "
                       f"from {[s.value for s in Source]}") from None
    set_("widths", tuple(int(w) for w in self.widths))
    set_("thresholds", tuple(float(t) for t in self.thresholds))
    if self.features_seed in range(self.seeds):
      raise ValueError(f"--features_seed={self.features_seed} is also an init seed (0..."
                       f"{self.seeds - 1}): those dictionaries would start at the truth")
    if self.seeds < 2:
      raise ValueError(f"--seeds={self.seeds}: matching needs at least 2")
    if not self.widths or min(self.widths) <= 0:
      raise ValueError(f"--widths={self.widths} must be positive")
    for arch in self.architectures:
      for width in self.widths:
        self.sae_config(arch, width)  # fails now, with the flag's name, if a width is invalid

  def sae_config(self, arch: Activation, width: int) -> SAEConfig:
    if arch == Activation.TOPK:
      return SAEConfig(d_in=self.d, d_sae=width, activation=arch, k=self.k)
    return SAEConfig(d_in=self.d, d_sae=width, activation=arch, l1_coeff=self.l1_coeff)

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out.update(architectures=[a.value for a in self.architectures], source=self.source.value)
    return out


def _train_one(config: SeedStabilityConfig, sae_cfg: SAEConfig, seed: int, store, workdir: str,
               mesh):
  run = RunConfig(
      workdir=workdir, seed=seed, mesh=config.mesh, num_steps=config.num_steps,
      log_every=max(config.num_steps // 4, 1),
      optimizer=OptimizerConfig(lr=config.lr, warmup_steps=min(50, config.num_steps // 10),
                                grad_clip=0.0),
      checkpoint=CheckpointConfig(every_steps=config.num_steps, keep=1))
  train_cfg = train_lib.TrainSAEConfig(sae=sae_cfg, run=run, batch_size=config.batch_size,
                                       precision=config.precision)
  results, params = train_lib.train_sae(train_cfg, store, mesh)
  return results, {k: np.asarray(v) for k, v in params.items()}


def stability_figure(summary: list[dict], thresholds) -> "object":
  """Fraction shared vs width: decoder and encoder panels, a line per architecture x threshold."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(9, 3.6), layout="constrained")
  axes = fig.subplots(1, 2, sharey=True)
  archs = sorted({row["architecture"] for row in summary})
  for ax, part in zip(axes, ("decoder", "encoder")):
    for arch, (i, t) in itertools.product(archs, enumerate(thresholds)):
      rows = sorted((r for r in summary if r["architecture"] == arch), key=lambda r: r["width"])
      ax.errorbar([r["width"] for r in rows], [r[f"{part}_shared@{t:g}"] for r in rows],
                  yerr=[r[f"{part}_shared@{t:g}_std"] for r in rows], marker="o", capsize=3,
                  linestyle=("-", "--", ":", "-.")[i % 4],
                  color={"relu": "tab:blue", "topk": "tab:orange"}.get(arch),
                  label=f"{arch}, cos > {t:g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dictionary width (latents)")
    ax.set_title(f"{part} directions")
    ax.set_ylim(0, 1.02)
  axes[0].set_ylabel("fraction of latents shared across seeds")
  axes[1].legend(fontsize=8)
  return fig


def run_seed_stability(config: SeedStabilityConfig) -> dict:
  """Trains `config.seeds` dictionaries per (architecture, width), matches every pair of seeds.

  Returns:
    The results.json content: config, runs (per dictionary: final training metrics, and for
    planted features the mean max cosine to the truth and the fraction recovered above 0.9),
    pairs (per pair of seeds: `compare` output) and summary (per architecture and width: the
    pair mean and standard deviation of each comparison).
  """
  if config.source != Source.PLANTED:
    raise NotImplementedError(f"--source={config.source.value}: only planted features for now; "
                              "model activations need interp.sae.store")
  start = time.time()
  os.makedirs(config.workdir, exist_ok=True)
  run_folder.record_flags(config.workdir, config.to_dict())
  features = synthetic.PlantedFeatures(d=config.d, n_features=config.n_features,
                                       density=config.density, seed=config.features_seed)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(config.mesh))
  store = synthetic.SyntheticStore(features, config.batch_size, mesh, seed=config.data_seed)
  truth = np.asarray(features.directions())
  runs, pairs, summary = [], [], []
  for arch, width in itertools.product(config.architectures, config.widths):
    sae_cfg = config.sae_config(arch, width)
    dicts = []
    for seed in range(config.seeds):
      name = f"{arch.value}_w{width}"
      results, params = _train_one(config, sae_cfg, seed, store,
                                   os.path.join(config.workdir, name, f"seed{seed}"), mesh)
      cos = np.max(cosine_matrix(truth, params["W_dec"]), -1)
      final = results.get("final") or {}
      runs.append({"architecture": arch.value, "width": width, "seed": seed,
                   "precision": results.get("precision"),
                   **{k: final[k] for k in ("l0", "fvu", "dead") if k in final},
                   "truth_mean_max_cosine": float(cos.mean()),
                   "truth_recovered@0.9": float(np.mean(cos > 0.9))})
      logging.info("%s seed %d: %s", name, seed, runs[-1])
      dicts.append(params)
    cell = []
    for i, j in itertools.combinations(range(config.seeds), 2):
      cell.append(compare(dicts[i], dicts[j], config.thresholds))
      pairs.append({"architecture": arch.value, "width": width, "seed_a": i, "seed_b": j,
                    **cell[-1]})
    row = {"architecture": arch.value, "width": width, "pairs": len(cell)}
    for key in cell[0]:
      values = np.array([c[key] for c in cell])
      row[key], row[key + "_std"] = float(values.mean()), float(values.std())
    summary.append(row)
  results = {"config": config.to_dict(),
             "precision": precision_lib.Precision.parse(config.precision).name, "runs": runs,
             "pairs": pairs, "summary": summary, "wall_s": round(time.time() - start, 2)}
  run_folder.write_json(config.workdir, "results.json", results)
  fig = stability_figure(summary, config.thresholds)
  fig.savefig(os.path.join(config.workdir, "seed_stability.png"), dpi=110)
  return results


def summary_table(results: dict) -> str:
  """The summary as a Markdown table: pair mean (std) of each shared fraction, by cell."""
  thresholds = results["config"]["thresholds"]
  cols = [f"{part}_shared@{t:g}" for part in ("decoder", "encoder") for t in thresholds]
  recovered = {}
  for run in results["runs"]:
    recovered.setdefault((run["architecture"], run["width"]), []).append(
        run["truth_mean_max_cosine"])
  lines = ["| architecture | width | " + " | ".join(c.replace("_shared@", " cos > ") for c in cols)
           + " | truth mean max cos |", "| --- | --- |" + " --- |" * (len(cols) + 1)]
  for row in results["summary"]:
    cells = [f"{row[c]:.3f} ({row[c + '_std']:.3f})" for c in cols]
    truth = np.mean(recovered[(row["architecture"], row["width"])])
    lines.append(f"| {row['architecture']} | {row['width']} | " + " | ".join(cells) +
                 f" | {truth:.3f} |")
  return "\n".join(lines)
