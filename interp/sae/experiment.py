"""A whole SAE experiment: activations -> trained dictionary -> evaluation, files and figures.

The library behind `experiments/train_sae.py`. The run folder holds what `interp.sae.train`
writes (flags.json, sae_config.json, data.json, metrics.jsonl, checkpoints/) and, at the end:
  results.json        training status + final L0, FVU, CE loss recovered, dead fractions, ...

Two dead fractions, measured on different things, each labelled with what it was measured on:
  dead_fraction_train_window  latents that fired on none of the last `dead_steps` training
                              batches (`dead_train_window_steps`, `dead_train_window_tokens`),
                              as of the final logged step: what AuxK / resampling act on
  dead_fraction_eval          latents that fired on none of the evaluated held-out tokens
                              (`dead_eval_tokens` of them; model sources only)
On a short evaluation set the second is the larger: a latent of density 1e-4 that fires every
few training steps has likely not fired on 2,048 evaluation tokens. So results.json also has
  silent_fraction_by_tokens   {N: fraction of latents that fired on none of the last N training
                              tokens} for N of 10k, 20k, 50k and 100k tokens (whole steps: the
                              window is the steps that hold at least N tokens, at most the run),
                              read from each latent's steps-since-firing counter at the end
  eval.json           every evaluation metric and the log-density histogram
  dashboard.json      the densest latents' dashboard data (`interp.sae.dashboard`)
  dashboard.html      the feature-dashboard page for it (`interp.viz.dashboard_html`)
  density.png         the log10 latent-density histogram
  saelens/            the dictionary in SAELens's format (sae_weights.safetensors + cfg.json)

Activation sources (`--source`):
  planted             synthetic activations from known sparse directions (no model)
  gemma3_270m         Gemma 3 270M from its pip-installed GGUF, over `--data` tokenised by its
                      SentencePiece tokenizer
  gpt2:FOLDER         GPT-2 from a local Hugging Face folder (safetensors + tokenizer files)
  toy:WORKDIR         the newest checkpoint of a `train_lm` run folder (byte tokens)
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from absl import logging

from interp import choices, precision
from interp.data import tokenized
from interp.models import sharded, zoo
from interp.parallel import mesh as mesh_lib
from interp.sae import activation_cache as cache_lib
from interp.sae import activation_sources as sources_lib
from interp.sae import eval_metrics
from interp.sae import evaluate as eval_lib
from interp.sae import store as store_lib
from interp.sae import synthetic
from interp.sae import train as sae_train
from interp.train import run_folder
from interp.viz import dashboard_html

SOURCES = "planted | " + zoo.SPECS


@dataclasses.dataclass(frozen=True)
class SourceConfig:
  """Attributes:
    source: where activations come from (see the module doc).
    hook: the hook site the dictionary reads (model sources).
    data: the token source (`corpus`, `files:GLOB`, `repeat:L`).
    context_length: tokens per model sequence.
    model_batch_size: sequences per forward pass (a multiple of the data axis).
    buffer_batches: forward passes per shuffled refill of the buffer.
    data_seed: token windows and shuffling (independent of the dictionary's init seed).
    cache_dir: if set, activations are first cached there (`cache_tokens` of them) and the run
      streams them back; a killed caching run resumes where it stopped.
    cache_tokens: activations to cache.
    planted_d, planted_features, planted_density: the synthetic source's width, number of
      true features and the probability that each is present on a token.
    planted_seed: the draw of the planted directions (`synthetic.PlantedFeatures.directions`
      folds a constant into it, so even seed 0 is not the seed-0 dictionary's init).
    eval_sequences: held-out sequences for the evaluation (model sources; 0 = skip).
    activation_dtype: the dtype activations are stored in: on device, on the host and in the
      disk cache (model sources). bfloat16 halves those bytes; batches reach the dictionary as
      float32 either way (`interp.sae.store`).
  """

  source: str = "gemma3_270m"
  hook: str = "blocks.9.hook_resid_post"
  data: str = "corpus"
  context_length: int = 128
  model_batch_size: int = 8
  buffer_batches: int = 16
  data_seed: int = 0
  cache_dir: str = ""
  cache_tokens: int = 0
  planted_d: int = 64
  planted_features: int = 256
  planted_density: float = 1 / 64
  planted_seed: int = 0
  eval_sequences: int = 32
  activation_dtype: str = dataclasses.field(default="float32",
                                            metadata={"choices": precision.DTYPES})

  def __post_init__(self):
    if self.source != "planted":
      try:
        zoo.ModelSpec.parse(self.source, flag="source")
      except ValueError as e:
        raise ValueError(f"{e} (or planted)") from None
    for flag in ("context_length", "model_batch_size", "buffer_batches", "planted_d",
                 "planted_features"):
      choices.check_int(flag, getattr(self, flag))
    for flag in ("cache_tokens", "eval_sequences"):
      choices.check_int(flag, getattr(self, flag), minimum=0)
    choices.check_real("planted_density", self.planted_density, "(0, 1]")
    if self.activation_dtype not in precision.DTYPES:
      raise ValueError(f"--activation_dtype={self.activation_dtype!r} is not one of: "
                       f"{', '.join(precision.DTYPES)}")
    if self.source == "planted" and self.activation_dtype != "float32":
      raise ValueError(f"--activation_dtype={self.activation_dtype} applies to model sources; "
                       f"--source=planted draws float32 activations as it goes")
    if self.cache_dir and self.cache_tokens <= 0:
      raise ValueError(f"--cache_dir={self.cache_dir} needs --cache_tokens > 0")

  @property
  def model(self) -> zoo.ModelSpec | None:
    """The model the activations come from (None for the planted source)."""
    return None if self.source == "planted" else zoo.ModelSpec.parse(self.source, "source")


def site_width(src: SourceConfig) -> int:
  """The width of the activations at `--hook` (what the dictionary reads)."""
  return sources_lib.check_sites(zoo.config(src.model), [src.hook])[1]


def build_store(src: SourceConfig, batch_size: int, mesh) -> tuple[sae_train.Store,
                                                                   zoo.Model | None]:
  """The activation store (and the model behind it, if any) for one run."""
  if src.source == "planted":
    features = synthetic.PlantedFeatures(src.planted_d, src.planted_features,
                                         src.planted_density, seed=src.planted_seed)
    return synthetic.SyntheticStore(features, batch_size, mesh, src.data_seed), None
  model = zoo.load(src.model)
  params, shardings = sharded.place(model.cfg, model.params, mesh)
  model.params = params
  tokens = tokenized.make_source(src.data, model.tokenizer, model.cfg.vocab_size)
  store = store_lib.ModelStore(
      model.cfg, params, mesh, [src.hook], tokens, batch_size=batch_size,
      context_length=src.context_length, model_batch_size=src.model_batch_size,
      buffer_batches=src.buffer_batches, seed=src.data_seed, param_shardings=shardings,
      model_name=model.name, dtype=src.activation_dtype)
  if src.cache_dir:
    check_cache_dtype(src.cache_dir, src.activation_dtype)
    cache_lib.cache_activations(store, src.cache_dir, src.cache_tokens)
    store = store_lib.CachedStore(src.cache_dir, batch_size, mesh, src.data_seed,
                                  expect={"dtype": src.activation_dtype})
  return store, model


def check_cache_dtype(cache_dir: str, activation_dtype: str) -> None:
  """Refuses a cache folder written in another dtype. Converting it in place would round a
  float32 cache (or widen a bfloat16 one) behind the user's back, and a run reading it would
  not be the run its flags describe; so the choice is the user's, named in the error.

  Raises:
    ValueError: one line naming `--activation_dtype` and `--cache_dir`.
  """
  if not os.path.exists(os.path.join(cache_dir, cache_lib.META)):
    return
  stored = cache_lib.read_meta(cache_dir).get("dtype")
  if stored != activation_dtype:
    raise ValueError(f"--activation_dtype={activation_dtype}, but --cache_dir={cache_dir} holds "
                     f"{stored} activations; pass --activation_dtype={stored} or another "
                     f"--cache_dir")


SILENT_WINDOWS = (10_000, 20_000, 50_000, 100_000)


def silent_fractions(fired_ago: np.ndarray, batch_size: int, num_steps: int) -> dict[str, float]:
  """{N: fraction of latents silent over the last N training tokens} for `SILENT_WINDOWS`, each
  rounded up to whole steps of `batch_size`; windows longer than the run are left out.
  `fired_ago` is the dictionary's per-latent count of steps since it last fired."""
  fired_ago = np.asarray(fired_ago)
  out = {}
  for tokens in SILENT_WINDOWS:
    steps = -(-tokens // batch_size)
    if steps <= num_steps:
      out[str(tokens)] = float(np.mean(fired_ago >= steps))
  return out


def _eval_tokens(src: SourceConfig, model: zoo.Model) -> np.ndarray:
  """Held-out sequences: token windows of a seed the training stream never uses."""
  tokens = tokenized.make_source(src.data, model.tokenizer, model.cfg.vocab_size)
  return tokens.batch(src.data_seed + 1_000_003, 0, src.eval_sequences, src.context_length)


def run(config: sae_train.TrainSAEConfig, src: SourceConfig,
        eval_config: eval_lib.EvalConfig = eval_lib.EvalConfig()) -> dict:
  """Trains (or resumes) the dictionary, then evaluates it and writes files and figures."""
  mesh = mesh_lib.make_mesh(config.run.mesh_config)  # once: the store and the trainer share it
  store, model = build_store(src, config.batch_size, mesh)
  results, params = sae_train.train_sae(config, store, mesh)
  if results["status"] != "completed":
    return results
  params = jax.device_get(params)
  workdir = os.path.abspath(config.run.workdir)
  final = results["final"] or {}
  summary = {k: final.get(k) for k in ("l0", "fvu", "mse")}
  window = {"dead_fraction_train_window": final.get("dead"),
            "dead_train_window_steps": config.sae.dead_steps,
            "dead_train_window_tokens": config.sae.dead_steps * config.batch_size,
            "silent_fraction_by_tokens": silent_fractions(
                params["fired_ago"], config.batch_size, config.run.num_steps)}
  summary.update(window)
  primary = jax.process_index() == 0
  if model is not None and src.eval_sequences:
    evaluation = eval_lib.evaluate(
        model.cfg, model.params, src.hook, config.sae, params, _eval_tokens(src, model),
        eval_config, decode=getattr(model.tokenizer, "decode", None))
    m = evaluation.metrics
    summary = {"l0": m["l0"], "fvu": m["fvu"], "mse": m["mse"], "cosine": m["cosine"],
               "ce_loss_recovered": m["ce_loss_recovered"], "ce_clean": m["ce_clean"],
               "ce_spliced": m["ce_spliced"], "ce_zero": m["ce_zero"],
               "kl_spliced": m["kl_spliced"], "dead_fraction_eval": m["dead_fraction"],
               "dead_eval_tokens": m["n_tokens"], **window,
               "ultra_low_density_fraction": m["ultra_low_density_fraction"]}
    if primary:
      run_folder.write_json(workdir, "eval.json", evaluation.to_json())
      eval_lib.write_dashboard_data(os.path.join(workdir, "dashboard.json"), evaluation)
      dashboard_html.write_dashboard_html(
          {**evaluation.meta, "metrics": evaluation.metrics, "latents": evaluation.dashboard},
          os.path.join(workdir, "dashboard.html"), f"SAE feature dashboard: {src.hook}")
      fig = eval_metrics.density_figure(evaluation.histogram)
      fig.savefig(os.path.join(workdir, "density.png"), dpi=120, bbox_inches="tight")
  elif src.source == "planted":
    features = store.features
    cos = synthetic.max_cosine(features.directions(), params["W_dec"])
    summary.update(mean_max_cosine=float(cos.mean()))
  if primary:
    from interp.sae import saelens_format
    saelens_format.save(config.sae, params, os.path.join(workdir, "saelens"),
                        hook_name=src.hook if model is not None else "planted",
                        model_name=model.name if model is not None else "")
    results = dict(results, summary=summary, source=dataclasses.asdict(src))
    run_folder.write_json(workdir, "results.json", results)
  logging.info("SAE results: %s", summary)
  return results
