r"""Attribution-graph construction cost: wall time and peak memory against prompt length.

  python experiments/bench_graph.py --out=runs/bench_graph.json                 # Gemma 3 270M
  python experiments/bench_graph.py --lengths=32,128 --max_feature_nodes=512 --out=/tmp/b.json
  python experiments/bench_graph.py --max_tokens --memory_cap_gb=24 --out=runs/graph_probe.json
  python experiments/bench_graph.py --model=toy:runs/lm2 --lengths=16,32 --d_latent=256 --k=8

The transcoder is randomly initialised TopK (`--d_latent`, `--k`): construction cost depends on
the weights only through how many features are active, and TopK fixes that at k per layer and
token (L * p * k sources), so a random dictionary costs what a trained one of the same k does.
Rows are computed for the logits and for at most `--max_feature_nodes` features (greedy by
influence beyond that), each a VJP through the frozen model: time ~ rows x p; memory ~ one chunk
of [chunk, L, p, d] gradients + the [rows, sources] edge matrix. Each length runs in a fresh
worker process (`interp.bench.measure.run_worker`) for its own peak RSS (and the device's peak
bytes where JAX reports them). `--max_tokens` doubles the length from 64 until a build fails,
times out or its peak RSS passes `--memory_cap_gb`: the last that passed is the longest prompt
that fits a machine of that size.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

from interp.bench import measure

_MODEL = flags.DEFINE_string("model", "gemma3_270m", "gemma3_270m | gpt2:DIR | toy:RUN")
_LENGTHS = flags.DEFINE_list("lengths", ["32", "128", "512"], "Prompt lengths (tokens).")
_D_LATENT = flags.DEFINE_integer("d_latent", 4096, "Transcoder latents per layer.")
_K = flags.DEFINE_integer("k", 16, "Active latents per layer and token.")
_MAX_FEATS = flags.DEFINE_integer("max_feature_nodes", 1024, "Feature rows at most.")
_CHUNK = flags.DEFINE_integer("chunk", 16, "Targets per batched VJP.")
_MAX_TOKENS = flags.DEFINE_bool("max_tokens", False, "Probe the longest prompt that fits.")
_CAP_GB = flags.DEFINE_float("memory_cap_gb", 24.0, "Memory cap for --max_tokens.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 3600.0, "Per-length worker timeout.")
_OUT = flags.DEFINE_string("out", "runs/bench_graph.json", "Output JSON.")
_WORKER_LEN = flags.DEFINE_integer("worker_length", 0, "(internal) run one length.")
_WORKER_OUT = flags.DEFINE_string("worker_out", "", "(internal) worker result file.")


def worker(length: int) -> dict:
  """Builds one graph of a `length`-token corpus prompt; returns timings and memory."""
  import jax
  import numpy as np
  from interp.graphs import attribute
  from interp.data import tokenized
  from interp.sae import experiment
  from interp.sae import transcoder as tc
  measure.reset_peak()
  model = experiment.load_model(_MODEL.value)
  cfg, params = model.cfg, jax.tree.map(jax.numpy.asarray, model.params)
  tc_cfg = tc.TranscoderConfig(n_layers=cfg.n_layers, d_model=cfg.d_model,
                               d_latent=_D_LATENT.value, k=_K.value)
  tc_params = tc.init(tc_cfg, jax.random.key(0))
  source = tokenized.make_source("corpus", model.tokenizer, cfg.vocab_size)
  tokens = np.asarray(source.batch(0, 0, 1, length)[0])
  config = attribute.GraphConfig(max_feature_nodes=_MAX_FEATS.value, chunk=_CHUNK.value)
  loaded_rss = measure.rss()
  t0 = time.perf_counter()
  graph = attribute.build(cfg, params, tc_cfg, tc_params, tokens, config)
  first = time.perf_counter() - t0
  stats = jax.devices()[0].memory_stats() or {}
  return {"tokens": length, "first_build_s": round(first, 3), "timings": graph.timings,
          "active_features": int(len(graph.active["act"])),
          "feature_rows": graph.layout.n_features, "logit_rows": graph.layout.n_logits,
          "nodes": graph.layout.n, "peak_rss_gb": measure.peak() / 2**30,
          "rss_after_load_gb": loaded_rss / 2**30,
          "device_peak_gb": stats.get("peak_bytes_in_use", 0) / 2**30,
          "device": str(jax.devices()[0].device_kind)}


def _one(length: int) -> dict:
  args = [f"--model={_MODEL.value}", f"--d_latent={_D_LATENT.value}", f"--k={_K.value}",
          f"--max_feature_nodes={_MAX_FEATS.value}", f"--chunk={_CHUNK.value}",
          f"--worker_length={length}"]
  try:
    return measure.run_worker(__file__, args, timeout=_TIMEOUT.value)
  except Exception as e:  # a failed or killed build is a data point, not a crash
    return {"tokens": length, "error": f"{type(e).__name__}: {e}"}


def main(argv):
  del argv
  if _WORKER_LEN.value:
    with open(_WORKER_OUT.value, "w") as f:
      json.dump(worker(_WORKER_LEN.value), f)
    return
  rows = []
  if _MAX_TOKENS.value:
    length, fits = 64, None
    while True:
      row = _one(length)
      rows.append(row)
      print(json.dumps(row), flush=True)
      if "error" in row or row["peak_rss_gb"] > _CAP_GB.value:
        break
      fits, length = length, 2 * length
    result = {"probe": rows, "memory_cap_gb": _CAP_GB.value, "longest_fitting": fits}
  else:
    for length in (int(x) for x in _LENGTHS.value):
      rows.append(_one(length))
      print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows}
  result.update(model=_MODEL.value, d_latent=_D_LATENT.value, k=_K.value,
                max_feature_nodes=_MAX_FEATS.value, chunk=_CHUNK.value,
                machine=measure.machine(), argv=sys.argv)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
