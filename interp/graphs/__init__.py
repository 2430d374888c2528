"""Attribution graphs on local replacement models (Ameisen et al., 2025, "Circuit Tracing").

Vocabulary: replacement model, nodes, edges, pruning and scores are defined in `attribute`
and the modules it names.

Modules:
  linear         the local replacement model (frozen patterns and norms, transcoder MLPs,
                 error nodes)
  build          edge weights by chunked, vmapped VJPs over the mesh
  prune          influence, pruning, replacement and completeness scores (numpy)
  attribute      `GraphConfig`, `Graph` and `build`: one prompt's graph
  validate       steering in the real model against the graph, attention-score attribution
  heads          per node, the heads that carry its input from other positions and their
                 scores' query- and key-side sources (the viewer's "why attention moved it")
  export         the graph as JSON for the viewer (`interp.viz.graph_html`), feature contexts
  experiment     model + transcoder + prompt -> graph.json, graph.html, results.json: the
                 library behind `experiments/attribution_graph.py`
  suite_entries  its figure-suite entry
"""
