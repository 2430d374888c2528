"""Train a small byte-level language model; re-running the same command resumes it.

  python experiments/train_lm.py --workdir=runs/lm
  python experiments/train_lm.py --workdir=runs/induction --data=repeat:32 --d_mlp=0 --n_layers=2
  python experiments/train_lm.py --workdir=runs/mine --data='files:/path/to/*.txt' \
      --mesh=data:4,model:2
  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      python experiments/train_lm.py --workdir=runs/lm2 --mesh=data:-1
  XLA_FLAGS=--xla_force_host_platform_device_count=256 python experiments/train_lm.py \
      --compile_only --mesh=data:16,model:16 --n_layers=32 --d_model=4096 --n_heads=32 \
      --d_mlp=16384 --n_ctx=1024 --batch_size=256 --precision=bfloat16

The defaults (a 2-layer, d_model=64 transformer on the built-in corpus, 300 steps) take well
under a minute on two CPU cores. The run folder's layout is described in `interp.train.lm`.
A SIGTERM (preemption notice) saves a checkpoint at the next step and exits with status 0,
printing "preempted at step N"; a SIGKILL loses at most the steps since the last checkpoint.
Either way, the same command resumes the run. `--compile_only` lowers and compiles the step for
the mesh and prints per-device memory without running anything (`interp.train.compile_only`).
`--precision` is the compute dtype (`interp.precision`): the default `auto` is float32 on CPU and
bfloat16 on GPU/TPU; parameters, optimizer state, loss and metrics are float32 either way.
"""

from __future__ import annotations

from absl import app, flags

from interp import config_flags
from interp import usage
from interp.data import tokenize_bytes
from interp.models import config as model_config
from interp.train import cli, compile_only, lm

_RUN = config_flags.define(lm.TrainLMConfig, skip=("model",), meta={"workdir": {"default": None, "help": (
    "Run folder; rerun with the same one to resume (required unless --compile_only).")}})
# The model: attn_only's knobs, with this binary's defaults (a 2-layer, d_model=64 toy).
_MODEL = config_flags.define(
    model_config.TransformerConfig,
    only=("n_layers", "d_model", "n_heads", "n_ctx", "d_mlp", "norm", "positional"),
    defaults={"n_layers": 2, "d_model": 64, "n_heads": 4, "n_ctx": 64, "d_mlp": 256,
              "norm": "layernorm", "positional": "learned"})
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Lower and compile the step for --mesh, "
                                  "print per-device memory, and exit without training.")
_DEVICE_GB = flags.DEFINE_float("device_memory_gb", compile_only.TPU_V5P_HBM_GB,
                                "Per-device memory the --compile_only report compares against "
                                "(default: a TPU v5p chip's HBM).")


def config_from_flags() -> lm.TrainLMConfig:
  """The flags as a frozen TrainLMConfig (library code never reads FLAGS)."""
  shape = _MODEL.kwargs()
  if shape["n_heads"] <= 0 or shape["d_model"] % shape["n_heads"]:
    raise app.UsageError(f"--d_model={shape['d_model']} must be a multiple of "
                         f"--n_heads={shape['n_heads']}")
  try:
    model = model_config.attn_only(vocab_size=tokenize_bytes.VOCAB_SIZE, **shape)
  except ValueError as e:  # a bad flag value: say which, without a traceback
    raise app.UsageError(str(e)) from e
  return _RUN.build(run={"workdir": _RUN["workdir"] or ""}, model=model)


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
  usage.run(main)
