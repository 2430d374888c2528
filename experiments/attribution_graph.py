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

Writes graph.json, graph.html and results.json (`interp.graphs.experiment`).
"""

from __future__ import annotations

from absl import app, flags

from interp.graphs import attribute
from interp.graphs import experiment as graph_experiment
from interp.models import zoo
from interp.sae import transcoder as tc
from interp.train import cli

_MODEL = flags.DEFINE_string("model", "gemma3_270m", "gemma3_270m | gpt2:DIR | toy:RUN")
_PROMPT = flags.DEFINE_string("prompt", "The capital of Texas is", "Text to explain.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.")
_TC_DIR = flags.DEFINE_string("transcoder_dir", "", "Load this transcoder run folder "
                              "('' = train one into WORKDIR/transcoder).")
_MESH = flags.DEFINE_string("mesh", "data:-1,model:1", "Mesh; targets split over `data`.")
# The transcoder, when trained here.
_KIND = flags.DEFINE_enum("kind", "plt", [k.value for k in tc.Kind], "Transcoder kind.")
_ACT = flags.DEFINE_enum("activation", "topk", [a.value for a in tc.TranscoderActivation],
                         "Activation rule.")
_D_LATENT = flags.DEFINE_integer("d_latent", 2048, "Latents per layer.")
_K = flags.DEFINE_integer("k", 16, "Latents per layer and token (topk).")
_STEPS = flags.DEFINE_integer("num_steps", 500, "Training steps.")
_BATCH = flags.DEFINE_integer("batch_size", 1024, "Tokens per training step.")
_CTX = flags.DEFINE_integer("context_length", 64, "Tokens per corpus window.")
# The graph.
_MAX_LOGITS = flags.DEFINE_integer("max_logits", 10, "Logit nodes at most.")
_LOGIT_MASS = flags.DEFINE_float("logit_mass", 0.95, "Probability mass the logit nodes cover.")
_MAX_FEATS = flags.DEFINE_integer("max_feature_nodes", 4096, "Feature nodes at most.")
_CHUNK = flags.DEFINE_integer("chunk", 16, "Targets per batched VJP.")
_NODE_T = flags.DEFINE_float("node_threshold", 0.95, "Stored node pruning share.")
_EDGE_T = flags.DEFINE_float("edge_threshold", 0.99, "Stored edge pruning share.")
_N_STEER = flags.DEFINE_integer("n_steer", 5, "Features steered for the agreement check.")
_FACTOR = flags.DEFINE_float("steer_factor", 0.0, "Steered activation factor (0 = off).")
_CONTEXTS = flags.DEFINE_integer("context_sequences", 64, "Corpus windows for contexts.")


def config_from_flags(n_layers: int, d_model: int) -> graph_experiment.GraphRunConfig:
  try:
    transcoder = tc.TranscoderConfig(kind=_KIND.value, n_layers=n_layers, d_model=d_model,
                                     d_latent=_D_LATENT.value, activation=_ACT.value, k=_K.value)
    graph = attribute.GraphConfig(max_logits=_MAX_LOGITS.value, logit_mass=_LOGIT_MASS.value,
                                  max_feature_nodes=_MAX_FEATS.value, chunk=_CHUNK.value,
                                  node_threshold=_NODE_T.value, edge_threshold=_EDGE_T.value)
    return graph_experiment.GraphRunConfig(
        model=_MODEL.value, prompt=_PROMPT.value, workdir=_WORKDIR.value,
        transcoder_dir=_TC_DIR.value, transcoder=transcoder, num_steps=_STEPS.value,
        batch_size=_BATCH.value, context_length=_CTX.value, graph=graph,
        n_steer=_N_STEER.value, steer_factor=_FACTOR.value,
        context_sequences=_CONTEXTS.value, mesh=_MESH.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  cli.start(argv)
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  try:
    spec = zoo.ModelSpec.parse(_MODEL.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  model = zoo.load(spec)  # once: its shape sizes the transcoder, then the run uses it
  config = config_from_flags(model.cfg.n_layers, model.cfg.d_model)
  results = graph_experiment.run(config, model)
  print(f"scores {results['scores']}; nodes {results['unpruned']['nodes']} -> "
        f"{results['pruned_default']['nodes']} (0.8/0.98); steering agreement "
        f"r={results['steering']['correlation']:.3f}; {results['timings']}")


if __name__ == "__main__":
  app.run(main)
