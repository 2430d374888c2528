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
      --mesh=data:8,model:32 --activation=relu --decoder_norm=weighted --precision=bfloat16

`--precision` is the compute dtype of the encoder and decoder products (`interp.precision`): the
default `auto` is float32 on CPU and bfloat16 on GPU/TPU; parameters, Adam's moments,
pre-activations, losses and metrics are float32 either way, and results.json records it.
`--compile_only` names the precision it compiled (pass `--precision=bfloat16` to plan an
accelerator run from a CPU).

Outputs (metrics, checkpoints, results.json, eval.json, dashboard.json, dashboard.html,
density.png, saelens/) are described in `interp.sae.experiment`; the rules and their flags in
`interp.sae.config`.
"""

from __future__ import annotations

from absl import app, flags

from interp import choices
from interp import config_flags
from interp import usage
from interp.sae import evaluate as eval_lib
from interp.sae import experiment
from interp.sae import train as sae_train
from interp.sae.config import DeadMitigation
from interp.train import cli, compile_only

_SOURCE = config_flags.define(experiment.SourceConfig)
_EVAL = config_flags.define(eval_lib.EvalConfig, only=("eval_batch_size",), defaults={
    "eval_batch_size": 8}, meta={"batch_size": {"flag": "eval_batch_size"}})
# d_in, d_sae and dead_mitigation are derived below; the rest are SAEConfig's fields.
_TRAIN = config_flags.define(
    sae_train.TrainSAEConfig, skip=("d_in", "d_sae", "dead_mitigation"),
    defaults={"activation": "topk", "checkpoint_every": 200, "keep_checkpoints": 2},
    meta={"workdir": {"default": None}})
_D_SAE = flags.DEFINE_integer("d_sae", 0, "Latents (0: --expansion x the input width).")
_EXPANSION = flags.DEFINE_integer("expansion", 8, "Latents per input dimension.")
_DEAD = flags.DEFINE_enum("dead_mitigation", "auto", ["auto"] + [d.value for d in DeadMitigation],
                          "auto: auxk for topk/batchtopk, none otherwise.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Compile the step for --mesh, print "
                                  "per-device memory, exit.")
_DEVICE_GB = flags.DEFINE_float("device_memory_gb", compile_only.TPU_V5P_HBM_GB,
                                "Per-device memory for the --compile_only report.")


def configs_from_flags(d_in: int | None = None):
  """(TrainSAEConfig, SourceConfig) from the flags; d_in None = read from the source later."""
  src = _SOURCE.build()
  try:
    d_in = d_in or (src.planted_d if src.source == "planted" else experiment.site_width(src))
  except ValueError as e:  # a bad --hook or --source: say which, without a traceback
    raise app.UsageError(str(e)) from e
  try:  # d_sae = 0 means "from --expansion"; name the flag the user set, not the derived width
    choices.check_int("d_sae", _D_SAE.value, minimum=0)
    if not _D_SAE.value:
      choices.check_int("expansion", _EXPANSION.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  dead = _DEAD.value
  if dead == "auto":
    dead = "auxk" if _TRAIN["activation"] in ("topk", "batchtopk") else "none"
  config = _TRAIN.build(run={"workdir": _TRAIN["workdir"] or ""}, sae={
      "d_in": d_in, "d_sae": _D_SAE.value or _EXPANSION.value * d_in, "dead_mitigation": dead})
  return config, src


def main(argv):
  cli.start(argv)
  config, src = configs_from_flags()
  if _COMPILE_ONLY.value:
    report = sae_train.compile_only(config, _DEVICE_GB.value, cli.capacity_name(_DEVICE_GB.value))
    print(report.format())
    return
  if not config.run.workdir:
    raise app.UsageError("--workdir is required (unless --compile_only)")
  results = experiment.run(config, src, _EVAL.build())
  print(f"{results['status']} at step {results['step']}: {results.get('summary')}")


if __name__ == "__main__":
  usage.run(main)
