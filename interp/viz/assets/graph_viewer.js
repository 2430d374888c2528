// Attribution-graph viewer: reads the JSON in #graph-data and draws it as inline SVG.
// Data reaches the page only through textContent / setAttribute, never innerHTML.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const graph = JSON.parse(document.getElementById("graph-data").textContent);
  const nLayers = graph.n_layers, tokens = graph.tokens;
  const thresholds = Object.assign({node: 0.8, edge: 0.98}, graph.thresholds || {});

  function el(tag, attrs, text, parent) {
    const ns = ["svg", "g", "line", "path", "circle", "rect", "text", "title"].includes(tag);
    const e = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(x, d) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }
  // Whitespace made visible; the text stays literal (textContent).
  function show(tok) { return String(tok).replace(/\n/g, "↵").replace(/\t/g, "⇥"); }
  function clip(s, n) { s = show(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  // ----- Header: title, scores, controls, counts.
  const head = el("header", {}, null, document.body);
  el("h1", {}, graph.prompt, head);
  const meta = el("div", {class: "meta"}, null, head);
  el("span", {}, "model: " + (graph.model || "–"), meta);
  el("span", {}, "transcoder: " + (graph.transcoder || "–"), meta);
  el("span", {id: "score-replacement"}, "replacement score: " +
     fmt(graph.scores.replacement, 3), meta);
  el("span", {id: "score-completeness"}, "completeness score: " +
     fmt(graph.scores.completeness, 3), meta);
  const controls = el("div", {class: "controls"}, null, head);
  const inputs = {};
  for (const which of ["node", "edge"]) {
    const lab = el("label", {for: which + "-threshold"}, which + " threshold ", controls);
    inputs[which] = el("input", {type: "range", id: which + "-threshold", min: "0", max: "1",
                                 step: "0.01", value: String(thresholds[which])}, null, lab);
    inputs[which].valueLabel = el("output", {id: which + "-threshold-value"}, null, lab);
  }
  const count = el("span", {id: "visible-count"}, null, controls);
  el("div", {class: "legend"}, "Edge colour: blue = positive, red = negative; width ∝ |weight|." +
     " Hover a node for details.", head);

  // ----- Layout: one row per layer (embeddings bottom, logits top), one column per token,
  // each as wide as its most crowded cell needs (the last position usually holds the most).
  const cells = {};
  for (const n of graph.nodes) (cells[n.layer + ":" + n.pos] ||= []).push(n);
  const slot = 22, box = 64, wide = 76, maxPerRow = 20;
  const isBox = n => n.kind === "embedding" || n.kind === "logit";
  // Spacing within a cell: boxes side by side; a few features get room for their labels.
  const spacing = list => isBox(list[0]) ? box + 4 : list.length <= 3 ? wide : slot;
  const colW = tokens.map(() => 96);
  let subRows = 1;
  for (const k in cells) {
    const list = cells[k].sort((a, b) => b.influence - a.influence), p = list[0].pos;
    colW[p] = Math.max(colW[p], Math.min(list.length, maxPerRow) * spacing(list) + 16);
    subRows = Math.max(subRows, Math.ceil(list.length / maxPerRow));
  }
  const rowH = Math.max(64, subRows * slot + 30);
  const left = 70, top = 20, bottom = 110, right = 20;
  const colX = [left];
  colW.forEach((w, p) => colX.push(colX[p] + w));
  const mid = p => colX[p] + colW[p] / 2;
  const width = colX[tokens.length] + right;
  const height = top + (nLayers + 2) * rowH + bottom;
  const pos = {};
  for (const k in cells) {
    const list = cells[k], gap = spacing(list);
    list.forEach((n, i) => {
      const row = Math.floor(i / maxPerRow);
      const inRow = Math.min(maxPerRow, list.length - row * maxPerRow);
      const cx = mid(n.pos) + ((i % maxPerRow) - (inRow - 1) / 2) * gap;
      const cy = top + (nLayers - n.layer + 0.5) * rowH + (row - (subRows - 1) / 2) * slot;
      pos[n.id] = {x: cx, y: cy, labelled: gap === wide};
    });
  }

  const wrap = el("div", {class: "canvas"}, null, document.body);
  const svg = el("svg", {width: width, height: height, viewBox: `0 0 ${width} ${height}`},
                 null, wrap);
  const axes = el("g", {class: "axes"}, null, svg);
  for (let layer = -1; layer <= nLayers; layer++) {
    const y = top + (nLayers - layer + 0.5) * rowH;
    el("line", {x1: left, x2: width - right, y1: y, y2: y, class: "gridline"}, null, axes);
    const name = layer < 0 ? "emb" : layer === nLayers ? "logit" : "L" + layer;
    el("text", {x: left - 10, y: y + 4, class: "layer-label"}, name, axes);
  }
  const baseY = top + (nLayers + 2) * rowH;
  tokens.forEach((tok, p) => {
    const x = mid(p);
    const t = el("text", {x: x, y: baseY + 14, class: "token-label", "data-pos": p,
                          transform: `rotate(-30 ${x} ${baseY + 14})`}, clip(tok, 16), axes);
    el("title", {}, tok, t);
  });

  // ----- Edges (weakest first, so strong ones draw on top), then nodes.
  const byId = {};
  for (const n of graph.nodes) byId[n.id] = n;
  let maxW = 1e-12;
  for (const e of graph.edges) maxW = Math.max(maxW, Math.abs(e.weight));
  const edgeLayer = el("g", {class: "edges"}, null, svg);
  const edgeEls = graph.edges.slice().sort((a, b) => Math.abs(a.weight) - Math.abs(b.weight))
    .map(e => {
      const a = pos[e.source], b = pos[e.target], my = (a.y + b.y) / 2;
      const p = el("path", {d: `M${a.x},${a.y} C${a.x},${my} ${b.x},${my} ${b.x},${b.y}`,
                            class: "edge " + (e.weight >= 0 ? "pos" : "neg"),
                            "stroke-width": (0.5 + 5 * Math.abs(e.weight) / maxW).toFixed(2),
                            "data-source": e.source, "data-target": e.target}, null, edgeLayer);
      p.edge = e;
      return p;
    });
  const nodeLayer = el("g", {class: "nodes"}, null, svg);
  const nodeEls = graph.nodes.map(n => {
    const {x, y, labelled} = pos[n.id];
    const g = el("g", {class: "node " + n.kind, "data-node-id": n.id,
                       transform: `translate(${x},${y})`}, null, nodeLayer);
    if (n.kind === "embedding" || n.kind === "logit") {
      el("rect", {x: -box / 2, y: -9, width: box, height: 18, rx: 4}, null, g);
      el("text", {y: 4, class: "in-label"}, clip(n.token, 9), g);
      if (n.kind === "logit") el("text", {y: -14, class: "node-label"}, "p=" + fmt(n.prob, 2), g);
    } else if (n.kind === "error") {
      el("rect", {x: -6, y: -6, width: 12, height: 12, transform: "rotate(45)"}, null, g);
    } else {
      el("circle", {r: 7}, null, g);
      if (labelled) el("text", {y: 20, class: "node-label"}, clip(n.label, 12), g);
    }
    g.node = n;
    return g;
  });

  // ----- Pruning: nodes with node_rank <= t; edges with edge_rank <= t between shown nodes.
  function update() {
    const tn = Number(inputs.node.value), te = Number(inputs.edge.value);
    inputs.node.valueLabel.textContent = tn.toFixed(2);
    inputs.edge.valueLabel.textContent = te.toFixed(2);
    const shown = new Set();
    for (const g of nodeEls) {
      const on = g.node.node_rank <= tn;
      g.classList.toggle("hidden", !on);
      if (on) shown.add(g.node.id);
    }
    let ne = 0;
    for (const p of edgeEls) {
      const e = p.edge, on = e.edge_rank <= te && shown.has(e.source) && shown.has(e.target);
      p.classList.toggle("hidden", !on);
      ne += on;
    }
    count.dataset.nodes = shown.size;
    count.dataset.edges = ne;
    count.textContent = `${shown.size} / ${nodeEls.length} nodes, ${ne} / ${edgeEls.length}` +
      " edges shown";
  }
  inputs.node.addEventListener("input", update);
  inputs.edge.addEventListener("input", update);

  // ----- Tooltip: built from DOM nodes; the max-activating token of each context is marked.
  const tip = el("div", {id: "tooltip", class: "tooltip hidden", role: "tooltip"}, null,
                 document.body);
  function fillTip(n) {
    tip.replaceChildren();
    const title = n.kind === "feature" ? `Feature ${n.feature} · L${n.layer} · pos ${n.pos}`
      : n.kind === "error" ? `Error · L${n.layer} · pos ${n.pos}`
      : n.kind === "logit" ? `Logit ${show(n.token)} · p=${fmt(n.prob, 3)}`
      : `Embedding · pos ${n.pos}`;
    el("div", {class: "tip-title"}, title, tip);
    if (n.label) el("div", {class: "tip-label"}, n.label, tip);
    if (n.kind === "embedding") el("div", {class: "tip-token"}, show(n.token), tip);
    const stats = [`influence ${fmt(n.influence, 3)}`, `rank ${fmt(n.node_rank, 2)}`];
    if (n.activation !== null && n.activation !== undefined)
      stats.unshift(`activation ${fmt(n.activation, 3)}`);
    el("div", {class: "tip-stats"}, stats.join(" · "), tip);
    for (const c of n.contexts || []) {
      const line = el("div", {class: "context"}, null, tip);
      const vals = c.values || [], peak = Math.max(1e-12, ...vals.map(Math.abs));
      const arg = vals.indexOf(vals.reduce((m, v) => Math.max(m, v), -Infinity));
      c.tokens.forEach((t, i) => {
        const s = el("span", {class: i === arg ? "tok max" : "tok"}, show(t), line);
        const a = Math.max(0, Math.min(1, (vals[i] || 0) / peak));
        s.style.backgroundColor = `rgba(255, 140, 0, ${(0.6 * a).toFixed(3)})`;
      });
    }
  }
  function highlight(id, on) {
    for (const p of edgeEls)
      if (p.edge.source === id || p.edge.target === id) p.classList.toggle("lit", on);
  }
  for (const g of nodeEls) {
    g.addEventListener("mouseover", ev => {
      fillTip(g.node);
      tip.classList.remove("hidden");
      const r = g.getBoundingClientRect();
      tip.style.left = `${window.scrollX + r.right + 8}px`;
      tip.style.top = `${window.scrollY + r.top}px`;
      highlight(g.node.id, true);
    });
    g.addEventListener("mouseout", () => {
      tip.classList.add("hidden");
      highlight(g.node.id, false);
    });
  }
  update();
})();
