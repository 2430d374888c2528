"""Attribution graph of one prompt: which transcoder features carry the model to its next token.

  # Gemma 3 270M with a transcoder trained here first (a few minutes on CPU at these sizes):
  python experiments/attribution_graph.py --workdir=runs/graph_gemma \
      --prompt="The capital of Texas is" --kind=plt --d_latent=4096 --k=32 --num_steps=500
  # Reuse a trained transcoder run folder (its transcoder_config.json + checkpoints/):
  python experiments/attribution_graph.py --workdir=runs/graph2 \
      --transcoder_dir=runs/graph_gemma/transcoder --prompt="Fact: Dallas is in the state of"
  # A byte-level toy from `experiments/train_lm.py`:
  python experiments/attribution_graph.py --model=toy:runs/lm --workdir=runs/graph_toy \
      --d_latent=512 --k=8 --num_steps=300 --batch_size=512 --prompt="the cat sat on the"

Writes graph.json, graph.html, dashboard.html (the transcoder's features) and results.json
(`interp.graphs.experiment`). `--precision` (default auto: float32 on CPU, bfloat16 on GPU/TPU)
is the forwards' and backwards' compute dtype; edge weights are float32 either way.
"""

from __future__ import annotations

from absl import app

from interp import config_flags
from interp import usage
from interp.graphs import experiment as graph_experiment
from interp.models import zoo
from interp.train import cli

# The transcoder's n_layers and d_model are the model's.
_CONFIG = config_flags.define(graph_experiment.GraphRunConfig, skip=("n_layers", "d_model"),
                              defaults={"workdir": None, "d_latent": 2048,
                                        "precision": "auto"})


def main(argv):
  cli.start(argv)
  if not _CONFIG["workdir"]:
    raise app.UsageError("--workdir is required")
  try:
    spec = zoo.ModelSpec.parse(_CONFIG["model"])
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  model = zoo.load(spec)  # once: its shape sizes the transcoder, then the run uses it
  config = _CONFIG.build(transcoder={"n_layers": model.cfg.n_layers,
                                     "d_model": model.cfg.d_model})
  results = graph_experiment.run(config, model)
  print(f"scores {results['scores']}; nodes {results['unpruned']['nodes']} -> "
        f"{results['pruned_default']['nodes']} (0.8/0.98); steering agreement "
        f"r={results['steering']['correlation']:.3f}; {results['timings']}")


if __name__ == "__main__":
  usage.run(main)
