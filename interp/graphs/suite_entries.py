"""An attribution graph in the figure suite (`interp.figures`): "The capital of France is" on
Gemma 3 270M with briefly trained per-layer skip transcoders (`interp.graphs.experiment`).

The transcoders' settings were chosen by replacement score per CPU-minute (200 steps x 512
tokens each; measured 2026-12-06, BOS held as circuit-tracer does / not held): per-layer TopK
at lr 1e-3 0.354 / 0.208; lr 3e-3 0.396 / 0.247; skip transcoders (Paulo et al. 2025: a linear
path beside the sparse one, so the error nodes carry less) at lr 1e-3 0.454 / 0.306 and at
lr 3e-3 0.474 / 0.336, the one used. Serving each harvested token twice for 300 steps
(`--buffer_reuse=2`) gave 0.472 / 0.347 at 1.2x the time.

`make dictionaries` (`train_longer`) trains the same transcoders for `LONGER_STEPS` into
`<suite workdir>/dictionaries/graph_gemma/`; once that run has finished, the entry builds its
graph on those instead of training its own.
"""

from __future__ import annotations

import os

from interp import jsonio
from interp.graphs import attribute
from interp.graphs import experiment as graph_experiment
from interp.models import zoo
from interp.sae import transcoder as tc
from interp.viz import browser
from interp.viz.report import Registry, Section

ENTRIES = Registry()

# Steps of the suite's own transcoder training and of `make dictionaries`' longer one.
STEPS, LONGER_STEPS = 200, 1000
QUICK_STEPS, QUICK_LONGER_STEPS = 20, 40


def longer_folder(workdir: str) -> str:
  """The transcoder run folder `make dictionaries` writes for the entry whose run folder is
  `workdir` (`<suite workdir>/graph_gemma`)."""
  return os.path.join(os.path.dirname(os.path.abspath(workdir)), "dictionaries", "graph_gemma",
                      "transcoder")


def finished_run(folder: str, want: tc.TranscoderConfig) -> dict | None:
  """The results of a transcoder run folder that finished training `want`; None while it is
  missing or unfinished, or when it holds other transcoders (e.g. a --quick run's)."""
  path = os.path.join(folder, "results.json")
  if not os.path.exists(path):
    return None
  results = jsonio.read_json(path)
  held = tc.TranscoderConfig.from_dict(
      jsonio.read_json(os.path.join(folder, "transcoder_config.json")))
  return results if results.get("status") == "completed" and held == want else None


def run_config(workdir: str, quick: bool, transcoder_dir: str = "",
               num_steps: int | None = None) -> graph_experiment.GraphRunConfig:
  """The entry's run: Gemma 3 270M, its skip transcoders trained here for `num_steps` (default
  `STEPS`) or loaded from `transcoder_dir`."""
  if num_steps is None:
    num_steps = QUICK_STEPS if quick else STEPS
  return graph_experiment.GraphRunConfig(
      model="gemma3_270m", prompt="The capital of France is", workdir=workdir,
      transcoder_dir=transcoder_dir, mesh="data:1,model:1",
      transcoder=tc.TranscoderConfig(kind="skip", n_layers=18, d_model=640,
                                     d_latent=256 if quick else 1024, k=16),
      num_steps=num_steps, batch_size=256 if quick else 512, lr=3e-3,
      graph=attribute.GraphConfig(max_feature_nodes=256 if quick else 1024),
      context_sequences=8 if quick else 32)


def train_longer(workdir: str, quick: bool) -> dict:
  """`make dictionaries`: the entry's transcoders trained for `LONGER_STEPS` (same widths,
  batch and rate) into `longer_folder`; a rerun resumes or, when finished, reuses them.
  Returns the training results."""
  folder = longer_folder(workdir)
  cfg = run_config(workdir, quick, num_steps=QUICK_LONGER_STEPS if quick else LONGER_STEPS)
  _, _, results = graph_experiment.train_transcoders(
      cfg, zoo.load(zoo.ModelSpec.parse(cfg.model)), folder)
  return results


@ENTRIES.register("graph_gemma")
def graph_gemma(workdir: str, quick: bool) -> Section:
  longer = longer_folder(workdir)
  longer_run = finished_run(longer, run_config(workdir, quick).transcoder)
  config = run_config(workdir, quick, transcoder_dir=longer if longer_run else "")
  prompt = config.prompt
  r = graph_experiment.run(config)
  # Trained by `make dictionaries` and loaded here, or trained by this run.
  training = longer_run["final"] if longer_run else r["transcoder_training"]
  steps = longer_run["step"] if longer_run else config.num_steps
  s, st = r["scores"], r["steering"]
  top = ", ".join(f"{l['token']!r} {l['prob']:.2f}" for l in r["logits"][:3])
  rows = [("prompt; top next tokens", f"{prompt!r}; {top}", "' Paris'"),
          (f"transcoders: per-layer skip, TopK (k 16), {steps} steps"
           f"{' (make dictionaries)' if longer_run else ''}; training FVU per layer (mean of 18)",
           f"{(training or {}).get('fvu', float('nan')) / 18:.3f}", "-"),
          ("replacement score; completeness score (the BOS position held constant, as "
           "circuit-tracer does)", f"{s['replacement']:.3f}; {s['completeness']:.3f}",
           "1 for a perfect transcoder"),
          ("nodes / edges: unpruned; pruned at 0.8 / 0.98",
           f"{r['unpruned']['nodes']} / {r['unpruned']['edges']}; "
           f"{r['pruned_default']['nodes']} / {r['pruned_default']['edges']}", "-"),
          ("steering the top features off: predicted vs observed effect on the top logit",
           ", ".join(f"{k} {v:.2f}" for k, v in st.items() if isinstance(v, float)), "r near 1"),
          ("graph construction (s)", f"{r['timings']['build_s']:.1f}", "-"),
          (f"nodes with per-head attention data (the strongest, at most "
           f"{config.graph.head_nodes}); their cost (s)",
           f"{r['head_nodes']}; {r['timings']['heads_s']:.1f}", "-")]
  # What a reader first sees in the viewer: the strongest paths into the top logit.
  png, shot = browser.screenshot_page(os.path.join(workdir, "graph.html"),
                                      os.path.join(workdir, "graph_viewer.png"))
  # The per-head panel of the strongest node that has one, opened by a link to it.
  graph = jsonio.read_json(os.path.join(workdir, "graph.json"))
  with_heads = [n for n in graph["nodes"] if n.get("heads")]
  heads_png, heads_shot = None, "no node has per-head data"
  if with_heads:
    node = max(with_heads, key=lambda n: n["influence"] + (n["prob"] or 0.0))
    h = node["heads"][0]
    heads_png, heads_shot = browser.screenshot_page(
        os.path.join(workdir, f"graph.html#node={node['id']}&head={h['layer']}.{h['head']}"),
        os.path.join(workdir, "graph_heads.png"))
  dash_png, dash_shot = browser.screenshot_page(os.path.join(workdir, "dashboard.html"),
                                                os.path.join(workdir, "dashboard.png"))
  return Section(title="An attribution graph on Gemma 3 270M (factual recall)",
                 summary="Per-layer skip transcoders trained briefly on the built-in corpus "
                         "replace the MLPs (their linear skip path stays live, so attribution "
                         "flows through it); attention patterns and norm scales are frozen from "
                         "the real pass; error nodes make the logits exact; the BOS position's "
                         "MLP outputs are held constant (no feature or error nodes there). The "
                         "viewer is graph.html "
                         "(self-contained; open it in a browser: it opens on the strongest paths "
                         "into the top logit; click a node for its ranked edges, trace, pin and "
                         "group; its panel's \"why attention moved it\" lists, for the strongest "
                         "nodes, the heads that carry their input from other positions and each "
                         "head's query- and key-side sources); dashboard.html shows the "
                         "transcoders' features, one layer at a time. Figures: "
                         f"{shot}; {heads_shot} (a node's per-head panel); {dash_shot}.",
                 figures=[x for x in (png, heads_png, dash_png) if x], rows=rows,
                 links=[("attribution graph viewer", os.path.join(workdir, "graph.html")),
                        ("transcoder feature dashboards",
                         os.path.join(workdir, "dashboard.html"))])
