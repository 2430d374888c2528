"""The attribution-graph JSON and page without a browser: schema checks that name the file and
the key, embedding that no string can break out of, the saved viewer state, and supernode
proposals scored on a graph with planted groups. `tests/test_graph_viewer.py` drives the page
itself in headless Chromium."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from interp.viz import graph_html, supernodes
from interp.viz.graph_html import GraphFormatError

# Each payload would set window.__pwned if the page ever parsed it as markup.
SCRIPT_TOKEN = "</script><script>window.__pwned = 1</script>"
IMG_TOKEN = '<img src=x onerror="window.__pwned = 1">'


def _malicious_graph() -> dict:
  g = graph_html.example_graph()
  g["tokens"][1] = SCRIPT_TOKEN
  g["tokens"][3] = IMG_TOKEN
  for n in g["nodes"]:
    if n["kind"] == "embedding" and n["pos"] in (1, 3):
      n["token"] = n["label"] = g["tokens"][n["pos"]]
  g["nodes"][6]["label"] = IMG_TOKEN + " & more"
  g["nodes"][6]["contexts"][0]["tokens"][0] = SCRIPT_TOKEN
  g["prompt"] = "".join(g["tokens"][1:])
  return g



def test_embedded_json_cannot_close_the_script_element():
  g = _malicious_graph()
  page = graph_html.render_graph_html(g)
  assert "<script>window.__pwned" not in page and "<img src=x" not in page
  # Only our three elements: the two JSON blocks, the viewer script, and nothing injected.
  assert len(re.findall(r"<script\b", page)) == 3 and page.count("</script>") == 3
  data = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', page,
                   re.S).group(1)
  assert "<" not in data and ">" not in data and "&" not in data
  assert json.loads(data) == g  # \u003c etc. decode back to the original strings


def test_page_is_self_contained():
  page = graph_html.render_graph_html(graph_html.example_graph())
  assert "<link" not in page and "src=" not in page and "@import" not in page
  assert set(re.findall(r"https?://[^\s\"')]+", page)) <= {"http://www.w3.org/2000/svg"}
  assert "default-src 'none'" in page


def test_write_graph_html_writes_one_file(tmp_path):
  out = graph_html.write_graph_html(graph_html.example_graph(), str(tmp_path / "g" / "x.html"))
  assert os.listdir(tmp_path / "g") == ["x.html"] and out.endswith("x.html")


def test_json_round_trip(tmp_path):
  g = _malicious_graph()
  path = graph_html.save_graph_json(g, str(tmp_path / "graph.json"))
  assert graph_html.load_graph_json(path) == g


def test_schema_errors_name_the_file_and_the_key(tmp_path):
  g = graph_html.example_graph()
  del g["nodes"][7]["influence"]
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(g))
  with pytest.raises(GraphFormatError, match=r"bad\.json: nodes\[7\].*missing key 'influence'"):
    graph_html.load_graph_json(str(path))

  cases = [
      (lambda g: g.pop("edges"), r"missing key 'edges'"),
      (lambda g: g.update(format="other/1"), r"'format'.*expected"),
      (lambda g: g["nodes"][0].update(kind="neuron"), r"'kind' is 'neuron'; valid"),
      (lambda g: g["nodes"][0].update(layer=2), r"'layer' = 2 is outside \[-1, -1\]"),
      (lambda g: g["nodes"][6].update(pos=99), r"'pos' = 99"),
      (lambda g: g["nodes"][6].update(node_rank=1.5), r"'node_rank' = 1.5"),
      (lambda g: g["nodes"][6].update(activation="big"), r"'activation' must be int or float"),
      (lambda g: g["edges"][0].update(target="nope"), r"edges\[0\] key 'target' = 'nope'"),
      (lambda g: g["scores"].pop("completeness"), r"scores is missing key 'completeness'"),
      (lambda g: g["nodes"][6]["contexts"][1]["values"].pop(), r"contexts\[1\] has 5 tokens"),
      (lambda g: g["thresholds"].update(node=2), r"thresholds key 'node' = 2"),
      (lambda g: g["nodes"][6].update(heads=[{"layer": 1, "weight": 0.5}]),
       r"heads\[0\] is missing key 'head'"),
      (lambda g: g["nodes"][6].update(heads=[{"layer": 1, "head": 0, "weight": 1, "key": [
          {"source": "x"}]}]), r"heads\[0\] key\[0\] is missing key 'weight'"),
      (lambda g: g["nodes"][6].update(logit_effects=[{"token": "a", "value": "big"}]),
       r"logit_effects\[0\] key 'value' must be int or float"),
  ]
  for mutate, pattern in cases:
    g = graph_html.example_graph()
    mutate(g)
    with pytest.raises(GraphFormatError, match=pattern):
      graph_html.save_graph_json(g, str(tmp_path / "never.json"))
  assert not (tmp_path / "never.json").exists()


def test_supernode_suggestions_recover_planted_groups():
  # Planted: 6 groups of 4 features sharing inputs and outputs, 12 loners wired at random.
  scores = []
  for seed in range(3):
    g, truth = supernodes.planted_graph(noise=0.3, seed=seed)
    graph_html.validate_graph(g)
    found = supernodes.suggest_supernodes(g)
    scores.append(supernodes.pair_scores([p["members"] for p in found], truth))
  print("planted groups, noise 0.3:", scores)
  # A pair of loners drawn onto the same source and target does play one role (seed 2).
  assert np.mean([s["ari"] for s in scores]) >= 0.95 and min(s["ari"] for s in scores) >= 0.9
  assert min(s["recall"] for s in scores) == 1.0
  g, truth = supernodes.planted_graph(noise=1.0, seed=0)  # harder: still better than chance
  noisy = supernodes.pair_scores([p["members"] for p in supernodes.suggest_supernodes(g)], truth)
  print("planted groups, noise 1.0:", noisy)
  assert 0.3 < noisy["ari"] < 0.99
  # The scores themselves: a perfect and an empty clustering.
  ideal = [[i for i, t in truth.items() if t == k] for k in range(6)]
  assert supernodes.pair_scores(ideal, truth) == {"precision": 1.0, "recall": 1.0, "ari": 1.0}
  assert supernodes.pair_scores([], truth)["recall"] == 0.0


def test_state_beside_the_page_is_checked_and_embedded(tmp_path):
  g = graph_html.example_graph()
  page = tmp_path / "graph.html"
  state = {"format": "interp.graph_state/1", "pinned": ["f_3_5_4096"],
           "supernodes": [{"name": "say Austin", "members": ["f_3_5_4096", "f_3_5_990"]}]}
  (tmp_path / "graph.state.json").write_text(json.dumps(state))
  graph_html.write_graph_html(g, str(page))
  data = re.search(r'id="viewer-data">(.*?)</script>', page.read_text(), re.S).group(1)
  assert json.loads(data)["state"] == state
  state["pinned"] = ["nope"]
  (tmp_path / "graph.state.json").write_text(json.dumps(state))
  with pytest.raises(GraphFormatError, match=r"graph\.state\.json: pinned names 'nope'"):
    graph_html.write_graph_html(g, str(page))


def test_screenshot_skips_with_a_message_without_a_browser(monkeypatch, tmp_path):
  from interp.viz import browser
  monkeypatch.setattr(browser.shutil, "which", lambda name: None)
  png, message = browser.screenshot_page(str(tmp_path / "g.html"), str(tmp_path / "g.png"))
  assert png is None and message.startswith("no screenshot: chromium")
  assert not (tmp_path / "g.png").exists()
