r"""Attribution-graph construction cost: wall time and peak memory against prompt length.

  python experiments/bench_graph.py --out=runs/bench_graph.json                 # Gemma 3 270M
  python experiments/bench_graph.py --lengths=32,128 --max_feature_nodes=512 --out=/tmp/b.json
  python experiments/bench_graph.py --max_tokens --memory_cap_gb=24 --out=runs/graph_probe.json
  python experiments/bench_graph.py --model=toy:runs/lm2 --lengths=16,32 --d_latent=256 --k=8
  python experiments/bench_graph.py --quick --out=/tmp/b.json                    # smoke sizes

What is measured (a random TopK transcoder's graph per prompt length, each length in a fresh
worker process for its own peak RSS) is described in `interp.bench.graph`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from interp import usage
from interp.bench import graph, harness
from interp.models import zoo

_MODEL = flags.DEFINE_string("model", "gemma3_270m", zoo.SPECS)
_LENGTHS = flags.DEFINE_list("lengths", ["32", "128", "512"], "Prompt lengths (tokens).")
_D_LATENT = flags.DEFINE_integer("d_latent", 4096, "Transcoder latents per layer.")
_K = flags.DEFINE_integer("k", 16, "Active latents per layer and token.")
_MAX_FEATS = flags.DEFINE_integer("max_feature_nodes", 1024, "Feature rows at most.")
_CHUNK = flags.DEFINE_integer("chunk", 16, "Targets per batched VJP.")
_MAX_TOKENS = flags.DEFINE_bool("max_tokens", False, "Probe the longest prompt that fits.")
_CAP_GB = flags.DEFINE_float("memory_cap_gb", 24.0, "Memory cap for --max_tokens.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 3600.0, "Per-length worker timeout.")
_OUT = flags.DEFINE_string("out", "runs/bench_graph.json", "Output JSON.")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke test: QUICK's tiny sizes, replacing those "
                           "flags (the model stays --model).")

# --quick's sizes: one short prompt and a small transcoder.
QUICK = dict(lengths=["8"], d_latent=32, k=2, max_feature_nodes=8, chunk=4, max_tokens=False)


def config_from_flags() -> graph.GraphBenchConfig:
  if _QUICK.value:
    for name, value in QUICK.items():
      setattr(flags.FLAGS, name, value)
  try:
    zoo.ModelSpec.parse(_MODEL.value, flag="model")
    lengths = tuple(int(x) for x in _LENGTHS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  return graph.GraphBenchConfig(
      model=_MODEL.value, lengths=lengths, d_latent=_D_LATENT.value, k=_K.value,
      max_feature_nodes=_MAX_FEATS.value, chunk=_CHUNK.value, max_tokens=_MAX_TOKENS.value,
      memory_cap_gb=_CAP_GB.value, timeout_s=_TIMEOUT.value, out=_OUT.value)


def main(argv):
  del argv
  cfg = config_from_flags()
  harness.write_report(cfg.out, graph.run(cfg, sys.argv))


if __name__ == "__main__":
  usage.run(main)
