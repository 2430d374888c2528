"""Train a small byte-level language model; re-running the same command resumes it.

  python experiments/train_lm.py --workdir=runs/lm
  python experiments/train_lm.py --workdir=runs/induction --data=repeat:32 --d_mlp=0 --n_layers=2
  python experiments/train_lm.py --workdir=runs/mine --data='files:/path/to/*.txt' \
      --mesh=data:4,model:2
  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      python experiments/train_lm.py --workdir=runs/lm2 --mesh=data:-1
  XLA_FLAGS=--xla_force_host_platform_device_count=256 python experiments/train_lm.py \
      --compile_only --mesh=data:16,model:16 --n_layers=32 --d_model=4096 --n_heads=32 \
      --d_mlp=16384 --n_ctx=1024 --batch_size=256

The defaults (a 2-layer, d_model=64 transformer on the built-in corpus, 300 steps) take well
under a minute on two CPU cores. The run folder's layout is described in `interp.train.lm`.
A SIGTERM (preemption notice) saves a checkpoint at the next step and exits with status 0,
printing "preempted at step N"; a SIGKILL loses at most the steps since the last checkpoint.
Either way, the same command resumes the run. `--compile_only` lowers and compiles the step for
the mesh and prints per-device memory without running anything (`interp.train.compile_only`).
"""

from __future__ import annotations

from absl import app, flags

from interp.data import tokenize_bytes
from interp.models import config as model_config
from interp.train import checkpoint, cli, compile_only, lm, optim, run_config

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder; rerun with the same one to resume "
                               "(required unless --compile_only).")
_SEED = flags.DEFINE_integer("seed", 0, "Parameter init and data order.")
_MESH = flags.DEFINE_string("mesh", "data:-1,model:1", "Mesh axis sizes, -1 = the rest.")
_DATA = flags.DEFINE_string("data", "corpus", "corpus | files:GLOB | repeat[:SEGMENT_LEN]")
_N_LAYERS = flags.DEFINE_integer("n_layers", 2, "Transformer blocks.")
_D_MODEL = flags.DEFINE_integer("d_model", 64, "Residual width.")
_N_HEADS = flags.DEFINE_integer("n_heads", 4, "Attention heads (d_head = d_model / n_heads).")
_N_CTX = flags.DEFINE_integer("n_ctx", 64, "Context length in bytes.")
_D_MLP = flags.DEFINE_integer("d_mlp", 256, "MLP width; 0 = attention-only.")
_NORM = flags.DEFINE_enum("norm", "layernorm", ["none", "layernorm", "rmsnorm"], "Normalisation.")
_POSITIONAL = flags.DEFINE_enum("positional", "learned", ["none", "learned", "rope"],
                                "Position information.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Global batch size (multiple of the data axis).")
_STEPS = flags.DEFINE_integer("num_steps", 300, "Total training steps.")
_LR = flags.DEFINE_float("lr", 3e-3, "Peak learning rate (AdamW).")
_WARMUP = flags.DEFINE_integer("warmup_steps", 20, "Linear warmup steps.")
_WD = flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay.")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 100, "Save every this many steps.")
_CKPT_SECS = flags.DEFINE_float("checkpoint_every_secs", 0, "Also save every this many seconds "
                                "(0 = off).")
_KEEP = flags.DEFINE_integer("keep_checkpoints", 3, "Latest checkpoints to keep.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 20, "Log metrics every this many steps.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Lower and compile the step for --mesh, "
                                  "print per-device memory, and exit without training.")
_DEVICE_GB = flags.DEFINE_float("device_memory_gb", compile_only.TPU_V5P_HBM_GB,
                                "Per-device memory the --compile_only report compares against "
                                "(default: a TPU v5p chip's HBM).")


def config_from_flags() -> lm.TrainLMConfig:
  """The flags as a frozen TrainLMConfig (library code never reads FLAGS)."""
  if _N_HEADS.value <= 0 or _D_MODEL.value % _N_HEADS.value:
    raise app.UsageError(f"--d_model={_D_MODEL.value} must be a multiple of "
                         f"--n_heads={_N_HEADS.value}")
  try:
    model = model_config.attn_only(
        n_layers=_N_LAYERS.value, d_model=_D_MODEL.value, n_heads=_N_HEADS.value,
        n_ctx=_N_CTX.value, vocab_size=tokenize_bytes.VOCAB_SIZE, norm=_NORM.value,
        positional=_POSITIONAL.value, d_mlp=_D_MLP.value)
    run = run_config.RunConfig(
        workdir=_WORKDIR.value or "", num_steps=_STEPS.value, seed=_SEED.value, mesh=_MESH.value,
        log_every=_LOG_EVERY.value,
        optimizer=optim.OptimizerConfig(lr=_LR.value, warmup_steps=_WARMUP.value,
                                        weight_decay=_WD.value),
        checkpoint=checkpoint.CheckpointConfig(every_steps=_CKPT_EVERY.value,
                                               keep=_KEEP.value, every_secs=_CKPT_SECS.value))
    return lm.TrainLMConfig(model=model, run=run, data=_DATA.value, batch_size=_BATCH.value)
  except ValueError as e:  # a bad flag value: say which, without a traceback
    raise app.UsageError(str(e)) from e


def main(argv):
  cli.start(argv)
  config = config_from_flags()
  if _COMPILE_ONLY.value:
    report = lm.compile_only(config, _DEVICE_GB.value, cli.capacity_name(_DEVICE_GB.value))
    print(report.format())
    return
  if not config.run.workdir:
    raise app.UsageError("--workdir is required (unless --compile_only)")
  results = lm.train_lm(config)
  print(f"{results['status']} at step {results['step']}: {results['final']}")


if __name__ == "__main__":
  app.run(main)
