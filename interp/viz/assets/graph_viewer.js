// Attribution-graph viewer, part 2: the page. Reads #graph-data (the graph) and #viewer-data
// (supernode proposals, a saved state), draws the current view as SVG, and keeps the sidebar.
// Data reaches the page only through textContent / setAttribute, never innerHTML.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const graph = JSON.parse(document.getElementById("graph-data").textContent);
  const extra = JSON.parse(document.getElementById("viewer-data").textContent);
  const G = GraphModel.index(graph), nLayers = graph.n_layers, tokens = graph.tokens;
  const thresholds = Object.assign({node: 0.8, edge: 0.98}, graph.thresholds || {});
  const MAX_DRAWN = 2000;  // edges drawn at once; the counts always cover every edge
  const st = {mode: "paths", selected: null, extra: new Set(), trace: null, pinned: [],
              supernodes: [], vb: null, full: null};
  const $ = id => document.getElementById(id);

  function el(tag, attrs, text, parent) {
    const ns = ["svg", "g", "path", "circle", "rect", "text", "title", "line"].includes(tag);
    const e = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }
  const fmt = (x, d) => x === null || x === undefined ? "–" : Number(x).toFixed(d);
  const show = t => String(t).replace(/\n/g, "↵").replace(/\t/g, "⇥");
  const clip = (s, n) => { s = show(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; };
  function nodeName(n) {
    if (n.kind === "feature") return n.label === `L${n.layer}/${n.feature}` ?
      `${n.label} @${n.pos}` : `${n.label} (L${n.layer}/${n.feature} @${n.pos})`;
    if (n.kind === "error") return `error L${n.layer} @${n.pos} ${show(tokens[n.pos])}`;
    if (n.kind === "supernode") return `${n.label} [${n.members.length}]`;
    return `${n.kind} ${show(n.token ?? n.label)} @${n.pos}`;
  }
  function twoLines(s, n) {
    if (s.length <= n) return [s, ""];
    let cut = s.lastIndexOf(" ", n);
    if (cut < n / 2) cut = n;
    return [s.slice(0, cut), clip(s.slice(cut).trim(), n)];
  }
  const shortName = n => n.kind === "error" ? `err L${n.layer}` : n.label;

  // ----- Header: title, scores, view modes, thresholds, search, zoom, counts.
  const head = el("header", {}, null, document.body);
  el("h1", {}, graph.prompt, head);
  const meta = el("div", {class: "meta"}, null, head);
  el("span", {}, "model: " + (graph.model || "–"), meta);
  el("span", {}, "transcoder: " + (graph.transcoder || "–"), meta);
  el("span", {id: "score-replacement"}, "replacement score: " + fmt(graph.scores.replacement, 3),
     meta);
  el("span", {id: "score-completeness"}, "completeness score: " +
     fmt(graph.scores.completeness, 3), meta);
  const bar = el("div", {class: "controls"}, null, head);
  const modes = el("span", {class: "modes"}, null, bar);
  for (const [m, text] of [["paths", "Top paths"], ["threshold", "Pruned graph"],
                           ["subgraph", "Pinned subgraph"]]) {
    const b = el("button", {id: "mode-" + m, type: "button"}, text, modes);
    b.addEventListener("click", () => { st.mode = m; st.trace = null; render(true); });
  }
  const kLab = el("label", {for: "paths-k"}, "paths: nodes ", bar);
  const pathsK = el("input", {type: "number", id: "paths-k", min: "3", max: "500",
                              value: "25"}, null, kLab);
  pathsK.addEventListener("change", () => { st.mode = "paths"; render(true); });
  const inputs = {};
  for (const which of ["node", "edge"]) {
    const lab = el("label", {for: which + "-threshold"}, which + " threshold ", bar);
    inputs[which] = el("input", {type: "range", id: which + "-threshold", min: "0", max: "1",
                                 step: "0.01", value: String(thresholds[which])}, null, lab);
    inputs[which].valueLabel = el("output", {id: which + "-threshold-value"}, null, lab);
    inputs[which].addEventListener("input", () => { st.mode = "threshold"; render(true); });
  }
  const search = el("input", {type: "search", id: "search", placeholder: "search token / label",
                              autocomplete: "off"}, null, bar);
  for (const [id, text] of [["zoom-in", "+"], ["zoom-out", "−"], ["zoom-fit", "fit"]])
    el("button", {id, type: "button", class: "zoom"}, text, bar);
  const count = el("div", {id: "visible-count"}, null, head);
  el("div", {class: "legend"}, "Blue = positive, red = negative edge; width ∝ |weight|. " +
     "ε n% = share of a node's input from error nodes (not drawn edge by edge). Click a node " +
     "for its edges; wheel to zoom, drag to pan.", head);

  const main = el("div", {class: "main"}, null, document.body);
  const wrap = el("div", {class: "canvas"}, null, main);
  const svg = el("svg", {id: "graph-svg"}, null, wrap);
  const side = el("aside", {class: "side"}, null, main);
  const panel = el("section", {id: "panel"}, null, side);
  el("div", {class: "hint"}, "Select a node to see its edges.", panel);

  // ----- The current view as {nodes, edges}.
  function currentView() {
    if (st.mode === "trace" && st.trace) return st.trace;
    if (st.mode === "subgraph") return GraphModel.grouped(G, st.pinned, st.supernodes);
    if (st.mode === "threshold")
      return GraphModel.threshold(G, Number(inputs.node.value), Number(inputs.edge.value),
                                  st.extra);
    return GraphModel.topPaths(G, Math.max(1, Number(pathsK.value) || 25), st.extra, 4);
  }

  const nodeEls = {};
  let view = null;
  function render(refit) {
    view = currentView();
    for (const w of ["node", "edge"]) inputs[w].valueLabel.textContent =
      Number(inputs[w].value).toFixed(2);
    for (const m of ["paths", "threshold", "subgraph"])
      $("mode-" + m).classList.toggle("on", st.mode === m);
    const L = GraphModel.layout(view.nodes, tokens.length, nLayers, {
      spacing: 88, lineH: 46, perLine: 7, minCol: 74, left: 64, top: 12, right: 16});
    svg.replaceChildren();
    for (const k in nodeEls) delete nodeEls[k];
    const axes = el("g", {class: "axes"}, null, svg);
    for (let layer = -1; layer <= nLayers; layer++) {
      const y = L.rowY[layer];
      el("rect", {x: 0, y, width: L.width, height: L.rowH[layer],
                  class: layer % 2 ? "band odd" : "band"}, null, axes);
      el("text", {x: 8, y: y + L.rowH[layer] / 2 + 4, class: "layer-label"},
         layer < 0 ? "emb" : layer === nLayers ? "logit" : "L" + layer, axes);
    }
    tokens.forEach((tok, p) => {
      const x = L.colX[p] + L.colW[p] / 2, y = L.height + 14;
      const t = el("text", {x, y, class: "token-label", "data-pos": p,
                            transform: `rotate(-30 ${x} ${y})`}, clip(tok, 14), axes);
      el("title", {}, show(tok), t);
    });
    const height = L.height + 90;
    st.full = {x: 0, y: 0, w: L.width, h: height};
    // Edges: error sources are summarised as badges, except in traces and pinned subgraphs
    // and for the selected node; at most MAX_DRAWN, strongest on top.
    const errOk = st.mode === "trace" || st.mode === "subgraph";
    let drawn = view.edges.filter(e => L.pos[e.source] && L.pos[e.target] &&
                                       (errOk || !GraphModel.isErr(G.byId[e.source] || {})));
    const seen = new Set(drawn);
    if (st.selected && L.pos[st.selected])
      for (const e of [...(G.inE[st.selected] || []), ...(G.outE[st.selected] || [])])
        if (!seen.has(e) && L.pos[e.source] && L.pos[e.target]) drawn.push(e);
    drawn.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    drawn = drawn.slice(0, MAX_DRAWN).reverse();
    const maxW = Math.max(1e-12, ...drawn.map(e => Math.abs(e.weight)));
    const edgeLayer = el("g", {class: "edges"}, null, svg);
    for (const e of drawn) {
      const a = L.pos[e.source], b = L.pos[e.target], my = (a.y + b.y) / 2;
      const lit = st.selected && (e.source === st.selected || e.target === st.selected);
      el("path", {d: `M${a.x},${a.y} C${a.x},${my} ${b.x},${my} ${b.x},${b.y}`,
                  class: "edge " + (e.weight >= 0 ? "pos" : "neg") + (lit ? " lit" :
                                                                        st.selected ? " dim" : ""),
                  "stroke-width": (0.6 + 4.5 * Math.abs(e.weight) / maxW).toFixed(2),
                  // Weak edges fade, so the strong ones read through a crowded view.
                  "stroke-opacity": (0.15 + 0.8 * Math.abs(e.weight) / maxW).toFixed(2),
                  "data-source": e.source, "data-target": e.target,
                  "data-weight": e.weight}, null, edgeLayer);
    }
    const nb = new Set();
    if (st.selected) for (const e of [...(G.inE[st.selected] || []), ...(G.outE[st.selected] ||
                                                                        [])]) {
      nb.add(e.source); nb.add(e.target);
    }
    const nodeLayer = el("g", {class: "nodes"}, null, svg);
    for (const n of view.nodes) drawNode(n, L.pos[n.id], nodeLayer, nb);
    const nErr = graph.nodes.filter(GraphModel.isErr).length;
    const drawnErr = view.nodes.filter(GraphModel.isErr).length;
    count.dataset.nodes = view.counted ?? view.nodes.length;
    count.dataset.edges = view.countedEdges ?? view.edges.length;
    count.dataset.drawnNodes = view.nodes.length;
    count.dataset.drawnEdges = drawn.length;
    const what = {paths: "strongest paths into the top logit", threshold: "pruned graph",
                  subgraph: "pinned subgraph", trace: "trace"}[st.mode];
    count.textContent = `${what}: ${count.dataset.nodes} / ${graph.nodes.length} nodes, ` +
      `${count.dataset.edges} / ${graph.edges.length} edges (${drawn.length} drawn; ` +
      `${nErr - drawnErr} error nodes summarised as ε badges)`;
    if (refit || !st.vb) setVB(Object.assign({}, st.full));
    else setVB(st.vb);
    markSearch();
  }

  function drawNode(n, p, parent, nb) {
    const cls = ["node", n.kind];
    if (st.selected === n.id) cls.push("selected");
    else if (st.selected && !nb.has(n.id)) cls.push("dim");
    if (st.pinned.includes(n.id)) cls.push("pinned");
    const g = el("g", {class: cls.join(" "), "data-node-id": n.id,
                       transform: `translate(${p.x},${p.y})`}, null, parent);
    el("title", {}, nodeName(n) + (n.kind === "error" && n.norm != null ?
                                   ` · norm ${fmt(n.norm, 3)}` : ""), g);
    if (n.kind === "embedding" || n.kind === "logit") {
      el("rect", {x: -36, y: -9, width: 72, height: 18, rx: 4}, null, g);
      el("text", {y: 4, class: "in-label"}, clip(n.token ?? n.label, 10), g);
      if (n.kind === "logit") el("text", {y: -13, class: "node-label"}, "p=" + fmt(n.prob, 2), g);
    } else if (n.kind === "supernode") {
      el("rect", {x: -42, y: -10, width: 84, height: 20, rx: 10}, null, g);
      el("text", {y: 4, class: "in-label"}, clip(`${n.label} [${n.members.length}]`, 12), g);
    } else {
      if (n.kind === "error") el("rect", {x: -6, y: -6, width: 12, height: 12,
                                          transform: "rotate(45)"}, null, g);
      else el("circle", {r: 7}, null, g);
      // Two lines of up to 14 characters, broken at a space, so labels that share a long
      // prefix still differ on screen; the full text is the node's title (hover).
      const [a, b] = twoLines(show(shortName(n)), 14);
      el("text", {y: 18, class: "node-label"}, a, g);
      if (b) el("text", {y: 28, class: "node-label"}, b, g);
    }
    const share = G.errIn[n.id] / Math.max(G.inAbs[n.id] || 0, 1e-12);
    const boxed = n.kind === "logit" || n.kind === "embedding";
    if (n.kind !== "supernode" && share >= 0.05)
      el("text", {x: boxed ? 39 : 10, y: boxed ? 4 : -6, class: "err-badge"},
         `ε${Math.round(100 * share)}%`, g);
    g.addEventListener("click", ev => { ev.stopPropagation(); select(n.id); });
    nodeEls[n.id] = g;
  }

  // ----- Zoom and pan on the SVG viewBox.
  function setVB(vb) {
    st.vb = vb;
    svg.setAttribute("viewBox", `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
    svg.dataset.zoom = (st.full.w / vb.w).toFixed(4);
  }
  function zoom(f, cx, cy) {
    const vb = st.vb, w = Math.min(st.full.w * 4, vb.w / f), h = vb.h * w / vb.w;
    cx = cx ?? vb.x + vb.w / 2; cy = cy ?? vb.y + vb.h / 2;
    setVB({x: cx - (cx - vb.x) * w / vb.w, y: cy - (cy - vb.y) * h / vb.h, w, h});
  }
  function toSvg(ev) {
    const r = svg.getBoundingClientRect(), s = Math.max(st.vb.w / r.width, st.vb.h / r.height);
    return {x: st.vb.x + st.vb.w / 2 + (ev.clientX - r.left - r.width / 2) * s,
            y: st.vb.y + st.vb.h / 2 + (ev.clientY - r.top - r.height / 2) * s, s};
  }
  $("zoom-in").addEventListener("click", () => zoom(1.5));
  $("zoom-out").addEventListener("click", () => zoom(1 / 1.5));
  $("zoom-fit").addEventListener("click", () => setVB(Object.assign({}, st.full)));
  svg.addEventListener("wheel", ev => {
    ev.preventDefault();
    const p = toSvg(ev);
    zoom(ev.deltaY < 0 ? 1.2 : 1 / 1.2, p.x, p.y);
  }, {passive: false});
  let drag = null;
  svg.addEventListener("pointerdown", ev => {
    if (ev.target.closest && ev.target.closest(".node")) return;
    drag = {x: ev.clientX, y: ev.clientY, vb: Object.assign({}, st.vb), s: toSvg(ev).s};
  });
  window.addEventListener("pointermove", ev => {
    if (!drag) return;
    setVB(Object.assign({}, drag.vb, {x: drag.vb.x - (ev.clientX - drag.x) * drag.s,
                                      y: drag.vb.y - (ev.clientY - drag.y) * drag.s}));
  });
  window.addEventListener("pointerup", () => { drag = null; });

  // ----- Search over every node (not only the drawn ones): label, token, feature number.
  const results = el("ul", {id: "search-results", class: "results"}, null, head);
  function matches(q) {
    q = q.trim().toLowerCase();
    if (!q) return [];
    return graph.nodes.filter(n => [n.label, n.token, n.feature, n.kind === "embedding" ||
      n.kind === "error" ? tokens[n.pos] : null].some(v => v !== null && v !== undefined &&
                                                     String(v).toLowerCase().includes(q)));
  }
  function markSearch() {
    const found = matches(search.value), ids = new Set(found.map(n => n.id));
    for (const id in nodeEls) nodeEls[id].classList.toggle("match", ids.has(id));
    results.replaceChildren();
    results.dataset.count = found.length;
    for (const n of found.slice(0, 12)) {
      const li = el("li", {"data-node-id": n.id}, nodeName(n), results);
      li.addEventListener("click", () => select(n.id));
    }
  }
  search.addEventListener("input", markSearch);
  search.addEventListener("keydown", ev => {
    const first = matches(search.value)[0];
    if (ev.key === "Enter" && first) select(first.id);
  });

  // ----- Selection: the feature panel, ranked edges, trace, pin.
  function select(id) {
    st.selected = id;
    if (!nodeEls[id] && G.byId[id] && st.mode !== "subgraph") {
      st.extra.add(id);  // a node reached from a list joins the view
      if (st.mode === "trace") st.mode = "paths";
    }
    render(false);
    GraphPanel.fill(panelApi, id);
  }
  svg.addEventListener("click", ev => {
    if (ev.target === svg && st.selected) { st.selected = null; render(false); }
  });
  const panelApi = {G, st, el, fmt, show, clip, nodeName, select, panel, tokens,
    trace(id, dir, depth, k) {
      st.trace = GraphModel.trace(G, id, dir, depth, k);
      st.mode = "trace";
      render(true);
      GraphPanel.fill(panelApi, id);  // now with "pin the trace"
    },
    expand(id) {
      for (const e of [...G.inE[id].slice(0, 8), ...G.outE[id].slice(0, 8)]) {
        st.extra.add(e.source); st.extra.add(e.target);
      }
      if (st.mode !== "threshold") st.mode = "paths";
      render(true);
    },
    rerender: render, graph};
  GraphPanel.setup(panelApi, side, extra);
  render(true);
  // When the first view was drawn, in ms since navigation start (the render-time test reads it).
  document.body.dataset.renderMs = performance.now().toFixed(1);
  // A link may open the page on a node and one of its heads: graph.html#node=ID&head=L.H (the
  // report's screenshot of the per-head panel uses it). Ids are only looked up, never parsed.
  const want = new URLSearchParams(location.hash.slice(1));
  if (G.byId[want.get("node")]) {
    select(want.get("node"));
    const li = [...document.querySelectorAll("#attention .heads li")]
      .find(x => x.dataset.head === want.get("head"));
    if (li) li.click();
  }
})();
