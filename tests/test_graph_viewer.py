"""The attribution-graph viewer: JSON schema checks, safe embedding, and the page in a real
headless Chromium (Debian's chromium + chromium-driver, driven by Selenium; `make env-dev`
installs them). The browser tests skip only when no chromium binary is on the PATH."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from interp.viz import graph_html
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


# ----- No browser needed.

def test_embedded_json_cannot_close_the_script_element():
  g = _malicious_graph()
  page = graph_html.render_graph_html(g)
  assert "<script>window.__pwned" not in page and "<img src=x" not in page
  # Only our three elements: the JSON block, the viewer script, and nothing injected.
  assert len(re.findall(r"<script\b", page)) == 2 and page.count("</script>") == 2
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
  ]
  for mutate, pattern in cases:
    g = graph_html.example_graph()
    mutate(g)
    with pytest.raises(GraphFormatError, match=pattern):
      graph_html.save_graph_json(g, str(tmp_path / "never.json"))
  assert not (tmp_path / "never.json").exists()


# ----- In headless Chromium.

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


def _set_threshold(driver, which, value):
  driver.execute_script(
      "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
      "el.dispatchEvent(new Event('input', {bubbles: true}));", f"{which}-threshold", str(value))


def _shown(driver):
  return driver.execute_script(
      "const c = document.getElementById('visible-count');"
      "return [document.querySelectorAll('svg g.node:not(.hidden)').length,"
      "        document.querySelectorAll('svg path.edge:not(.hidden)').length,"
      "        Number(c.dataset.nodes), Number(c.dataset.edges)];")


def _expected_edges(g, tn, te):
  keep = {n["id"] for n in g["nodes"] if n["node_rank"] <= tn}
  return sum(e["edge_rank"] <= te and e["source"] in keep and e["target"] in keep
             for e in g["edges"])


def test_viewer_in_headless_chromium(browser, tmp_path):
  g = _malicious_graph()
  page = graph_html.write_graph_html(g, str(tmp_path / "graph.html"))
  browser.get("file://" + page)
  browser.find_element("css selector", "svg g.node")  # rendered at all

  assert browser.execute_script("return window.__pwned") is None
  assert browser.execute_script(
      "return performance.getEntriesByType('resource').length") == 0  # nothing fetched
  text = browser.execute_script("return document.body.textContent")
  assert SCRIPT_TOKEN in text and IMG_TOKEN in text
  assert browser.execute_script("return document.querySelectorAll('img, body > script').length"
                                ) == 2  # our two <script> elements, no injected <img>
  assert browser.find_element("id", "score-replacement").text.endswith("0.710")

  n = len(g["nodes"])
  assert browser.execute_script("return document.querySelectorAll('[data-node-id]').length") == n
  _set_threshold(browser, "node", 1.0)
  _set_threshold(browser, "edge", 1.0)
  assert _shown(browser) == [n, len(g["edges"]), n, len(g["edges"])]
  for tn, te in ((0.5, 1.0), (0.12, 0.5), (0.0, 0.0)):
    _set_threshold(browser, "node", tn)
    _set_threshold(browser, "edge", te)
    want_n = sum(x["node_rank"] <= tn for x in g["nodes"])
    want_e = _expected_edges(g, tn, te)
    assert want_n < n
    assert _shown(browser) == [want_n, want_e, want_n, want_e], (tn, te)

  _set_threshold(browser, "node", 1.0)
  _set_threshold(browser, "edge", 1.0)
  feat = next(x for x in g["nodes"] if x["kind"] == "feature")
  tip = browser.find_element("id", "tooltip")
  assert not tip.is_displayed()
  browser.execute_script(
      "document.querySelector(`[data-node-id='${arguments[0]}']`)"
      ".dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));", feat["id"])
  assert tip.is_displayed()
  assert f"Feature {feat['feature']}" in tip.text and f"L{feat['layer']}" in tip.text
  assert " big" in tip.text and "activation" in tip.text
  assert tip.find_element("css selector", ".tok.max").text == " Texas"
  browser.save_screenshot(str(tmp_path / "graph.png"))
  assert (tmp_path / "graph.png").stat().st_size > 1000
  if os.environ.get("INTERP_VIEWER_SCREENSHOT"):  # for a person checking the layout
    browser.save_screenshot(os.environ["INTERP_VIEWER_SCREENSHOT"])

  errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors
