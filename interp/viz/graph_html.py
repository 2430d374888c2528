"""Attribution graphs on disk and as one self-contained HTML page.

Vocabulary (the `interp.attribution_graph/1` JSON format the graph builder emits):
  node:  one unit of the graph. `kind` is "embedding" (layer -1, one per prompt position),
         "feature" (a transcoder feature at `layer`, `pos`), "error" (the transcoder's residual
         error at `layer`, `pos`) or "logit" (layer `n_layers`, an output token with its `prob`).
  edge:  a direct linear effect `weight` of `source` on `target`; its sign is kept.
  rank:  `node_rank` / `edge_rank` is the cumulative-influence fraction at which pruning keeps
         the element (0..1; embeddings and logits are always kept, rank 0). Showing everything
         with rank <= t is the graph pruned at threshold t.

Optional keys a reader of the page may use (old files without them still render):
  graph  `dashboard_url`; node `norm` (an error node's residual-error norm), `dashboard_url`,
         `logit_effects` [{"token", "value"}], `heads` [{"layer", "head", "weight",
         "q_pos", "k_pos", "query": [{"source", "weight"}], "key": [...]}] (the heads that
         carry the node's input from other positions and, per head, its attention score's
         query- and key-side sources at query position q_pos and key position k_pos).

The page (`render_graph_html`) draws one view at a time as inline SVG (scripts
assets/graph_model.js, graph_panel.js, graph_viewer.js): first the strongest paths into the top
logit, error nodes summarised as each node's share of input from errors; on demand the graph
pruned at the `#node-threshold` / `#edge-threshold` sliders, a node's upstream or downstream
trace, or the pinned subgraph with named supernodes (their edges summed). Clicking a node fills a
panel with its dashboard data and ranked edges; `graph.html#node=ID&head=L.H` opens the page
with node ID selected and that head's sources shown. The page loads nothing from the network. The
graph is embedded as JSON in a `<script type="application/json">` block with `<`, `>`, `&`
escaped, beside a second block (`#viewer-data`: supernode proposals from
`interp.viz.supernodes`, a saved state), and the scripts write data only through
`textContent` / `setAttribute`, so token strings cannot inject markup. The state (pinned nodes,
supernodes) is `interp.graph_state/1` JSON; `write_graph_html` embeds `<page>.state.json` when
it lies beside the page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.resources
import json
import math
import os

from interp.viz import supernodes

FORMAT = "interp.attribution_graph/1"
NODE_KINDS = ("embedding", "feature", "error", "logit")
DEFAULT_THRESHOLDS = {"node": 0.8, "edge": 0.98}

# key -> accepted types; required keys first, then optional ones (None allowed, defaulted).
_TOP_REQUIRED = {"format": str, "prompt": str, "tokens": list, "n_layers": int, "nodes": list,
                 "edges": list, "scores": dict}
_TOP_OPTIONAL = {"model": str, "transcoder": str, "thresholds": dict, "dashboard_url": str}
_NODE_REQUIRED = {"id": str, "kind": str, "layer": int, "pos": int, "label": str,
                  "influence": (int, float), "node_rank": (int, float)}
_NODE_OPTIONAL = {"feature": int, "activation": (int, float), "token": str,
                  "prob": (int, float), "contexts": list, "norm": (int, float),
                  "dashboard_url": str, "logit_effects": list, "heads": list}
_EDGE_REQUIRED = {"source": str, "target": str, "weight": (int, float),
                  "edge_rank": (int, float)}


class GraphFormatError(ValueError):
  """An attribution graph that does not follow `interp.attribution_graph/1`."""


def _check_keys(obj, required, optional, where, source):
  if not isinstance(obj, dict):
    raise GraphFormatError(f"{source}: {where} must be a JSON object, got {type(obj).__name__}")
  for key, types in list(required.items()) + list(optional.items()):
    if key not in obj:
      if key in required:
        raise GraphFormatError(f"{source}: {where} is missing key {key!r}")
      continue
    value = obj[key]
    if value is None and key in optional:
      continue
    if isinstance(value, bool) or not isinstance(value, types):
      want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
      raise GraphFormatError(f"{source}: {where} key {key!r} must be {want}, "
                             f"got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
      raise GraphFormatError(f"{source}: {where} key {key!r} is {value}, not a finite number")


def _check_rank(obj, key, where, source):
  if not 0.0 <= obj[key] <= 1.0:
    raise GraphFormatError(f"{source}: {where} key {key!r} = {obj[key]} is outside [0, 1]")


def _check_contexts(contexts, where, source):
  for j, ctx in enumerate(contexts):
    at = f"{where} contexts[{j}]"
    _check_keys(ctx, {"tokens": list, "values": list}, {}, at, source)
    if len(ctx["tokens"]) != len(ctx["values"]):
      raise GraphFormatError(f"{source}: {at} has {len(ctx['tokens'])} tokens but "
                             f"{len(ctx['values'])} values")
    for k, (tok, val) in enumerate(zip(ctx["tokens"], ctx["values"])):
      _check_keys({"tokens": tok, "values": val}, {"tokens": str, "values": (int, float)}, {},
                  f"{at} item {k}", source)


def validate_graph(graph: dict, source: str = "graph") -> None:
  """Raises GraphFormatError, naming `source` and the offending key, if `graph` is malformed.

  Args:
    graph: the decoded JSON object.
    source: how to name the graph in messages (a file path, say).
  """
  _check_keys(graph, _TOP_REQUIRED, _TOP_OPTIONAL, "the graph", source)
  if graph["format"] != FORMAT:
    raise GraphFormatError(f"{source}: key 'format' is {graph['format']!r}, expected {FORMAT!r}")
  for i, tok in enumerate(graph["tokens"]):
    if not isinstance(tok, str):
      raise GraphFormatError(f"{source}: tokens[{i}] must be str, got {type(tok).__name__}")
  n_layers, n_pos = graph["n_layers"], len(graph["tokens"])
  for key in ("replacement", "completeness"):
    _check_keys(graph["scores"], {key: (int, float)}, {}, "scores", source)
  for key, value in (graph.get("thresholds") or {}).items():
    _check_keys({key: value}, {key: (int, float)}, {}, "thresholds", source)
    _check_rank({key: value}, key, "thresholds", source)
  ids = set()
  for i, node in enumerate(graph["nodes"]):
    where = f"nodes[{i}]" + (f" ({node.get('id')!r})" if isinstance(node, dict) else "")
    _check_keys(node, _NODE_REQUIRED, _NODE_OPTIONAL, where, source)
    kind, layer = node["kind"], node["layer"]
    if kind not in NODE_KINDS:
      raise GraphFormatError(f"{source}: {where} key 'kind' is {kind!r}; valid: {NODE_KINDS}")
    lo, hi = {"embedding": (-1, -1), "logit": (n_layers, n_layers)}.get(kind, (0, n_layers - 1))
    if not lo <= layer <= hi:
      raise GraphFormatError(f"{source}: {where} key 'layer' = {layer} is outside [{lo}, {hi}] "
                             f"for a {kind} node")
    if not 0 <= node["pos"] < n_pos:
      raise GraphFormatError(f"{source}: {where} key 'pos' = {node['pos']} is outside the "
                             f"{n_pos} prompt tokens")
    if kind == "feature" and node.get("feature") is None:
      raise GraphFormatError(f"{source}: {where} is missing key 'feature' (a feature node)")
    _check_rank(node, "node_rank", where, source)
    _check_contexts(node.get("contexts") or [], where, source)
    for j, x in enumerate(node.get("logit_effects") or []):
      _check_keys(x, {"token": str, "value": (int, float)}, {}, f"{where} logit_effects[{j}]",
                  source)
    for j, h in enumerate(node.get("heads") or []):
      _check_keys(h, {"layer": int, "head": int, "weight": (int, float)},
                  {"query": list, "key": list, "q_pos": int, "k_pos": int},
                  f"{where} heads[{j}]", source)
      for side in ("query", "key"):
        for k, x in enumerate(h.get(side) or []):
          _check_keys(x, {"source": str, "weight": (int, float)}, {},
                      f"{where} heads[{j}] {side}[{k}]", source)
    if node["id"] in ids:
      raise GraphFormatError(f"{source}: {where} key 'id' repeats an earlier node's id")
    ids.add(node["id"])
  for i, edge in enumerate(graph["edges"]):
    where = f"edges[{i}]"
    _check_keys(edge, _EDGE_REQUIRED, {}, where, source)
    for end in ("source", "target"):
      if edge[end] not in ids:
        raise GraphFormatError(f"{source}: {where} key {end!r} = {edge[end]!r} is no node's id")
    _check_rank(edge, "edge_rank", where, source)


def save_graph_json(graph: dict, path: str) -> str:
  """Validates `graph` and writes it as JSON to `path`.

  Args:
    graph: an `interp.attribution_graph/1` object.
    path: where to write; parent folders are created.

  Returns:
    The path written.
  """
  validate_graph(graph, source=path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(graph, f, ensure_ascii=False, allow_nan=False)
  return path


def load_graph_json(path: str) -> dict:
  """Reads and validates a graph written by `save_graph_json` (or the graph builder).

  Args:
    path: a JSON file.

  Returns:
    The graph dict. Raises GraphFormatError naming `path` and the key when it is malformed.
  """
  with open(path, encoding="utf-8") as f:
    try:
      graph = json.load(f)
    except json.JSONDecodeError as e:
      raise GraphFormatError(f"{path}: not valid JSON ({e})") from e
  validate_graph(graph, source=path)
  return graph


def embed_json(obj) -> str:
  """JSON text that is safe inside an HTML `<script>` element: `<`, `>`, `&` and the JS line
  separators become \\u escapes, so no string in `obj` can close the element."""
  text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
  for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                  ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
    text = text.replace(ch, esc)
  return text


def _asset(name: str) -> str:
  text = (importlib.resources.files("interp.viz") / "assets" / name).read_text(encoding="utf-8")
  assert "</script" not in text.lower() and "</style" not in text.lower(), name
  return text


STATE_FORMAT = "interp.graph_state/1"
_SCRIPTS = ("graph_model.js", "graph_panel.js", "graph_viewer.js")


def check_state(state: dict, graph: dict, source: str = "state") -> dict:
  """Checks a saved viewer state (pinned nodes, supernodes) against `graph`.

  Args:
    state: `{"format": "interp.graph_state/1", "pinned": [ids], "supernodes": [{"name",
      "members": [ids]}]}`.
    graph: the graph the state belongs to.
    source: how to name the state in messages (its file path, say).

  Returns:
    `state`. Raises GraphFormatError naming `source` and the key when it is malformed.
  """
  _check_keys(state, {"format": str}, {"pinned": list, "supernodes": list, "prompt": str},
              "the state", source)
  if state["format"] != STATE_FORMAT:
    raise GraphFormatError(f"{source}: key 'format' is {state['format']!r}, expected "
                           f"{STATE_FORMAT!r}")
  ids = {n["id"] for n in graph["nodes"]}
  lists = [("pinned", state.get("pinned") or [])]
  for i, sn in enumerate(state.get("supernodes") or []):
    _check_keys(sn, {"name": str, "members": list}, {}, f"supernodes[{i}]", source)
    lists.append((f"supernodes[{i}] members", sn["members"]))
  for where, values in lists:
    for v in values:
      if v not in ids:
        raise GraphFormatError(f"{source}: {where} names {v!r}, no node of the graph")
  return state


def state_path(page_path: str) -> str:
  """Where the viewer state of the page `page_path` lives: `<page stem>.state.json`."""
  return os.path.splitext(page_path)[0] + ".state.json"


def render_graph_html(graph: dict, suggestions: list | None = None,
                      state: dict | None = None) -> str:
  """The viewer page for `graph`, with its scripts, style and data inline.

  Args:
    graph: an `interp.attribution_graph/1` object (validated here).
    suggestions: supernode proposals to list (default: `supernodes.suggest_supernodes`).
    state: a saved `interp.graph_state/1` state to open with (checked against `graph`).

  Returns:
    The HTML document as a string.
  """
  validate_graph(graph)
  if suggestions is None:
    suggestions = supernodes.suggest_supernodes(graph)
  if state is not None:
    check_state(state, graph)
  viewer = {"suggestions": suggestions, "method": supernodes.METHOD, "state": state}
  title = html.escape(f"Attribution graph: {graph['prompt']}")
  script = "\n" + "\n".join(_asset(name) for name in _SCRIPTS)
  digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
  # Backs up the escaping: no network at all, and only our own script (by hash) may run, so
  # even injected markup could neither run a script or handler nor fetch anything.
  csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'"
  return "\n".join([
      "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
      f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
      f"<title>{title}</title>", f"<style>\n{_asset('graph_viewer.css')}</style>", "</head>",
      "<body>", f"<noscript>{title} (this viewer needs JavaScript).</noscript>",
      f'<script type="application/json" id="graph-data">{embed_json(graph)}</script>',
      f'<script type="application/json" id="viewer-data">{embed_json(viewer)}</script>',
      f"<script>{script}</script>", "</body>", "</html>", ""])


def write_graph_html(graph: dict, path: str, suggestions: list | None = None) -> str:
  """Writes the viewer page for `graph` to `path` (one file, nothing else).

  A state saved from the page as `<path stem>.state.json` beside it is embedded, so the page
  reopens with its pinned nodes and supernodes.

  Args:
    graph: an `interp.attribution_graph/1` object.
    path: the .html file to write; parent folders are created.
    suggestions: supernode proposals (default: computed from `graph`).

  Returns:
    The path written.
  """
  state = None
  if os.path.exists(state_path(path)):
    with open(state_path(path), encoding="utf-8") as f:
      try:
        state = json.load(f)
      except json.JSONDecodeError as e:
        raise GraphFormatError(f"{state_path(path)}: not valid JSON ({e})") from e
    check_state(state, graph, source=state_path(path))
  page = render_graph_html(graph, suggestions, state)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path


def example_graph() -> dict:
  """A small valid graph ("The capital of Texas is" -> " Austin") for demos and tests.

  Returns:
    An `interp.attribution_graph/1` dict with every node kind, signed edges and contexts.
  """
  tokens = ["<bos>", "The", " capital", " of", " Texas", " is"]
  n_layers, last = 4, len(tokens) - 1

  def node(id_, kind, layer, pos, label, rank, influence, **extra):
    base = {"id": id_, "kind": kind, "layer": layer, "pos": pos, "feature": None,
            "label": label, "activation": None, "influence": influence, "node_rank": rank,
            "token": None, "prob": None, "contexts": []}
    return {**base, **extra}

  def ctx(words, hot):
    return {"tokens": words, "values": [4.0 if i == hot else 0.5 * (i % 3) for i in
                                        range(len(words))]}

  nodes = [node(f"emb_{p}", "embedding", -1, p, t, 0.0, 0.0, token=t)
           for p, t in enumerate(tokens)]
  feats = [  # (layer, pos, feature, label, node_rank, activation)
      (0, 4, 101, "Texas", 0.10, 5.2), (0, 2, 57, "capital (word)", 0.35, 3.1),
      (1, 4, 2203, "US states", 0.20, 4.4), (1, 5, 88, "'is' after noun", 0.85, 1.2),
      (2, 5, 731, "say a capital", 0.15, 6.0), (2, 5, 12, "location", 0.55, 2.3),
      (3, 5, 4096, "say Austin", 0.05, 7.5), (3, 5, 990, "say a Texas city", 0.70, 1.9)]
  for layer, pos, f, label, rank, act in feats:
    nodes.append(node(f"f_{layer}_{pos}_{f}", "feature", layer, pos, label, rank, 1.0 - rank,
                      feature=f, activation=act,
                      contexts=[ctx(["Houston", ",", " Texas", " is", " big"], 2),
                                ctx(["the", " state", " capital", " of", " " + label], 4)]))
  nodes += [node(f"err_{layer}_{last}", "error", layer, last, f"error L{layer}", 0.6 + 0.1 * layer,
                 0.1) for layer in range(n_layers)]
  nodes += [node("logit_0", "logit", n_layers, last, " Austin", 0.0, 1.0, token=" Austin",
                 prob=0.62),
            node("logit_1", "logit", n_layers, last, " Dallas", 0.0, 0.2, token=" Dallas",
                 prob=0.08)]
  wiring = [  # (source, target, weight, edge_rank)
      ("emb_4", "f_0_4_101", 3.0, 0.05), ("emb_2", "f_0_2_57", 2.0, 0.2),
      ("f_0_4_101", "f_1_4_2203", 2.5, 0.1), ("f_0_2_57", "f_2_5_731", 1.5, 0.3),
      ("emb_5", "f_1_5_88", 0.8, 0.6), ("f_1_4_2203", "f_2_5_731", 2.0, 0.15),
      ("f_1_5_88", "f_2_5_12", -0.6, 0.9), ("f_2_5_731", "f_3_5_4096", 3.5, 0.02),
      ("f_2_5_12", "f_3_5_990", 0.7, 0.8), ("f_3_5_4096", "logit_0", 4.0, 0.01),
      ("f_3_5_4096", "logit_1", -1.5, 0.4), ("f_3_5_990", "logit_1", 1.0, 0.7),
      ("err_3_5", "logit_0", 0.4, 0.85), ("err_2_5", "f_3_5_4096", -0.3, 0.95),
      ("emb_1", "f_2_5_12", -0.2, 0.99)]
  edges = [{"source": s, "target": t, "weight": w, "edge_rank": r} for s, t, w, r in wiring]
  return {"format": FORMAT, "prompt": "".join(tokens[1:]), "tokens": tokens,
          "model": "gemma-3-270m", "transcoder": "example-transcoder", "n_layers": n_layers,
          "scores": {"replacement": 0.71, "completeness": 0.88},
          "thresholds": dict(DEFAULT_THRESHOLDS), "nodes": nodes, "edges": edges}
