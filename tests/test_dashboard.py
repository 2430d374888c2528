"""Feature dashboards: the data against numpy counts on a tiny model, and the page in headless
Chromium (the Selenium fixture of tests/test_graph_viewer.py)."""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.circuits import weights
from interp.graphs import experiment as graph_experiment
from interp.models import config as model_config
from interp.models import transformer
from interp.sae import dashboard as dash
from interp.sae import dictionary as dic
from interp.sae import evaluate as ev
from interp.sae import transcoder as tc
from interp.sae import transcoder_eval
from interp.sae.config import SAEConfig
from interp.viz import browser as browser_lib
from interp.viz import dashboard_html, report
from tests.test_graph_format import SCRIPT_TOKEN
from tests.test_graph_viewer import browser  # noqa: F401  (the module's Chromium fixture)

SITE = "blocks.0.hook_resid_post"
D, D_SAE, N_SEQ, CTX = 16, 48, 6, 10
CONFIG = ev.EvalConfig(batch_size=4, mean_ablation=False, dashboard_latents=6, top_m=3,
                       context_before=2, context_after=1, hist_bins=8, hist_decades=2.0,
                       quantile_bands=3, band_samples=2, promoted_k=4)


@pytest.fixture(scope="module")
def model():
  cfg = model_config.gpt2(vocab_size=40, n_ctx=CTX, d_model=D, n_layers=2, n_heads=2, d_head=8,
                          d_mlp=32, init_std=0.2)
  params = jax.jit(transformer.init_params, static_argnums=0)(cfg, jax.random.key(0))
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (N_SEQ, CTX)).astype(np.int32)
  return cfg, params, tokens


@pytest.fixture(scope="module")
def cache(model):
  """Every activation the references read, from one forward (float64)."""
  cfg, params, tokens = model
  sites = [SITE, "ln_final.hook_scale", *tc.sites(cfg)[0]]
  _, out = transformer.run_with_cache(cfg, params, jnp.asarray(tokens), sites)
  return {s: np.asarray(out[s], np.float64) for s in sites}


def _check_latent(entry, acts, tokens, config, start=1):
  """One latent's dashboard against its activations acts [n ctx] (float64 numpy)."""
  acts = acts.copy()
  acts[:, :start] = 0.0
  fired = acts > 0
  n_tok = acts.shape[0] * (acts.shape[1] - start)
  assert entry["fired"] == int(fired.sum())
  assert entry["density"] == pytest.approx(fired.sum() / n_tok)
  assert entry["mean_activation"] == pytest.approx(acts[fired].mean(), rel=1e-4)
  edges = np.asarray(entry["histogram"]["edges"], np.float32)
  want = np.bincount(np.searchsorted(edges[1:-1], acts[fired], side="right"),
                     minlength=config.hist_bins)
  assert entry["histogram"]["counts"] == want.tolist() and sum(want) == entry["fired"]
  flat = acts.reshape(-1)
  top = np.argsort(-flat, kind="stable")[:config.top_m]
  got = [(c["sequence"], c["position"]) for c in entry["contexts"]]
  assert got == [divmod(int(i), acts.shape[1]) for i in top if flat[i] > 0]
  assert entry["max_activation"] == pytest.approx(flat.max(), rel=1e-4)
  for ctx in entry["contexts"]:
    s, lo = ctx["sequence"], ctx["window_start"]
    np.testing.assert_allclose(ctx["acts"], acts[s, lo:lo + len(ctx["tokens"])], rtol=1e-4,
                               atol=1e-5)
    assert ctx["tokens"] == tokens[s, lo:lo + len(ctx["tokens"])].tolist()
  bands = config.quantile_bands
  for b, band in enumerate(entry["bands"]):
    lo, hi = flat.max() * b / (bands + 1), flat.max() * (b + 1) / (bands + 1)
    inside = int(((flat > lo) & (flat <= hi)).sum())
    assert len(band["contexts"]) == min(config.band_samples, inside)
    where = {(c["sequence"], c["position"]) for c in band["contexts"]}
    assert len(where) == len(band["contexts"])  # drawn without replacement
    for c in band["contexts"]:
      assert lo * (1 - 1e-5) < acts[c["sequence"], c["position"]] <= hi * (1 + 1e-5)


def _check_promoted(entry, cfg, params, cache, direction, k):
  # The final norm frozen at the mean of 1 / its divisor over the evaluated tokens.
  scale = cache["ln_final.hook_scale"][:, 1:]
  d = np.asarray(direction, np.float64) * np.mean(1.0 / scale)
  d = d - d.mean()  # LayerNorm's mean removal
  w_u = np.asarray(weights.unembedding(cfg, params, fold_norms=True), np.float64)
  np.testing.assert_allclose(dash._unembedding(cfg, params), w_u, rtol=1e-6)
  logits = d @ w_u
  up, down = np.argsort(-logits)[:k], np.argsort(logits)[:k]
  assert [t["token"] for t in entry["promoted"]] == up.tolist()
  assert [t["token"] for t in entry["suppressed"]] == down.tolist()
  np.testing.assert_allclose([t["value"] for t in entry["promoted"]], logits[up], rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose([t["value"] for t in entry["suppressed"]], logits[down],
                             rtol=1e-4, atol=1e-6)


def test_sae_dashboard_data_matches_numpy(model, cache, tmp_path):
  cfg, params, tokens = model
  x = cache[SITE]
  sae_cfg = SAEConfig(d_in=D, d_sae=D_SAE, activation="relu")
  sae = dic.init(sae_cfg, jax.random.key(1), jnp.asarray(x.reshape(-1, D), jnp.float32))
  sae["b_enc"] = sae["b_enc"].at[:3].set(-1e3)  # dead: never chosen
  res = ev.evaluate(cfg, params, SITE, sae_cfg, sae, tokens, CONFIG,
                    decode=lambda ids: "".join(chr(65 + t) for t in ids))
  p = {k: np.asarray(v, np.float64) for k, v in sae.items()}
  acts = np.maximum((x * p["norm_scale"] - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0.0)
  acts[:, 0] = 0.0
  fired = (acts > 0).sum((0, 1))
  order = [int(i) for i in np.argsort(-fired, kind="stable") if fired[i] > 0][:6]
  assert [e["latent"] for e in res.dashboard] == order
  for e in res.dashboard:
    _check_latent(e, acts[..., e["latent"]], tokens, CONFIG)
    _check_promoted(e, cfg, params, cache, p["W_dec"][e["latent"]] / p["norm_scale"], 4)
    assert e["contexts"][0]["token_strs"] == [chr(65 + t) for t in e["contexts"][0]["tokens"]]
  path = ev.write_dashboard_data(str(tmp_path / "dashboard.json"), res)
  data = json.loads(open(path).read())
  assert data["latents"][0]["histogram"]["counts"] == res.dashboard[0]["histogram"]["counts"]
  page = dashboard_html.write_dashboard_html(data, str(tmp_path / "dashboard.html"))
  assert os.path.getsize(page) > 1000


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_transcoder_dashboard_data_matches_numpy(model, cache, kind, tmp_path, monkeypatch):
  cfg, params, tokens = model
  tc_cfg = tc.TranscoderConfig(kind=kind, n_layers=2, d_model=D, d_latent=12, k=3)
  tc_params = tc.init(tc_cfg, jax.random.key(2))
  tc_params["out_scale"] = jnp.asarray([2.0, 0.5])  # unfolded scales must be divided out
  ins, _ = tc.sites(cfg)
  x_in = np.stack([cache[s] for s in ins], 2)
  acts = np.asarray(tc.encode(tc_cfg, tc_params, jnp.asarray(x_in, jnp.float32)), np.float64)
  # The attribution-graph run's settings (one batch of <= 8 sequences), so its call below
  # reuses these compiled programs.
  config = ev.EvalConfig(batch_size=N_SEQ, dashboard_latents=3)
  monkeypatch.setattr(graph_experiment, "DASHBOARD_LATENTS", 3)
  want = []
  for l in range(2):
    fired = (acts[:, 1:, l] > 0).sum((0, 1))
    order = [(l, int(i)) for i in np.argsort(-fired, kind="stable") if fired[i] > 0]
    want += order[:3]
  assert len(order) > 4
  include = [order[4], order[0]]  # a graph's features: one more, one already shown
  out = transcoder_eval.dashboards(cfg, params, tc_cfg, tc_params, tokens, config,
                                   include=include)
  assert [(e["layer"], e["latent"]) for e in out] == want + [order[4]]
  w = np.asarray(tc_params["W_dec"], np.float64)
  scale = np.asarray(tc_params["out_scale"], np.float64)
  for e in out:
    l, i = e["layer"], e["latent"]
    _check_latent(e, acts[:, :, l, i], tokens, config)
    if kind == "clt":  # what it writes to layers l.. L-1, each in model units
      direction = sum(w[l, i, t] / scale[t] for t in range(l, 2))
    else:
      direction = w[l, i] / scale[l]
    _check_promoted(e, cfg, params, cache, direction, config.promoted_k)
  # What the attribution-graph run writes: every layer on one page.
  page = graph_experiment._write_dashboard(cfg, params, tc_cfg, tc_params, tokens,
                                           lambda t: chr(65 + t), "tiny", str(tmp_path),
                                           include)
  data = json.loads((tmp_path / "dashboard.json").read_text())
  for e in out:  # the same numbers; the run decodes its tokens
    for c in [*e["contexts"], *[c for b in e["bands"] for c in b["contexts"]]]:
      c.update(text="".join(chr(65 + t) for t in c["tokens"]),
               token_strs=[chr(65 + t) for t in c["tokens"]])
    for item in [*e["promoted"], *e["suppressed"]]:
      item["str"] = chr(65 + item["token"])
  assert data["latents"] == json.loads(json.dumps(out)) and os.path.exists(page)
  assert data["latents"][0]["contexts"][0]["text"] == "".join(
      data["latents"][0]["contexts"][0]["token_strs"])


# ----- The page in headless Chromium.

def _data():
  data = dashboard_html.example_dashboard()
  data["latents"][2]["contexts"][0]["token_strs"][2] = SCRIPT_TOKEN  # its top token
  data["latents"][2]["promoted"][0]["str"] = SCRIPT_TOKEN
  data["site"] = "<b>site</b>"
  return data


def test_page_is_self_contained_and_escaped():
  page = dashboard_html.render_dashboard_html(_data())
  assert "<link" not in page and "src=" not in page and "default-src 'none'" in page
  assert len(re.findall(r"<script\b", page)) == 2 and "<b>site" not in page
  with pytest.raises(ValueError, match=r"latents\[0\] is missing key 'contexts'"):
    dashboard_html.render_dashboard_html({"latents": [{"latent": 1, "density": 0.1,
                                                       "max_activation": 1.0}]})


def _visible(driver):
  return driver.execute_script(
      "return [...document.querySelectorAll('tr.latent-row:not(.hidden)')]"
      ".map(r => Number(r.dataset.key));")


def _set(driver, element_id, value, event):
  driver.execute_script(
      "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
      "el.dispatchEvent(new Event(arguments[2], {bubbles: true}));", element_id, value, event)


def test_dashboard_in_headless_chromium(browser, tmp_path):  # noqa: F811
  data = _data()
  lat = data["latents"]
  page = dashboard_html.write_dashboard_html(data, str(tmp_path / "dashboard.html"))
  browser.get("file://" + page)
  browser.find_element("css selector", "#histogram")
  assert browser.execute_script("return window.__pwned") is None
  assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
  body = browser.execute_script("return document.body.textContent")
  assert SCRIPT_TOKEN in body and "<b>site</b>" in body

  by_density = sorted(range(3), key=lambda i: -lat[i]["density"])
  assert _visible(browser) == by_density
  _set(browser, "sort", "max", "change")
  assert _visible(browser) == sorted(range(3), key=lambda i: -lat[i]["max_activation"])

  browser.get("file://" + page + "#L1-40")  # a graph node's link opens on its latent
  assert browser.find_element("css selector", "#detail h2").text == "Latent L1 #40"
  browser.execute_script("location.hash = '#L0-7'")
  assert browser.find_element("css selector", "#detail h2").text == "Latent L0 #7"
  assert dashboard_html.anchor("dashboard.html", 1, 40) == "dashboard.html#L1-40"
  browser.find_element("css selector", "tr.latent-row[data-key='2']").click()
  assert browser.find_element("css selector", "#detail h2").text == "Latent L1 #40"
  shown = browser.execute_script(
      "return [...document.querySelectorAll('#contexts .context')].map(c =>"
      "  [...c.querySelectorAll('.tok')].map(t => [Number(t.dataset.act), Number(t.dataset.alpha),"
      "   getComputedStyle(t).backgroundColor, t.textContent]));")
  want = lat[2]["contexts"]
  assert len(shown) == len(want)
  peak = lat[2]["max_activation"]
  for got, ctx in zip(shown, want):
    assert [g[0] for g in got] == ctx["acts"]
    alpha = np.clip(np.asarray(ctx["acts"]) / peak, 0, 1)
    np.testing.assert_allclose([g[1] for g in got], alpha, atol=1e-3)
    for g, a in zip(got, alpha):  # the shading really drawn
      rgba = [float(v) for v in re.findall(r"[\d.]+", g[2])]
      assert rgba[:3] == [255, 120, 0] and (rgba[3] if len(rgba) == 4 else 1.0) == (
          pytest.approx(a, abs=3e-3))
  assert shown[0][2][3] == SCRIPT_TOKEN  # a token, as text
  bars = browser.execute_script(
      "return [...document.querySelectorAll('#histogram rect')].map(r => Number(r.dataset.count))")
  assert bars == lat[2]["histogram"]["counts"]
  assert browser.find_element("css selector", "#promoted td").text == SCRIPT_TOKEN

  _set(browser, "search", "dog", "input")
  want = [i for i in range(3)
          if any("dog" in c["token_strs"][c["position"] - c["window_start"]].lower()
                 for c in lat[i]["contexts"])]
  assert sorted(_visible(browser)) == want
  assert browser.find_element("id", "index-count").get_attribute("data-shown") == str(len(want))
  _set(browser, "search", "", "input")
  _set(browser, "layer", "1", "change")
  assert sorted(_visible(browser)) == [i for i in range(3) if lat[i]["layer"] == 1]
  errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors
  # The report's picture of the page, from the same browser.
  png, note = browser_lib.screenshot_page(page, str(tmp_path / "dashboard.png"), 800, 600,
                                          driver=browser)
  assert png and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", note
  if os.environ.get("INTERP_DASHBOARD_SCREENSHOT"):  # for a person checking the layout
    browser.save_screenshot(os.environ["INTERP_DASHBOARD_SCREENSHOT"])


def test_report_links_pages_by_relative_path(tmp_path):
  page = dashboard_html.write_dashboard_html(_data(), str(tmp_path / "sae" / "dashboard.html"))
  path = report.write_report(str(tmp_path), [report.Section(
      title="SAE", links=[("feature dashboards", page)])])
  assert "- [feature dashboards](sae/dashboard.html)" in open(path).read().splitlines()
