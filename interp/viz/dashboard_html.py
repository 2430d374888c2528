"""Feature dashboards as one self-contained HTML page per dictionary.

Vocabulary (the data `interp.sae.evaluate.write_dashboard_data` and
`interp.sae.transcoder_eval.dashboards` produce; defined in `interp.sae.dashboard`):
  latent     one entry of `latents`: {latent, layer (transcoders, CLTs), density, fired,
             mean_activation, max_activation, histogram {edges, counts}, contexts, bands,
             promoted, suppressed}; only latent, density, max_activation and contexts are
             required (older dashboard.json files have no more).
  context    {tokens, acts, position, window_start, activation, token_strs (when decoded)}.

The page (`render_dashboard_html`) has an index of latents (`#search` filters by the tokens
they fire most on, `#sort` orders by density, maximum activation or id, `#layer` picks a layer
when there are several) and the selected latent's details (`anchor`: a link that opens the page
on one latent, as the graph viewer's feature nodes do): its activation histogram as inline
SVG, the tokens it promotes and suppresses, its top contexts and samples from lower bands, each
token shaded in proportion to its activation over the latent's maximum. Per-layer transcoders
and CLTs get one page per dictionary with the layer selector. Like the graph viewer
(`interp.viz.graph_html`), it loads nothing from the network, embeds the data as escaped JSON,
runs only its own script (by hash, under a Content-Security-Policy) and writes every string
through `textContent`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os

from interp.viz import graph_html

_LATENT_REQUIRED = ("latent", "density", "max_activation", "contexts")
_CONTEXT_REQUIRED = ("tokens", "acts", "position", "window_start")


def anchor(page: str, layer: int | None, latent: int) -> str:
  """The link that opens `page` on one latent: `page#L<layer>-<latent>`, or `page#<latent>`."""
  return f"{page}#{'' if layer is None else f'L{int(layer)}-'}{int(latent)}"


def validate_dashboard(data: dict, source: str = "dashboard") -> None:
  """Raises ValueError naming `source` and the key when `data` cannot be shown.

  Args:
    data: the dashboard dict ({..., latents: [...]}).
    source: how to name it in messages (a file path, say).
  """
  if not isinstance(data, dict) or not isinstance(data.get("latents"), list):
    raise ValueError(f"{source}: needs a 'latents' list")
  for i, lat in enumerate(data["latents"]):
    for key in _LATENT_REQUIRED:
      if not isinstance(lat, dict) or key not in lat:
        raise ValueError(f"{source}: latents[{i}] is missing key {key!r}")
    for j, ctx in enumerate(lat["contexts"]):
      for key in _CONTEXT_REQUIRED:
        if key not in ctx:
          raise ValueError(f"{source}: latents[{i}].contexts[{j}] is missing key {key!r}")
      if len(ctx["tokens"]) != len(ctx["acts"]):
        raise ValueError(f"{source}: latents[{i}].contexts[{j}] has {len(ctx['tokens'])} "
                         f"tokens but {len(ctx['acts'])} acts")


def render_dashboard_html(data: dict, title: str | None = None) -> str:
  """The dashboard page for `data`, with its script, style and data inline.

  Args:
    data: dashboard data (see the module doc); validated here.
    title: the page's heading (default: "Feature dashboard: <site>").
  Returns:
    The HTML document as a string.
  """
  validate_dashboard(data)
  title = title or f"Feature dashboard: {data.get('site', '')}"
  script = "\n" + graph_html._asset("dashboard.js")  # pylint: disable=protected-access
  digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
  # As in the graph viewer: no network, and only our own script (by hash) may run.
  csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'"
  payload = dict(data, title=title)
  return "\n".join([
      "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
      f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
      f"<title>{html.escape(title)}</title>",
      f"<style>\n{graph_html._asset('dashboard.css')}</style>",  # pylint: disable=protected-access
      "</head>", "<body>",
      f"<noscript>{html.escape(title)} (this page needs JavaScript).</noscript>",
      f'<script type="application/json" id="dashboard-data">{graph_html.embed_json(payload)}'
      "</script>", f"<script>{script}</script>", "</body>", "</html>", ""])


def write_dashboard_html(data: dict, path: str, title: str | None = None) -> str:
  """Writes the dashboard page for `data` to `path` (one file, nothing else).

  Args:
    data: dashboard data (see the module doc).
    path: the .html file; parent folders are created; written whole or not at all.
    title: the page's heading.
  Returns:
    The path written.
  """
  page = render_dashboard_html(data, title)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(page)
  os.replace(tmp, path)
  return path


def example_dashboard() -> dict:
  """A small valid dashboard (two layers, three latents) for demos and tests.

  Returns:
    Dashboard data with every optional field.
  """
  words = ["The", " cat", " sat", " on", " the", " mat", ".", "\n", " A", " dog"]

  def ctx(start, hot, peak):
    toks = list(range(start, start + 5))
    acts = [round(peak * (1.0 if i == hot else 0.15 * (i % 3)), 3) for i in range(5)]
    return {"sequence": start, "position": start + hot, "window_start": start,
            "activation": acts[hot], "tokens": toks, "acts": acts,
            "token_strs": [words[t % len(words)] for t in toks],
            "text": "".join(words[t % len(words)] for t in toks)}

  def latent(lat, layer, density, peak, first):
    return {"latent": lat, "layer": layer, "density": density, "fired": int(density * 1e4),
            "mean_activation": peak / 3, "max_activation": peak,
            "histogram": {"edges": [peak * 10 ** (-3 + 0.5 * i) for i in range(7)],
                          "counts": [1, 3, 8, 20, 12, 5]},
            "contexts": [ctx(first + s, 2, peak * (1 - 0.1 * s)) for s in range(3)],
            "bands": [{"low": peak * b / 4, "high": peak * (b + 1) / 4,
                       "contexts": [ctx(5 + b, 1, peak * (b + 0.5) / 4)]} for b in range(3)],
            "promoted": [{"token": t, "value": 1.0 - 0.1 * t, "str": words[t]} for t in range(3)],
            "suppressed": [{"token": t, "value": -0.5 * t, "str": words[t]} for t in (4, 5)]}

  return {"site": "blocks.0.hook_mlp_out", "n_sequences": 16, "context_length": 12,
          "metrics": {"l0": 8.0}, "latents": [latent(7, 0, 0.02, 3.0, 0), latent(2, 1, 0.1, 1.5, 3),
                                              latent(40, 1, 0.005, 6.0, 6)]}
