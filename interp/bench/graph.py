"""Attribution-graph construction cost: wall time and peak memory against prompt length.

The transcoder is randomly initialised TopK (`d_latent`, `k`): construction cost depends on the
weights only through how many features are active, and TopK fixes that at k per layer and token
(L * p * k sources), so a random dictionary costs what a trained one of the same k does. Rows
are computed for the logits and for at most `max_feature_nodes` features (greedy by influence
beyond that), each a VJP through the frozen model: time ~ rows x p; memory ~ one chunk of
[chunk, L, p, d] gradients + the [rows, sources] edge matrix.

Each length builds in a fresh worker (side `build`) for its own peak RSS (and the device's peak
bytes where JAX reports them); a failed or killed build is a row with an `error`, not a crash.
`max_tokens` doubles the length from 64 until a build fails, times out or its peak RSS passes
`memory_cap_gb`: the last that passed is the longest prompt that fits a machine of that size.
Run by `experiments/bench_graph.py`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Sequence

from interp.bench import harness, measure


@dataclasses.dataclass(frozen=True)
class GraphBenchConfig:
  """One benchmark run. `model`: a `zoo.ModelSpec` text (gemma3_270m | gpt2:DIR | toy:RUN);
  `timeout_s` per worker."""
  model: str
  lengths: tuple[int, ...]
  d_latent: int
  k: int
  max_feature_nodes: int
  chunk: int
  max_tokens: bool
  memory_cap_gb: float
  timeout_s: float
  out: str


CONFIG = GraphBenchConfig  # what `harness.worker_main` decodes


def build_one(cfg: GraphBenchConfig, length: int) -> dict:
  """Builds one graph of a `length`-token corpus prompt in this process; timings and memory."""
  import jax
  import numpy as np
  from interp.data import tokenized
  from interp.graphs import attribute
  from interp.models import zoo
  from interp.sae import transcoder as tc
  measure.reset_peak()
  model = zoo.load(zoo.ModelSpec.parse(cfg.model))
  mcfg, params = model.cfg, jax.tree.map(jax.numpy.asarray, model.params)
  tc_cfg = tc.TranscoderConfig(n_layers=mcfg.n_layers, d_model=mcfg.d_model,
                               d_latent=cfg.d_latent, k=cfg.k)
  tc_params = tc.init(tc_cfg, jax.random.key(0))
  source = tokenized.make_source("corpus", model.tokenizer, mcfg.vocab_size)
  tokens = np.asarray(source.batch(0, 0, 1, length)[0])
  config = attribute.GraphConfig(max_feature_nodes=cfg.max_feature_nodes, chunk=cfg.chunk)
  loaded_rss = measure.rss()
  t0 = time.perf_counter()
  graph = attribute.build(mcfg, params, tc_cfg, tc_params, tokens, config)
  first = time.perf_counter() - t0
  stats = jax.devices()[0].memory_stats() or {}
  return {"tokens": length, "first_build_s": round(first, 3), "timings": graph.timings,
          "active_features": int(len(graph.active["act"])),
          "feature_rows": graph.layout.n_features, "logit_rows": graph.layout.n_logits,
          "nodes": graph.layout.n, "peak_rss_gb": measure.peak() / 2**30,
          "rss_after_load_gb": loaded_rss / 2**30,
          "device_peak_gb": stats.get("peak_bytes_in_use", 0) / 2**30,
          "device": str(jax.devices()[0].device_kind)}


def worker(side: str, cfg: GraphBenchConfig) -> dict:
  """The one worker side, `build`: the graph of the single length in `cfg.lengths`."""
  if side != "build" or len(cfg.lengths) != 1:
    raise ValueError(f"a worker builds one length (side 'build'), got {side!r}, {cfg.lengths}")
  return build_one(cfg, cfg.lengths[0])


def measure_length(cfg: GraphBenchConfig, length: int) -> dict:
  """One length in a fresh worker; a failed or killed build comes back as a row with `error`."""
  try:
    return harness.spawn(__name__, "build", dataclasses.replace(cfg, lengths=(length,)),
                         timeout=cfg.timeout_s)
  except Exception as e:  # a failed or killed build is a data point, not a crash
    return {"tokens": length, "error": f"{type(e).__name__}: {e}"}


def run(cfg: GraphBenchConfig, argv: Sequence[str] = ()) -> dict:
  """Every length (or the doubling probe), a row printed as each finishes; the JSON report.

  Args:
    cfg: the run.
    argv: the command line, recorded in the report.

  Returns:
    {"rows": [...]} (or the probe's {"probe", "memory_cap_gb", "longest_fitting"}) with the
    config and the machine.
  """
  rows = []
  if cfg.max_tokens:
    length, fits = 64, None
    while True:
      row = measure_length(cfg, length)
      rows.append(row)
      print(json.dumps(row), flush=True)
      if "error" in row or row["peak_rss_gb"] > cfg.memory_cap_gb:
        break
      fits, length = length, 2 * length
    result = {"probe": rows, "memory_cap_gb": cfg.memory_cap_gb, "longest_fitting": fits}
  else:
    for length in cfg.lengths:
      rows.append(measure_length(cfg, length))
      print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows}
  result.update(model=cfg.model, d_latent=cfg.d_latent, k=cfg.k,
                max_feature_nodes=cfg.max_feature_nodes, chunk=cfg.chunk,
                machine=measure.machine(), argv=list(argv))
  return result


if __name__ == "__main__":
  harness.worker_main("interp.bench.graph")
