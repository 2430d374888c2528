"""The attribution-graph viewer in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium; `make env-dev` installs them): pruning counts and escaping, the first view,
select, trace, pin, group, search, zoom, proposals, per-head data (hand-written, and from the
graph builder on a tiny model), saved state, and the render time of a 2,000-node, 30,000-edge
graph. One browser serves the module. The tests skip only when no chromium binary is on the
PATH. The format without a browser: `tests/test_graph_format.py`."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

from interp.viz import graph_html, supernodes
from tests.test_graph_format import IMG_TOKEN, SCRIPT_TOKEN, _malicious_graph


@pytest.fixture(scope="module")
def browser():
  binary = shutil.which("chromium") or shutil.which("chromium-browser")
  driver_path = shutil.which("chromedriver")
  if not binary or not driver_path:
    pytest.skip("no chromium / chromedriver on PATH (make env-dev installs them as root)")
  webdriver = pytest.importorskip("selenium.webdriver")
  opts = webdriver.ChromeOptions()
  opts.binary_location = binary
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000"):
    opts.add_argument(arg)
  opts.set_capability("goog:loggingOptions", {"browser": "ALL"})
  driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_path))
  yield driver
  driver.quit()


@pytest.fixture(scope="module")
def example_page(tmp_path_factory):
  return graph_html.write_graph_html(graph_html.example_graph(),
                                     str(tmp_path_factory.mktemp("ex") / "graph.html"))


def _open(driver, page):
  driver.get("file://" + page)
  driver.find_element("css selector", "svg g.node")  # rendered at all


def _set_threshold(driver, which, value):
  driver.execute_script(
      "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
      "el.dispatchEvent(new Event('input', {bubbles: true}));", f"{which}-threshold", str(value))


def _click(driver, selector):
  driver.execute_script("document.querySelector(arguments[0]).dispatchEvent("
                        "new MouseEvent('click', {bubbles: true}));", selector)


def _node(driver, node_id):
  _click(driver, f"svg [data-node-id='{node_id}']")


def _drawn(driver):
  return driver.execute_script(
      "return [[...document.querySelectorAll('svg g.node')].map(g => g.dataset.nodeId),"
      "        [...document.querySelectorAll('svg path.edge')].map(p => [p.dataset.source,"
      "         p.dataset.target, Number(p.dataset.weight)])];")


def _counts(driver):
  return driver.execute_script(
      "const c = document.getElementById('visible-count').dataset;"
      "return [Number(c.nodes), Number(c.edges), Number(c.drawnNodes), Number(c.drawnEdges)];")


def _no_errors(driver):
  errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors


def test_viewer_counts_and_escaping(browser, tmp_path):
  g = _malicious_graph()
  page = graph_html.write_graph_html(g, str(tmp_path / "graph.html"))
  _open(browser, page)
  assert browser.execute_script("return window.__pwned") is None
  assert browser.execute_script(
      "return performance.getEntriesByType('resource').length") == 0  # nothing fetched
  text = browser.execute_script("return document.body.textContent")
  assert SCRIPT_TOKEN in text and IMG_TOKEN in text
  assert browser.execute_script("return document.querySelectorAll('img, body > script').length"
                                ) == 3  # our three <script> elements, no injected <img>
  assert browser.find_element("id", "score-replacement").text.endswith("0.710")

  _click(browser, "#mode-threshold")
  kind = {n["id"]: n["kind"] for n in g["nodes"]}
  for tn, te in ((1.0, 1.0), (0.5, 1.0), (0.12, 0.5), (0.0, 0.0)):
    _set_threshold(browser, "node", tn)
    _set_threshold(browser, "edge", te)
    keep = {x["id"] for x in g["nodes"] if x["node_rank"] <= tn}
    edges = [e for e in g["edges"] if e["edge_rank"] <= te and e["source"] in keep and
             e["target"] in keep]
    non_error = sum(kind[e["source"]] != "error" for e in edges)  # errors: badges, not edges
    assert _counts(browser) == [len(keep), len(edges), len(keep), non_error], (tn, te)
    assert sorted(_drawn(browser)[0]) == sorted(keep)

  _set_threshold(browser, "node", 1.0)
  _set_threshold(browser, "edge", 1.0)
  feat = g["nodes"][6]  # the feature whose label and context carry markup
  _node(browser, feat["id"])
  panel = browser.find_element("id", "panel")
  assert f"Feature {feat['feature']} · L{feat['layer']}" in panel.text
  assert IMG_TOKEN in panel.text and " big" in panel.text and "activation" in panel.text
  assert panel.find_element("css selector", ".tok.max").text == " Texas"
  if os.environ.get("INTERP_VIEWER_SCREENSHOT"):  # for a person checking the layout
    browser.save_screenshot(os.environ["INTERP_VIEWER_SCREENSHOT"])
  _no_errors(browser)


def test_first_view_is_the_strongest_paths_into_the_top_logit(browser, example_page):
  _open(browser, example_page)
  nodes, edges = _drawn(browser)
  # By hand: everything with a non-error path into ' Austin' (p 0.62); ' Dallas' has none.
  assert sorted(nodes) == sorted(["logit_0", "f_3_5_4096", "f_2_5_731", "f_1_4_2203",
                                  "f_0_2_57", "f_0_4_101", "emb_4", "emb_2"])
  assert len(edges) == 7 and not any(s.startswith("err_") for s, _, _ in edges)
  badges = browser.execute_script(
      "return [...document.querySelectorAll('.err-badge')].map(b => b.closest('g').dataset.nodeId"
      " + ' ' + b.textContent)")
  # err_3_5 -> logit_0: 0.4 of |4.0| + |0.4|; err_2_5 -> f_3_5_4096: 0.3 of 3.5 + 0.3.
  assert sorted(badges) == ["f_3_5_4096 ε8%", "logit_0 ε9%"]
  _no_errors(browser)


def test_select_ranks_edges_and_dims_the_rest(browser, example_page):
  _open(browser, example_page)
  _node(browser, "f_3_5_4096")
  ranked = browser.execute_script(
      "return ['incoming', 'outgoing'].map(id => [...document.querySelectorAll(`#${id} li`)]"
      ".map(li => [li.dataset.nodeId, Number(li.dataset.weight)]))")
  assert ranked == [[["f_2_5_731", 3.5], ["err_2_5", -0.3]],
                    [["logit_0", 4.0], ["logit_1", -1.5]]]
  dim = browser.execute_script(
      "return [...document.querySelectorAll('svg g.node.dim')].map(g => g.dataset.nodeId)")
  assert sorted(dim) == sorted(["f_1_4_2203", "f_0_2_57", "f_0_4_101", "emb_4", "emb_2"])
  assert browser.execute_script("return document.querySelectorAll('path.edge.lit').length") == 2
  assert "no per-head data" in browser.find_element("id", "attention").text
  # A node reached from the list joins the view.
  _click(browser, "#outgoing li[data-node-id='logit_1']")
  assert "logit_1" in _drawn(browser)[0]
  assert browser.find_element("id", "panel-title").text.startswith("Logit")
  _no_errors(browser)


def test_per_head_sources_when_the_json_has_them(browser, tmp_path):
  g = graph_html.example_graph()
  say = next(n for n in g["nodes"] if n["id"] == "f_3_5_4096")
  say["heads"] = [{"layer": 1, "head": 3, "weight": 0.4, "query": [{"source": "emb_5",
                   "weight": 0.2}], "key": [{"source": "f_1_4_2203", "weight": 0.9}]},
                  {"layer": 2, "head": 0, "weight": -1.1}]
  say["logit_effects"] = [{"token": " Austin", "value": 2.5}]
  err = next(n for n in g["nodes"] if n["id"] == "err_3_5")
  err["norm"] = 1.25
  _open(browser, graph_html.write_graph_html(g, str(tmp_path / "heads.html")))
  _node(browser, "f_3_5_4096")
  heads = browser.execute_script(
      "return [...document.querySelectorAll('#attention .heads li')].map(li => li.dataset.head)")
  assert heads == ["2.0", "1.3"]  # by |weight|
  _click(browser, "#attention li[data-head='1.3']")
  text = lambda sel: browser.execute_script(
      "return document.querySelector(arguments[0]).textContent", sel)
  assert text(".query-sources") == "0.200  embedding  is @5"
  assert text(".key-sources") == "0.900  US states (L1/2203 @4)"
  assert text(".logit-effects") == "2.500   Austin"
  _click(browser, "#incoming li[data-node-id='err_2_5']")  # the error joins the view
  _node(browser, "err_2_5")
  assert browser.find_element("id", "panel-title").text == "Error · L2 · pos 5 · norm –"
  browser.execute_script("document.getElementById('mode-threshold').click()")
  _set_threshold(browser, "node", 1.0)
  _node(browser, "err_3_5")
  assert browser.find_element("id", "panel-title").text == "Error · L3 · pos 5 · norm 1.250"
  _no_errors(browser)


def test_heads_from_the_graph_builder(browser, tmp_path):
  # A real graph of the tiny Gemma-like model with the builder's per-head data, end to end.
  from tests.test_graph_heads import small_graph_json
  _, js = small_graph_json()
  node = next(n for n in js["nodes"] if n.get("heads"))
  page = graph_html.write_graph_html(js, str(tmp_path / "built.html"))
  h = node["heads"][-1]
  browser.get(f"file://{page}#node={node['id']}&head={h['layer']}.{h['head']}")  # a link
  assert browser.execute_script(
      "return document.querySelector('#head-detail .query-sources li').textContent"
  ).startswith(f"{h['query'][0]['weight']:.3f}  ")
  _open(browser, page)
  _click(browser, "#mode-threshold")  # every stored node drawn, so any can be selected
  _set_threshold(browser, "node", 1.0)
  _set_threshold(browser, "edge", 1.0)
  _node(browser, node["id"])
  listed = browser.execute_script(
      "return [...document.querySelectorAll('#attention .heads li')].map(li => li.dataset.head)")
  assert listed == [f"{h['layer']}.{h['head']}" for h in node["heads"]]  # by |weight|
  h = node["heads"][0]
  _click(browser, f"#attention li[data-head='{h['layer']}.{h['head']}']")
  titles = browser.execute_script(
      "return [...document.querySelectorAll('#head-detail h4')].map(x => x.textContent)")
  assert titles == [f"query-side sources of L{h['layer']}.H{h['head']} (query at pos "
                    f"{h['q_pos']})", f"key-side sources of L{h['layer']}.H{h['head']} "
                    f"(key at pos {h['k_pos']})"]
  for side in ("query", "key"):
    items = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(li => li.textContent)",
        f"#head-detail .{side}-sources li")
    assert len(items) == len(h[side]) >= 1
    for text, x in zip(items, h[side]):
      assert text.startswith(f"{x['weight']:.3f}  ")
      if x["source"].endswith("(not in graph)"):
        assert text.endswith(x["source"])
  _no_errors(browser)


def test_trace_upstream_to_a_depth(browser, example_page):
  _open(browser, example_page)
  _node(browser, "logit_0")
  browser.execute_script("document.getElementById('trace-depth').value = '2';"
                         "document.getElementById('trace-k').value = '3';")
  _click(browser, "#trace-up")
  nodes, edges = _drawn(browser)
  # logit_0 <- f_3_5_4096, err_3_5; f_3_5_4096 <- f_2_5_731, err_2_5 (errors not expanded).
  assert sorted(nodes) == sorted(["logit_0", "f_3_5_4096", "err_3_5", "f_2_5_731", "err_2_5"])
  assert sorted((s, t) for s, t, _ in edges) == sorted(
      [("f_3_5_4096", "logit_0"), ("err_3_5", "logit_0"), ("f_2_5_731", "f_3_5_4096"),
       ("err_2_5", "f_3_5_4096")])
  _click(browser, "#pin-trace")
  assert browser.execute_script("return document.querySelectorAll('#pinned-list li').length") == 5
  _node(browser, "f_3_5_4096")
  _click(browser, "#trace-down")
  assert sorted(_drawn(browser)[0]) == ["f_3_5_4096", "logit_0", "logit_1"]
  _no_errors(browser)


def test_pin_group_and_state_round_trip(browser, example_page):
  _open(browser, example_page)
  _click(browser, "#mode-threshold")
  _set_threshold(browser, "node", 1.0)
  for node_id in ("f_2_5_731", "f_3_5_4096", "f_3_5_990", "logit_1"):
    _node(browser, node_id)
    _click(browser, "#pin-node")
  browser.execute_script(
      "for (const id of ['f_3_5_4096', 'f_3_5_990'])"
      "  document.querySelector(`#pinned-list input[value='${id}']`).checked = true;"
      "document.getElementById('group-name').value = 'say <b>Austin</b>';")
  _click(browser, "#group-btn")
  nodes, edges = _drawn(browser)
  assert sorted(nodes) == ["f_2_5_731", "logit_1", "supernode_0"]
  # Summed by hand: 3.5 into the group; -1.5 + 1.0 from it into ' Dallas'.
  assert sorted(edges) == [["f_2_5_731", "supernode_0", 3.5], ["supernode_0", "logit_1", -0.5]]
  label = browser.find_element("css selector", "[data-node-id='supernode_0'] text").text
  assert label.startswith("say <b>")  # text, not markup
  _node(browser, "supernode_0")
  assert browser.find_element("id", "panel-title").text == "Supernode say <b>Austin</b>"
  _click(browser, "#save-state")
  state = json.loads(browser.find_element("id", "state-json").get_attribute("value"))
  assert state["supernodes"] == [{"name": "say <b>Austin</b>",
                                  "members": ["f_3_5_4096", "f_3_5_990"]}]
  assert state["pinned"] == ["f_2_5_731", "f_3_5_4096", "f_3_5_990", "logit_1"]
  assert browser.find_element("id", "state-download").get_attribute("href").startswith("blob:")
  state["supernodes"] = []
  browser.execute_script("document.getElementById('state-json').value = arguments[0];",
                         json.dumps(state))
  _click(browser, "#load-state")
  assert sorted(_drawn(browser)[0]) == sorted(state["pinned"])
  _no_errors(browser)


def test_search_marks_and_selects(browser, example_page):
  _open(browser, example_page)
  search = browser.find_element("id", "search")
  search.send_keys("texas")
  # By hand: 'Texas' (f_0_4_101), 'say a Texas city' (f_3_5_990), the token ' Texas' (emb_4).
  found = browser.execute_script(
      "return [...document.querySelectorAll('#search-results li')].map(li => li.dataset.nodeId)")
  assert sorted(found) == ["emb_4", "f_0_4_101", "f_3_5_990"]
  marked = browser.execute_script(
      "return [...document.querySelectorAll('svg g.node.match')].map(g => g.dataset.nodeId)")
  assert sorted(marked) == ["emb_4", "f_0_4_101"]  # f_3_5_990 is not in the first view
  _click(browser, "#search-results li[data-node-id='f_3_5_990']")
  assert "f_3_5_990" in _drawn(browser)[0]
  assert browser.find_element("id", "panel-title").text == "Feature 990 · L3 · pos 5"
  _no_errors(browser)


def test_zoom_and_pan(browser, example_page):
  _open(browser, example_page)
  zoom = lambda: float(browser.find_element("id", "graph-svg").get_attribute("data-zoom"))
  assert zoom() == 1.0
  _click(browser, "#zoom-in")
  assert zoom() == pytest.approx(1.5, abs=1e-3)
  browser.execute_script(
      "document.getElementById('graph-svg').dispatchEvent(new WheelEvent('wheel',"
      " {deltaY: -100, clientX: 400, clientY: 400, bubbles: true, cancelable: true}));")
  assert zoom() == pytest.approx(1.8, abs=1e-3)
  _click(browser, "#zoom-fit")
  assert zoom() == 1.0


def test_suggestion_accepted(browser, tmp_path):
  g, truth = supernodes.planted_graph()
  page = graph_html.write_graph_html(g, str(tmp_path / "planted.html"))
  _open(browser, page)
  assert browser.execute_script(
      "return document.querySelectorAll('#suggestion-list > li').length") == 6
  first = supernodes.suggest_supernodes(g)[0]
  browser.execute_script("document.querySelector('[data-suggestion=\"0\"] .sg-name').value ="
                         " 'planted group';")
  _click(browser, "[data-suggestion='0'] .accept")
  nodes, edges = _drawn(browser)
  assert nodes == ["supernode_0"]
  assert browser.execute_script(  # the label is clipped; the full name is the node's title
      "return document.querySelector(\"[data-node-id='supernode_0'] title\").textContent"
  ) == f"planted group [{len(first['members'])}]"
  assert len({truth[m] for m in first["members"]}) == 1  # one planted group
  pinned = browser.execute_script(
      "return [...document.querySelectorAll('#pinned-list li')].map(li => li.dataset.nodeId)")
  assert pinned == first["members"]
  _no_errors(browser)


def _big_graph(n_nodes=2000, n_edges=30000, n_layers=18, n_tokens=12, seed=0):
  rng = np.random.default_rng(seed)
  tokens = [f" tok{i}" for i in range(n_tokens)]
  nodes = [{"id": f"emb_{p}", "kind": "embedding", "layer": -1, "pos": p, "label": t,
            "token": t, "influence": 0.0, "node_rank": 0.0} for p, t in enumerate(tokens)]
  nodes += [{"id": f"logit_{i}", "kind": "logit", "layer": n_layers, "pos": n_tokens - 1,
             "label": f" out{i}", "token": f" out{i}", "prob": 0.5 / (i + 1), "influence": 1.0,
             "node_rank": 0.0} for i in range(5)]
  nodes += [{"id": f"err_{l}_{p}", "kind": "error", "layer": l, "pos": p, "label": f"error L{l}",
             "influence": 0.1, "node_rank": 0.9} for l in range(n_layers) for p in range(n_tokens)]
  for i in range(n_nodes - len(nodes)):
    l, p = int(rng.integers(n_layers)), int(rng.integers(n_tokens))
    nodes.append({"id": f"f_{l}_{p}_{i}", "kind": "feature", "layer": l, "pos": p,
                  "feature": i, "label": f"feature label {i}", "activation": 1.0,
                  "influence": float(rng.random()), "node_rank": float(rng.random())})
  layer = np.array([n["layer"] for n in nodes])
  pairs = rng.integers(len(nodes), size=(4 * n_edges, 2))
  pairs = pairs[layer[pairs[:, 0]] < layer[pairs[:, 1]]]  # upward only (never into embeddings)
  _, first = np.unique(pairs, axis=0, return_index=True)
  edges = [tuple(int(x) for x in pairs[i]) for i in np.sort(first)[:n_edges]]
  return {"format": graph_html.FORMAT, "prompt": "big", "tokens": tokens, "n_layers": n_layers,
          "scores": {"replacement": 0.5, "completeness": 0.5}, "nodes": nodes,
          "edges": [{"source": nodes[a]["id"], "target": nodes[b]["id"], "weight": w,
                     "edge_rank": r}
                    for (a, b), w, r in zip(edges, rng.standard_normal(len(edges)).tolist(),
                                            rng.random(len(edges)).tolist())]}


def test_render_time_2000_nodes_30000_edges(browser, tmp_path):
  g = _big_graph()
  assert len(g["nodes"]) == 2000 and len(g["edges"]) == 30000
  page = graph_html.write_graph_html(g, str(tmp_path / "big.html"), suggestions=[])
  t0 = time.perf_counter()
  _open(browser, page)
  wall = time.perf_counter() - t0
  first_ms = float(browser.execute_script("return document.body.dataset.renderMs"))
  t0 = time.perf_counter()  # one render of the whole graph, until the frame after it
  browser.execute_async_script(
      "const done = arguments[0];"
      "for (const w of ['node', 'edge']) document.getElementById(w + '-threshold').value = '1';"
      "document.getElementById('mode-threshold').click();"
      "requestAnimationFrame(() => requestAnimationFrame(() => done()));")
  pruned_s = time.perf_counter() - t0
  assert _counts(browser)[:3] == [2000, 30000, 2000]
  print(f"2,000 nodes / 30,000 edges: first view {first_ms:.0f} ms after navigation start "
        f"(driver.get {wall:.2f} s); whole graph (2,000 nodes, strongest "
        f"{_counts(browser)[3]} edges drawn) {pruned_s:.2f} s")
  assert first_ms < 5000 and pruned_s < 5
  _no_errors(browser)


def test_screenshot_for_the_report(browser, example_page, tmp_path):
  from interp.viz import browser as viz_browser
  png, message = viz_browser.screenshot_page(example_page, str(tmp_path / "shot" / "g.png"),
                                             width=1200, height=800, driver=browser)
  assert png and "headless Chromium" in message
  with open(png, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n"
  # The PNG's size is the viewport asked for.
  assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (1200, 800)
