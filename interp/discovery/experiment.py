"""Circuit discovery over edges, end to end: the library behind `experiments/circuit_discovery.py`.

For a model (`interp.models.zoo` spec) and a task (`interp.discovery.tasks`) it
  scores     every edge (`interp.discovery.scores`: eap, eap_ig, eap_ig_inputs) for the chosen
             metric, patching from the corrupted run or its batch mean (`--ablation`);
  searches   a circuit (top_n, greedy growth from the logits, or ACDC pruning) and evaluates it
             with every other edge patched: the normalised metric (1 = clean, 0 = corrupted);
  curves     the normalised metric against edges kept (top-n by the ranking), one compiled call;
  checks     on induction tasks, whether the circuit holds a previous-token head -> induction
             head key edge (heads found by their attention scores, `interp.circuits.scores`);
  compares   with a hand-found head circuit (`--hand_heads`; for IOI on Gemma 3 270M by default
             the 16 heads `interp.ioi` finds by path patching, `GEMMA_IOI_HEADS`) turned into
             edges: every edge from embed, the MLPs and those heads into the MLPs, those heads'
             q/k/v and the logits; measured like the curve (every other edge patched).
Writes into `workdir`: flags.json, scores.npz (scores [n_up n_recv], node and receiver names),
circuit.json (its edges and scores), results.json (curve, timings, checks) and figures.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from interp import choices, jsonio
from interp import precision as precision_lib
from interp.circuits import scores as head_scores
from interp.data import tokenized
from interp.discovery import forward, graph as graph_lib, plots, scores, tasks
from interp.discovery import search as search_lib
from interp.models import zoo
from interp.train import run_folder

# IOI in Gemma 3 270M by path patching (`experiments/ioi.py`, 16 prompts): name movers, negative
# name movers, S-inhibition, induction, duplicate-token and previous-token heads. With every
# other head mean-ablated per template it keeps 0.41 of the logit difference.
GEMMA_IOI_HEADS = ("12.1 11.2 12.3 17.0 17.2 13.3 12.2 10.3 9.3 9.1 9.0 5.2 5.3 6.1 7.0 4.1")
GEMMA_IOI_HAND_FAITHFULNESS = 0.41


class Search(str, enum.Enum):
  TOP_N = "top_n"
  GREEDY = "greedy"
  ACDC = "acdc"


class Ablation(str, enum.Enum):
  CORRUPT = "corrupt"  # the corrupted run's outputs, prompt by prompt
  MEAN = "mean"        # their mean over the batch


@dataclasses.dataclass(frozen=True)
class DiscoveryConfig:
  """Attributes:
    workdir: the run folder.
    model: gemma3_270m | gpt2:FOLDER | toy:RUN.
    task: ioi | induction | pairs | greater_than.
    pairs_file: the JSON prompt pairs for --task=pairs.
    n_prompts: prompts (ioi, induction).
    seg: induction segment length in tokens.
    seed: the prompts' draw.
    method: eap | eap_ig | eap_ig_inputs.
    steps: integration points for EAP-IG (evaluated as one batched call).
    metric: logit_diff | prob | kl (greater_than: prob, the mass difference, or kl).
    ablation: corrupt | mean (what edges outside the circuit read).
    search: top_n | greedy | acdc.
    rank: signed (largest score first) | abs (largest |score| first), for top_n, greedy, curve.
    edges: edges kept by top_n and greedy (0 = 5% of the graph's edges).
    threshold: ACDC's threshold on the metric change.
    split_qkv: separate q, k and v receivers per head.
    curve_points: points of the faithfulness curve.
    chunk: masks or integration points evaluated at once (0 = all at once).
    hand_heads: a hand-found head circuit to measure beside the curve, "L.H L.H ..."; auto =
      `GEMMA_IOI_HEADS` for IOI on gemma3_270m, none otherwise; none = no comparison.
    precision: compute dtype of the edge scoring (auto = float32 on CPU, bfloat16 on GPU/TPU;
      scores and metrics stay float32; `interp.precision`).
  """

  workdir: str
  model: str = "gemma3_270m"
  task: tasks.Task = tasks.Task.IOI
  pairs_file: str = ""
  n_prompts: int = 16
  seg: int = 12
  seed: int = 0
  method: scores.Method = scores.Method.EAP_IG
  steps: int = 8
  metric: scores.MetricKind = scores.MetricKind.LOGIT_DIFF
  ablation: Ablation = Ablation.CORRUPT
  search: Search = Search.TOP_N
  rank: search_lib.Rank = search_lib.Rank.SIGNED
  edges: int = 0
  threshold: float = 0.05
  split_qkv: bool = True
  curve_points: int = 16
  chunk: int = 0
  hand_heads: str = "auto"
  precision: str = dataclasses.field(default=precision_lib.AUTO,
                                     metadata={"choices": precision_lib.CHOICES})

  def __post_init__(self):
    precision_lib.Precision.parse(self.precision)  # a bad value fails here, naming --precision
    for name, kind in (("task", tasks.Task), ("method", scores.Method),
                       ("metric", scores.MetricKind), ("ablation", Ablation),
                       ("search", Search), ("rank", search_lib.Rank)):
      object.__setattr__(self, name, choices.choice(kind, getattr(self, name), name))
    choices.numbers(self, positive=("n_prompts", "seg", "steps", "curve_points"),
                    non_negative=("seed", "edges", "chunk"), finite=("threshold",))
    if self.task == tasks.Task.PAIRS and not self.pairs_file:
      raise ValueError("--task=pairs needs --pairs_file=FILE (a JSON list of prompt pairs)")
    if self.task in (tasks.Task.IOI, tasks.Task.GREATER_THAN):
      spec = zoo.ModelSpec.parse(self.model, kinds=(zoo.ModelKind.GEMMA3_270M,
                                                    zoo.ModelKind.GPT2))
    else:
      spec = zoo.ModelSpec.parse(self.model)
    if spec.kind == zoo.ModelKind.GPT2 and not os.path.isdir(spec.path):
      raise ValueError(f"--model={self.model}: {spec.path} is not a folder; expected a Hugging "
                       f"Face GPT-2 folder ({_GPT2_FILES})")
    if self.task == tasks.Task.GREATER_THAN and self.metric == scores.MetricKind.LOGIT_DIFF:
      raise ValueError("--task=greater_than reads answer sets, not one pair: use --metric=prob "
                       "(mass on later years minus the rest) or --metric=kl")
    if self.hand_heads not in ("auto", "none"):
      _parse_heads(self.hand_heads)


_GPT2_FILES = "config.json, model.safetensors, vocab.json + merges.txt or encoder.json + vocab.bpe"


def _parse_heads(text: str) -> list[tuple[int, int]]:
  try:
    return [(int(a), int(b)) for a, b in (h.split(".") for h in text.split())]
  except ValueError:
    raise ValueError(f"--hand_heads={text!r}: expected heads as 'L.H L.H ...', auto or "
                     "none") from None


def hand_heads(config: DiscoveryConfig) -> list[tuple[int, int]]:
  """The heads `--hand_heads` names (see `DiscoveryConfig`), [] for none."""
  if config.hand_heads == "auto":
    gemma_ioi = config.task == tasks.Task.IOI and config.model == zoo.ModelKind.GEMMA3_270M.value
    return _parse_heads(GEMMA_IOI_HEADS) if gemma_ioi else []
  return [] if config.hand_heads == "none" else _parse_heads(config.hand_heads)


def heads_circuit(g, heads) -> np.ndarray:
  """bool [n_up n_recv]: a head circuit as edges: from embed, every MLP and `heads` into every
  MLP, the logits and the receivers of `heads` (a shared K/V receiver when it feeds one)."""
  for L, h in heads:
    if not (0 <= L < g.cfg.n_layers and 0 <= h < g.cfg.n_heads):
      raise ValueError(f"--hand_heads: head {L}.{h} is not in a model of {g.cfg.n_layers} "
                       f"layers x {g.cfg.n_heads} heads")
  keep = np.array([not n.startswith("a") for n in g.up_names])
  for L, h in heads:
    keep[g.head_up(L) + h] = True
  recv = np.array([not nodes or any(keep[u] for u in nodes) for nodes in g.recv_nodes])
  return keep[:, None] & recv[None, :] & g.valid


def prompt_pairs(config: DiscoveryConfig, model) -> tasks.PromptPairs:
  if config.task == tasks.Task.IOI:
    return tasks.ioi(model.tokenizer, config.n_prompts, config.seed)
  if config.task == tasks.Task.GREATER_THAN:
    return tasks.greater_than(model.tokenizer, config.n_prompts, config.seed,
                              model.cfg.vocab_size)
  if config.task == tasks.Task.PAIRS:
    if model.tokenizer is None:
      raise ValueError(f"--task=pairs needs a model with a tokenizer, not --model={config.model}")
    return tasks.from_file(config.pairs_file, model.tokenizer)
  if model.tokenizer is None:  # a toy: its whole vocabulary, no BOS
    return tasks.induction(config.n_prompts, config.seg, 0, model.cfg.vocab_size, config.seed)
  bos = tokenized.bos_id(model.tokenizer)
  return tasks.induction(config.n_prompts, config.seg, 1000, 20000, config.seed, bos)


def induction_check(g, params, pairs, circuit, edge_scores) -> dict:
  """Whether the circuit holds a previous-token head -> induction head key edge."""
  hs = {k: np.asarray(v) for k, v in head_scores.head_scores(g.cfg, params,
                                                             jnp.asarray(pairs.clean)).items()}
  prev = [(L, h) for L, h in np.argwhere(hs["previous_token"] > 0.4)]
  ind = [(L, h) for L, h in np.argwhere(hs["prefix_matching"] > 0.4)]
  ranked = {tuple(e): i for i, e in enumerate(search_lib.ranking(g, edge_scores).tolist())}
  found = []
  for L0, h0 in prev:
    for L1, h1 in ind:
      if L1 <= L0:
        continue
      u = g.head_up(int(L0)) + int(h0)
      for r, name in enumerate(g.recv_names):
        if name.endswith("<k>") and g.head_up(int(L1)) + int(h1) in g.recv_nodes[r]:
          found.append({"edge": f"{g.up_names[u]}->{name}", "in_circuit": bool(circuit[u, r]),
                        "rank": ranked[(u, r)]})
  return {"previous_token_heads": [f"{L}.{h}" for L, h in prev],
          "induction_heads": [f"{L}.{h}" for L, h in ind], "k_composition_edges": found,
          "k_composition_in_circuit": any(f["in_circuit"] for f in found)}


def load_model(config: DiscoveryConfig) -> zoo.Model:
  """The model --model names; a GPT-2 folder that fails to load is a one-line error."""
  spec = zoo.ModelSpec.parse(config.model)
  if spec.kind != zoo.ModelKind.GPT2:
    return zoo.load(spec)
  try:
    return zoo.load(spec)
  except (OSError, ValueError, KeyError) as e:
    # args[0], not str(e): a KeyError's str() quotes the message.
    why = e.args[0] if e.args and isinstance(e.args[0], str) else repr(e)
    raise ValueError(f"--model={config.model}: {why.splitlines()[0]}; "
                     f"expected a Hugging Face GPT-2 folder ({_GPT2_FILES})") from None


def run(config: DiscoveryConfig) -> dict:
  os.makedirs(config.workdir, exist_ok=True)
  run_folder.record_flags(config.workdir, dataclasses.asdict(config))
  t0 = time.time()
  model = load_model(config)
  pairs = prompt_pairs(config, model)
  g = graph_lib.build(model.cfg, config.split_qkv)
  clean, corrupt = jnp.asarray(pairs.clean), jnp.asarray(pairs.corrupt)
  end, params = jnp.asarray(pairs.end), model.params
  source = forward.outputs(g, params, corrupt)
  if config.ablation == Ablation.MEAN:
    source = source.mean(1, keepdims=True)
  clean_logits = forward.run(g, params, clean, source, logits_at=end)[0]
  if pairs.signs is not None and config.metric == scores.MetricKind.PROB:
    metric = tasks.mass_difference(pairs.signs)
  else:
    metric = scores.make_metric(config.metric, pairs.answers, clean_logits)
  chunk = config.chunk or None
  t = time.time()
  s = scores.edge_scores(g, params, clean, source, metric, config.method, config.steps, end,
                         corrupt, chunk, precision_lib.Precision.parse(config.precision))
  s = np.asarray(jax.block_until_ready(s))
  score_s = time.time() - t
  n_keep = config.edges or max(1, round(0.05 * g.n_edges))
  evaluate = search_lib.make_evaluator(g, params, clean, source, metric, end, chunk)
  t = time.time()
  if config.search == Search.ACDC:
    circuit, n_evals = search_lib.acdc(g, evaluate, config.threshold)
  else:
    fn = search_lib.top_n if config.search == Search.TOP_N else search_lib.greedy
    circuit, n_evals = fn(g, s, n_keep, config.rank), 0
  search_s = time.time() - t
  t = time.time()
  counts = sorted(set(search_lib.curve_counts(g.n_edges, config.curve_points).tolist())
                  | {int(circuit.sum())})
  curve = search_lib.faithfulness_curve(g, evaluate, s, counts, config.rank)
  circuit_value = float(np.asarray(evaluate(circuit[None]))[0])
  curve_s = time.time() - t
  gap = curve["clean"] - curve["corrupt"]
  edges = [{"edge": f"{g.up_names[u]}->{g.recv_names[r]}", "score": float(s[u, r])}
           for u, r in np.argwhere(circuit)]
  results = {
      "model": model.name, "task": config.task.value, "n_prompts": int(clean.shape[0]),
      "graph": {"n_up": g.n_up, "n_recv": g.n_recv, "n_edges": g.n_edges},
      "circuit": {"n_edges": int(circuit.sum()), "fraction": float(circuit.sum() / g.n_edges),
                  "metric": circuit_value,
                  "normalised": (circuit_value - curve["corrupt"]) / gap,
                  "nodes": search_lib.circuit_nodes(g, circuit), "search_evaluations": n_evals},
      "curve": curve, "score_sum": float(s.sum()),
      "seconds": {"scores": score_s, "search": search_s, "curve": curve_s},
      "top_nodes": sorted(search_lib.node_scores(g, s).items(), key=lambda kv: -kv[1])[:10],
  }
  if config.task == tasks.Task.INDUCTION:
    results["induction"] = induction_check(g, params, pairs, circuit, s)
  heads = hand_heads(config)
  if heads:
    mask = heads_circuit(g, heads)
    value = float(np.asarray(evaluate(mask[None]))[0])
    results["hand_found"] = {
        "heads": [f"{L}.{h}" for L, h in heads], "n_edges": int(mask.sum()),
        "metric": value, "normalised": (value - curve["corrupt"]) / gap,
        "node_level_faithfulness": (GEMMA_IOI_HAND_FAITHFULNESS
                                    if config.hand_heads == "auto" else None)}
  np.savez(os.path.join(config.workdir, "scores.npz"), scores=s, up_names=np.array(g.up_names),
           recv_names=np.array(g.recv_names), valid=g.valid)
  jsonio.write_json_atomic(os.path.join(config.workdir, "circuit.json"), edges)
  results["figures"] = plots.save_all(config.workdir, g, s, circuit, curve,
                                      results.get("hand_found"))
  results["wall_s"] = time.time() - t0
  jsonio.write_json_atomic(os.path.join(config.workdir, "results.json"), jsonio.jsonable(results))
  return results
