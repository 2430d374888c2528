"""Train a sparse autoencoder on a model's activations; re-running the same command resumes it.

  # The default: Gemma 3 270M's middle residual stream over the built-in corpus.
  python experiments/train_sae.py --workdir=runs/sae_gemma
  # Any rule, by flag; the planted-feature benchmark needs no model.
  python experiments/train_sae.py --workdir=runs/sae_planted --source=planted --activation=topk \
      --k=4 --d_sae=512 --num_steps=600 --batch_size=1024
  python experiments/train_sae.py --workdir=runs/sae_toy --source=toy:runs/lm \
      --hook=blocks.1.hook_resid_post --activation=jumprelu --expansion=8
  # Latents sharded over `model`, tokens over `data`; 2 local processes:
  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      python experiments/train_sae.py --workdir=runs/sae2 --source=planted --mesh=data:2,model:4
  # Plan a pod: Scaling Monosemanticity's largest dictionary on 256 simulated devices.
  XLA_FLAGS=--xla_force_host_platform_device_count=256 python experiments/train_sae.py \
      --compile_only --source=planted --planted_d=4096 --d_sae=33554432 --batch_size=4096 \
      --mesh=data:8,model:32 --activation=relu --decoder_norm=weighted

Outputs (metrics, checkpoints, results.json, eval.json, dashboard.json, density.png, saelens/)
are described in `interp.sae.experiment`; the rules and their flags in `interp.sae.config`.
"""

from __future__ import annotations

from absl import app, flags

from interp.sae import evaluate as eval_lib
from interp.sae import experiment
from interp.sae import train as sae_train
from interp.sae.config import Activation, DeadMitigation, DecoderNorm, SAEConfig
from interp.train import checkpoint, cli, compile_only, optim, run_config

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder; rerun with the same one to resume.")
_SEED = flags.DEFINE_integer("seed", 0, "Dictionary initialisation.")
_MESH = flags.DEFINE_string("mesh", "data:-1,model:1", "Mesh; `model` shards the latents.")
# Activations.
_SOURCE = flags.DEFINE_string("source", "gemma3_270m", experiment.SOURCES)
_HOOK = flags.DEFINE_string("hook", "blocks.9.hook_resid_post", "Hook site the SAE reads.")
_DATA = flags.DEFINE_string("data", "corpus", "corpus | files:GLOB | repeat[:SEGMENT_LEN]")
_CTX = flags.DEFINE_integer("context_length", 128, "Tokens per model sequence.")
_MODEL_BATCH = flags.DEFINE_integer("model_batch_size", 8, "Sequences per forward pass.")
_BUFFER = flags.DEFINE_integer("buffer_batches", 16, "Forward passes per shuffled refill.")
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Token windows and shuffle order.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "", "Cache activations here first, then stream.")
_CACHE_TOKENS = flags.DEFINE_integer("cache_tokens", 0, "Activations to cache.")
_PLANTED_D = flags.DEFINE_integer("planted_d", 64, "Planted source: width.")
_PLANTED_N = flags.DEFINE_integer("planted_features", 256, "Planted source: true features.")
_PLANTED_P = flags.DEFINE_float("planted_density", 1 / 64, "Planted source: feature density.")
_EVAL_SEQ = flags.DEFINE_integer("eval_sequences", 32, "Held-out sequences to evaluate on.")
_EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", 8, "Sequences per evaluation step.")
# The dictionary.
_D_SAE = flags.DEFINE_integer("d_sae", 0, "Latents (0: --expansion x the input width).")
_EXPANSION = flags.DEFINE_integer("expansion", 8, "Latents per input dimension.")
_ACTIVATION = flags.DEFINE_enum("activation", "topk", [a.value for a in Activation],
                                "Activation rule.")
_K = flags.DEFINE_integer("k", 32, "Latents per token (topk, batchtopk).")
_L1 = flags.DEFINE_float("l1_coeff", SAEConfig.l1_coeff, "L1 weight (relu, gated).")
_DEC_NORM = flags.DEFINE_enum("decoder_norm", "unit", [d.value for d in DecoderNorm],
                              "unit: unit decoder rows; weighted: L1 x decoder-row norm.")
_INIT_DEC_NORM = flags.DEFINE_float("init_decoder_norm", 1.0, "Decoder row norm at init.")
_L0 = flags.DEFINE_float("l0_coeff", SAEConfig.l0_coeff, "L0 weight (jumprelu).")
_BANDWIDTH = flags.DEFINE_float("bandwidth", SAEConfig.bandwidth, "JumpReLU STE bandwidth.")
_THRESHOLD = flags.DEFINE_float("threshold_init", SAEConfig.threshold_init,
                                "Initial JumpReLU threshold.")
_DEAD = flags.DEFINE_enum("dead_mitigation", "auto", ["auto"] + [d.value for d in DeadMitigation],
                          "auto: auxk for topk/batchtopk, none otherwise.")
_DEAD_STEPS = flags.DEFINE_integer("dead_steps", SAEConfig.dead_steps, "Steps silent = dead.")
_AUX_K = flags.DEFINE_integer("aux_k", 0, "AuxK latents (0: d_in / 2).")
_AUX_COEFF = flags.DEFINE_float("aux_coeff", SAEConfig.aux_coeff, "AuxK loss weight.")
_RESAMPLE = flags.DEFINE_integer("resample_every", SAEConfig.resample_every,
                                 "Resampling period (--dead_mitigation=resample).")
_MATRYOSHKA = flags.DEFINE_list("matryoshka", [], "Nested prefix sizes, e.g. 256,1024.")
_NORMALIZE = flags.DEFINE_bool("normalize_input", True, "Scale inputs to E||x||^2 = d_in.")
# Training.
_BATCH = flags.DEFINE_integer("batch_size", 4096, "Activations per step (global).")
_STEPS = flags.DEFINE_integer("num_steps", 1000, "Training steps.")
_LR = flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 50, "Linear warmup steps.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Log metrics every this many steps.")
_INIT_SAMPLE = flags.DEFINE_integer("init_sample", 4096, "Activations for the init statistics.")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 200, "Save every this many steps.")
_CKPT_SECS = flags.DEFINE_float("checkpoint_every_secs", 0, "Also save every N seconds.")
_KEEP = flags.DEFINE_integer("keep_checkpoints", 2, "Latest checkpoints to keep.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Compile the step for --mesh, print "
                                  "per-device memory, exit.")
_DEVICE_GB = flags.DEFINE_float("device_memory_gb", compile_only.TPU_V5P_HBM_GB,
                                "Per-device memory for the --compile_only report.")


def configs_from_flags(d_in: int | None = None):
  """(TrainSAEConfig, SourceConfig) from the flags; d_in None = read from the source later."""
  try:
    src = experiment.SourceConfig(
        source=_SOURCE.value, hook=_HOOK.value, data=_DATA.value, context_length=_CTX.value,
        model_batch_size=_MODEL_BATCH.value, buffer_batches=_BUFFER.value,
        data_seed=_DATA_SEED.value, cache_dir=_CACHE_DIR.value, cache_tokens=_CACHE_TOKENS.value,
        planted_d=_PLANTED_D.value, planted_features=_PLANTED_N.value,
        planted_density=_PLANTED_P.value, eval_sequences=_EVAL_SEQ.value)
    d_in = d_in or (src.planted_d if src.source == "planted" else experiment.site_width(src))
    dead = _DEAD.value
    if dead == "auto":
      dead = "auxk" if _ACTIVATION.value in ("topk", "batchtopk") else "none"
    sae = SAEConfig(
        d_in=d_in, d_sae=_D_SAE.value or _EXPANSION.value * d_in, activation=_ACTIVATION.value,
        k=_K.value, l1_coeff=_L1.value, decoder_norm=_DEC_NORM.value,
        init_decoder_norm=_INIT_DEC_NORM.value, l0_coeff=_L0.value, bandwidth=_BANDWIDTH.value,
        threshold_init=_THRESHOLD.value, dead_mitigation=dead, dead_steps=_DEAD_STEPS.value,
        aux_k=_AUX_K.value, aux_coeff=_AUX_COEFF.value, resample_every=_RESAMPLE.value,
        matryoshka=tuple(int(m) for m in _MATRYOSHKA.value),
        normalize_input=_NORMALIZE.value)
    run = run_config.RunConfig(
        workdir=_WORKDIR.value or "", num_steps=_STEPS.value, seed=_SEED.value, mesh=_MESH.value,
        log_every=_LOG_EVERY.value,
        optimizer=optim.OptimizerConfig(lr=_LR.value, warmup_steps=_WARMUP.value, grad_clip=0.0),
        checkpoint=checkpoint.CheckpointConfig(every_steps=_CKPT_EVERY.value, keep=_KEEP.value,
                                               every_secs=_CKPT_SECS.value))
    config = sae_train.TrainSAEConfig(sae=sae, run=run, batch_size=_BATCH.value,
                                      init_sample=_INIT_SAMPLE.value)
    return config, src
  except ValueError as e:  # a bad flag value: say which, without a traceback
    raise app.UsageError(str(e)) from e


def main(argv):
  cli.start(argv)
  config, src = configs_from_flags()
  if _COMPILE_ONLY.value:
    report = sae_train.compile_only(config, _DEVICE_GB.value, cli.capacity_name(_DEVICE_GB.value))
    print(report.format())
    return
  if not config.run.workdir:
    raise app.UsageError("--workdir is required (unless --compile_only)")
  results = experiment.run(config, src, eval_lib.EvalConfig(batch_size=_EVAL_BATCH.value))
  print(f"{results['status']} at step {results['step']}: {results.get('summary')}")


if __name__ == "__main__":
  app.run(main)
