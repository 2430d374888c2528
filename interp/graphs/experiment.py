"""One attribution-graph experiment: model + transcoder (loaded or trained) + prompt -> files.

The library behind `experiments/attribution_graph.py`. The run folder (`workdir`) holds:
  transcoder/     the transcoder's own run folder (`interp.sae.transcoder_train`) when trained
                  here; a rerun reuses it (a finished run resumes at its last step)
  graph.json      the pruned graph (`interp.attribution_graph/1`, `GraphConfig` thresholds)
  graph.html      the self-contained viewer page (a `graph.state.json` saved from it beside it
                  is embedded when the page is rewritten)
  dashboard.html  the transcoder's feature dashboards over the context corpus: every layer's
                  `DASHBOARD_LATENTS` densest latents and the graph's features (their nodes
                  link to them), one page with a layer selector (`dashboard.json` its data)
  results.json    scores, node/edge counts before and after pruning (stored and default
                  thresholds), steering agreement, timings
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from interp import choices, jsonio
from interp.data import tokenized
from interp.graphs import attribute, export, heads, validate
from interp.graphs import prune as graph_prune
from interp.models import zoo
from interp.parallel import mesh as mesh_lib
from interp.precision import Precision
from interp.sae import evaluate as eval_lib
from interp.sae import train as sae_train
from interp.sae import transcoder as tc
from interp.sae import transcoder_eval
from interp.sae import transcoder_train
from interp.train import run_folder
from interp.train.optim import OptimizerConfig
from interp.viz import dashboard_html, graph_html

# Latents per layer on the dashboard page (densest first): enough to browse, while a page for
# every layer of Gemma stays a few megabytes.
DASHBOARD_LATENTS = 16


@dataclasses.dataclass(frozen=True)
class GraphRunConfig:
  """Attributes:
    model: gemma3_270m | gpt2:DIR | toy:RUN (`interp.models.zoo`).
    prompt: the text whose next token the graph explains.
    workdir: the run folder. transcoder_dir: load a transcoder run folder from here ("" =
      train one into workdir/transcoder).
    transcoder: the dictionary to train; num_steps, batch_size, context_length, lr (Adam's
      peak rate after a warmup of num_steps / 5, at most 50 steps): its training.
    hold_bos: hold the BOS position's MLP outputs constant when the tokenizer prepends one
      (`GraphConfig.held_positions` at least 1): circuit-tracer's convention, under which
      its replacement and completeness scores are defined; the BOS residual is the same for
      every prompt, and transcoders trained without BOS rows (`drop_bos`) do not model it.
    buffer_reuse: times each harvested activation is served (reshuffled each time): the
      model's forward runs 1 / buffer_reuse as often (`interp.sae.store.ActivationStore`).
    graph: sizes and stored thresholds.
    n_steer, steer_factor: features steered in the real model for the agreement check.
    context_sequences, context_length: corpus windows scanned for feature contexts.
    mesh: the mesh (targets split over `data`).
  """

  model: str = "gemma3_270m"
  prompt: str = "The capital of Texas is"
  workdir: str = ""
  transcoder_dir: str = ""
  transcoder: tc.TranscoderConfig | None = None
  num_steps: int = 500
  batch_size: int = 1024
  context_length: int = 64
  lr: float = 1e-3
  buffer_reuse: int = 1
  hold_bos: bool = True
  graph: attribute.GraphConfig = attribute.GraphConfig()
  n_steer: int = 5
  steer_factor: float = 0.0
  context_sequences: int = 64
  mesh: str = mesh_lib.DEFAULT_MESH

  def __post_init__(self):
    choices.numbers(self, positive=("num_steps", "batch_size", "context_length",
                                    "context_sequences", "lr", "buffer_reuse"),
                    non_negative=("n_steer",), finite=("steer_factor",))
    zoo.ModelSpec.parse(self.model)


def load_transcoder(folder: str) -> tuple[tc.TranscoderConfig, dict]:
  """A trained transcoder (scales folded) from its run folder."""
  cfg = tc.TranscoderConfig.from_dict(
      jsonio.read_json(os.path.join(folder, "transcoder_config.json")))
  _, state, _ = zoo.read_latest(os.path.join(folder, "checkpoints"))
  return cfg, tc.fold_scales(cfg, {k: jax.numpy.asarray(v) for k, v in state["params"].items()})


def _tokens(model, text: str) -> np.ndarray:
  if model.tokenizer is None:  # byte-level toys
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
  ids = tokenized.encode(model.tokenizer, text)
  bos = tokenized.bos_id(model.tokenizer)
  return np.concatenate([[bos], ids]).astype(np.int32) if bos is not None else ids


def _decoder(model):
  if model.tokenizer is None:
    return lambda t: bytes([t]).decode("utf-8", "replace") if t < 256 else f"<{t}>"
  if hasattr(model.tokenizer, "id_to_piece"):
    return lambda t: model.tokenizer.id_to_piece(t).replace("\u2581", " ")
  return lambda t: model.tokenizer.decode([t])


def _write_dashboard(cfg, params, tc_cfg, tc_params, corpus, decode, model: str,
                     folder: str, keys=()) -> str:
  """Writes the transcoder's dashboard data and page into `folder`; returns the page. The
  graph's features (`keys`: (layer, feature)) get dashboards too, which their nodes link to."""
  eval_cfg = eval_lib.EvalConfig(batch_size=min(8, len(corpus)),
                                 dashboard_latents=DASHBOARD_LATENTS)
  latents = transcoder_eval.dashboards(cfg, params, tc_cfg, tc_params, corpus, eval_cfg,
                                       lambda ids: "".join(decode(int(t)) for t in ids),
                                       include=keys)
  data = {"site": "MLP (transcoder)", "transcoder": tc_cfg.to_dict(),
          "n_sequences": int(len(corpus)), "context_length": int(corpus.shape[1]),
          "latents": latents}
  jsonio.write_json_atomic(os.path.join(folder, "dashboard.json"), data, indent=None)
  return dashboard_html.write_dashboard_html(
      data, os.path.join(folder, "dashboard.html"),
      f"{tc_cfg.kind.value.upper()} transcoder feature dashboard ({model})")


def train_transcoders(config: GraphRunConfig, model: zoo.Model, folder: str, mesh=None,
                      source=None, params=None) -> tuple[tc.TranscoderConfig, dict, dict]:
  """Trains (or resumes, or reuses when finished) `config`'s transcoders into the run folder
  `folder` on `model`'s activations over the built-in corpus; `mesh`, `source` and `params`
  (the model's, on device) are made from `config` and `model` when not given.

  Returns:
    (config, params with scales folded, on the host, training results).
  """
  cfg = model.cfg
  params = jax.tree.map(jax.numpy.asarray, model.params) if params is None else params
  if mesh is None:
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(config.mesh))
  if source is None:
    source = tokenized.make_source("corpus", model.tokenizer, cfg.vocab_size)
  tc_cfg = config.transcoder or tc.TranscoderConfig(n_layers=cfg.n_layers, d_model=cfg.d_model)
  store = transcoder_train.transcoder_store(
      cfg, params, mesh, source, batch_size=config.batch_size,
      context_length=config.context_length, model_name=model.name, reuse=config.buffer_reuse)
  run = sae_train.DEFAULT_RUN.replace(
      workdir=folder, mesh=config.mesh, num_steps=config.num_steps,
      optimizer=OptimizerConfig(lr=config.lr, warmup_steps=min(50, config.num_steps // 5),
                                grad_clip=0.0))
  # The transcoders train under the graph's policy too (`--precision`), so one flag sets the
  # whole run's compute dtype.
  train_cfg = transcoder_train.TrainTranscoderConfig(
      transcoder=tc_cfg, run=run, batch_size=config.batch_size,
      init_sample=min(1024, 4 * config.batch_size), precision=config.graph.precision)
  results, tc_params = transcoder_train.train_transcoder(train_cfg, store, mesh)
  return tc_cfg, jax.device_get(tc_params), results


def run(config: GraphRunConfig, model: zoo.Model | None = None) -> dict:
  """Loads or trains the transcoder, builds, prunes, checks and writes the graph.

  Args:
    config: the run.
    model: `config.model` already loaded (a binary that needed its shape first); None loads it.
  Returns:
    The results dict (also written to workdir/results.json).
  """
  os.makedirs(config.workdir, exist_ok=True)
  t_start = time.perf_counter()
  model = model or zoo.load(zoo.ModelSpec.parse(config.model))
  cfg, params = model.cfg, jax.tree.map(jax.numpy.asarray, model.params)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(config.mesh))
  source = tokenized.make_source("corpus", model.tokenizer, cfg.vocab_size)
  tc_dir = config.transcoder_dir or os.path.join(config.workdir, "transcoder")
  train_results = None
  if config.transcoder_dir:
    tc_cfg, tc_params = load_transcoder(tc_dir)
  else:
    tc_cfg, tc_params, train_results = train_transcoders(config, model, tc_dir, mesh, source,
                                                         params)
  tokens = _tokens(model, config.prompt)
  g = config.graph
  if config.hold_bos and model.tokenizer is not None and \
      tokenized.bos_id(model.tokenizer) is not None:
    g = dataclasses.replace(g, held_positions=max(g.held_positions, 1))
  t0 = time.perf_counter()
  graph = attribute.build(cfg, params, tc_cfg, tc_params, tokens, g, mesh)
  build_s = time.perf_counter() - t0
  scores = graph_prune.scores(graph.adjacency, graph.layout, graph.probs)
  stored = graph_prune.prune(graph.adjacency, graph.layout, graph.probs, g.node_threshold,
                             g.edge_threshold)
  default = graph_prune.prune(graph.adjacency, graph.layout, graph.probs)
  feats = validate.top_features(graph, config.n_steer)
  pred = validate.predicted_effects(graph, feats, config.steer_factor)
  obs = validate.observed_effects(cfg, params, tc_cfg, tc_params, graph, feats,
                                  config.steer_factor)
  decode = _decoder(model)
  info = attribute.feature_info(graph)
  keys = sorted({(int(info["layer"][i]), int(info["feature"][i]))
                 for i in np.nonzero(stored.node_mask[:graph.layout.n_features])[0]})
  corpus = source.batch(12345, 0, config.context_sequences, config.context_length)
  t0 = time.perf_counter()
  contexts = export.feature_contexts(cfg, params, tc_cfg, tc_params, corpus, keys, decode)
  contexts_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  node_heads = heads.node_heads(cfg, params, tc_cfg, tc_params, graph, stored, g.head_nodes)
  heads_s = time.perf_counter() - t0
  out = export.to_json(
      graph, stored, [decode(int(t)) for t in tokens], [decode(int(t)) for t in
                                                        graph.logit_tokens],
      prompt=config.prompt, model=model.name, transcoder=f"{tc_cfg.kind.value} {tc_dir}",
      # The viewer opens at circuit-tracer's default cut; the file keeps nodes and edges up to
      # the stored (looser) thresholds so its sliders can widen the view.
      scores=scores, thresholds={"node": 0.8, "edge": 0.98},
      contexts=contexts, heads=node_heads)
  # Error nodes carry the norm of the residual error they stand for (the viewer labels them).
  norms = np.linalg.norm(np.asarray(graph.rep.error, np.float32), axis=-1)   # [L p]
  for node in out["nodes"]:
    if node["kind"] == "error":
      node["norm"] = round(float(norms[node["layer"], node["pos"]]), 4)
  for node in out["nodes"]:  # each feature's page: dashboard.html, written below
    if node["kind"] == "feature":
      node["dashboard_url"] = dashboard_html.anchor("dashboard.html", node["layer"],
                                                    node["feature"])
  graph_html.save_graph_json(out, os.path.join(config.workdir, "graph.json"))
  graph_html.write_graph_html(out, os.path.join(config.workdir, "graph.html"))
  t0 = time.perf_counter()
  _write_dashboard(cfg, params, tc_cfg, tc_params, corpus, decode, config.model,
                   config.workdir, keys)
  dashboard_s = time.perf_counter() - t0
  count = lambda pr: {"nodes": int(pr.node_mask.sum()), "edges": int(pr.edge_mask.sum())}
  results = {
      "prompt": config.prompt, "tokens": len(tokens), "scores": scores,
      "held_positions": g.held_positions,
      # What `auto` became here: the graph's forwards and backwards and the transcoders'
      # training ran in this dtype (the steering check and feature contexts run in float32).
      "precision": Precision.parse(config.graph.precision).name,
      "unpruned": {"nodes": graph.layout.n, "edges": int(np.count_nonzero(graph.adjacency)),
                   "active_features": int(len(graph.active["act"])),
                   "feature_nodes": graph.layout.n_features},
      "head_nodes": len(node_heads),
      "pruned_stored": count(stored), "pruned_default": count(default),
      "logits": [{"token": decode(int(t)), "prob": float(p)}
                 for t, p in zip(graph.logit_tokens, graph.probs)],
      "steering": {"factor": config.steer_factor,
                   **validate.agreement(pred, obs)},
      "timings": {**{k: round(v, 3) for k, v in graph.timings.items()},
                  "build_s": round(build_s, 3), "contexts_s": round(contexts_s, 3),
                  "dashboard_s": round(dashboard_s, 3), "heads_s": round(heads_s, 3),
                  "wall_s": round(time.perf_counter() - t_start, 3)},
      "transcoder": tc_cfg.to_dict(),
      "transcoder_training": None if train_results is None else train_results.get("final")}
  run_folder.write_json(config.workdir, "results.json", results)
  return results
