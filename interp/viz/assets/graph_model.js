// Attribution-graph viewer, part 1: the views as data (no DOM). Each view is a list of nodes
// and the edges to draw among them; the page lays out and draws only the current view.
const GraphModel = (function () {
  "use strict";
  const abs = Math.abs;
  const isErr = n => n.kind === "error";

  // Adjacency lists, each node's summed |incoming weight| and the share of it from errors.
  function index(graph) {
    const byId = {}, inE = {}, outE = {}, inAbs = {}, errIn = {};
    for (const n of graph.nodes) {
      byId[n.id] = n; inE[n.id] = []; outE[n.id] = []; inAbs[n.id] = 0; errIn[n.id] = 0;
    }
    for (const e of graph.edges) {
      inE[e.target].push(e); outE[e.source].push(e);
      inAbs[e.target] += abs(e.weight);
      if (isErr(byId[e.source])) errIn[e.target] += abs(e.weight);
    }
    const byW = (a, b) => abs(b.weight) - abs(a.weight);
    for (const id in inE) { inE[id].sort(byW); outE[id].sort(byW); }
    const topLogit = graph.nodes.filter(n => n.kind === "logit")
      .sort((a, b) => (b.prob || 0) - (a.prob || 0) || b.influence - a.influence)[0];
    return {graph, byId, inE, outE, inAbs, errIn, topLogit: topLogit ? topLogit.id : null};
  }

  // Path strength into the top logit: s(logit) = 1, s(u) = max over edges u->v of
  // |w| / (sum of |incoming weight| of v) * s(v); the product along the strongest path of each
  // edge's share of its target's input. Nodes are visited from the top layer down.
  function pathStrength(G) {
    const s = {};
    if (!G.topLogit) return s;
    s[G.topLogit] = 1;
    const order = G.graph.nodes.slice().sort((a, b) => b.layer - a.layer || b.pos - a.pos);
    for (let pass = 0; pass < 2; pass++)  // a second pass settles same-layer edges
      for (const v of order) {
        const sv = s[v.id];
        if (!sv) continue;
        for (const e of G.inE[v.id]) {
          const x = abs(e.weight) / Math.max(G.inAbs[v.id], 1e-12) * sv;
          if (x > (s[e.source] || 0)) s[e.source] = x;
        }
      }
    return s;
  }

  // The first view: the k strongest non-error nodes by path strength (with the top logit), plus
  // `extra` ids; edges: each shown node's `perTarget` strongest inputs from shown nodes.
  function topPaths(G, k, extra, perTarget) {
    const s = pathStrength(G);
    const ranked = Object.keys(s).filter(id => !isErr(G.byId[id])).sort((a, b) => s[b] - s[a]);
    const keep = new Set(ranked.slice(0, k));
    for (const id of extra) keep.add(id);
    const edges = [];
    for (const id of keep) {
      let taken = 0;
      for (const e of G.inE[id]) {
        if (taken >= perTarget) break;
        if (keep.has(e.source)) { edges.push(e); taken++; }
      }
    }
    return {nodes: [...keep].map(id => G.byId[id]), edges, strength: s};
  }

  // The graph pruned at node threshold tn and edge threshold te (ranks as in the JSON).
  function threshold(G, tn, te, extra) {
    const keep = new Set();
    for (const n of G.graph.nodes) if (n.node_rank <= tn) keep.add(n.id);
    const counted = keep.size;
    for (const id of extra) keep.add(id);
    const edges = G.graph.edges.filter(e => e.edge_rank <= te && keep.has(e.source) &&
                                            keep.has(e.target));
    const nEdges = G.graph.edges.reduce((c, e) => c + (e.edge_rank <= te &&
      G.byId[e.source].node_rank <= tn && G.byId[e.target].node_rank <= tn), 0);
    return {nodes: [...keep].map(id => G.byId[id]), edges, counted, countedEdges: nEdges};
  }

  // Nodes reachable from `id` upstream ("up": along incoming edges) or downstream within
  // `depth` steps, following each node's `perNode` strongest edges; errors are not expanded.
  function trace(G, id, dir, depth, perNode) {
    const keep = new Set([id]), edges = [];
    let frontier = [id];
    for (let d = 0; d < depth; d++) {
      const next = [];
      for (const u of frontier) {
        for (const e of (dir === "up" ? G.inE[u] : G.outE[u]).slice(0, perNode)) {
          const v = dir === "up" ? e.source : e.target;
          edges.push(e);
          if (!keep.has(v)) { keep.add(v); if (!isErr(G.byId[v])) next.push(v); }
        }
      }
      frontier = next;
    }
    return {nodes: [...keep].map(x => G.byId[x]), edges};
  }

  // Pinned nodes with supernodes drawn as one node each; an edge between two drawn units is
  // the sum of the edges between their members (edges inside a supernode are dropped).
  function grouped(G, pinned, supernodes) {
    const rep = {}, nodes = [];
    supernodes.forEach((sn, i) => {
      const members = sn.members.filter(m => G.byId[m]);
      if (!members.length) return;
      const ms = members.map(m => G.byId[m]);
      const layer = Math.round(ms.reduce((a, m) => a + m.layer, 0) / ms.length);
      const node = {id: "supernode_" + i, kind: "supernode", label: sn.name, layer,
                    pos: Math.max(...ms.map(m => m.pos)), members, influence: 0, node_rank: 0};
      for (const m of members) rep[m] = node.id;
      nodes.push(node);
    });
    for (const id of pinned) if (!rep[id] && G.byId[id]) { rep[id] = id; nodes.push(G.byId[id]); }
    const sums = new Map();
    for (const e of G.graph.edges) {
      const a = rep[e.source], b = rep[e.target];
      if (!a || !b || a === b) continue;
      const key = a + "\u0000" + b;
      sums.set(key, (sums.get(key) || 0) + e.weight);
    }
    const edges = [];
    for (const [key, w] of sums) {
      const [source, target] = key.split("\u0000");
      edges.push({source, target, weight: w});
    }
    return {nodes, edges};
  }

  // Rows: layers (embeddings at the bottom, logits on top), each as tall as its most crowded
  // cell needs; columns: prompt positions, each as wide as its most crowded cell needs.
  // Within a cell nodes sit on a grid of `perLine` per line, strongest first, never overlapping.
  function layout(nodes, nTokens, nLayers, opt) {
    const sp = opt.spacing, lineH = opt.lineH, perLineMax = opt.perLine;
    const cells = {};
    for (const n of nodes) (cells[n.layer + ":" + n.pos] ||= []).push(n);
    const colN = new Array(nTokens).fill(0), rowLines = {};
    for (const key in cells) {
      const c = cells[key], p = c[0].pos;
      c.sort((a, b) => b.influence - a.influence || (a.id < b.id ? -1 : 1));
      colN[p] = Math.max(colN[p], Math.min(c.length, perLineMax));
    }
    for (const key in cells) {
      const c = cells[key], layer = c[0].layer;
      const lines = Math.ceil(c.length / Math.max(colN[c[0].pos], 1));
      rowLines[layer] = Math.max(rowLines[layer] || 0, lines);
    }
    const colW = colN.map(k => Math.max(opt.minCol, k * sp + 14));
    const colX = [opt.left];
    colW.forEach((w, p) => colX.push(colX[p] + w));
    const rowY = {}, rowH = {};
    let y = opt.top;
    for (let layer = nLayers; layer >= -1; layer--) {
      // A layer with nothing in this view keeps only a sliver, so sparse views stay compact.
      rowH[layer] = rowLines[layer] ? rowLines[layer] * lineH + 18 : 14;
      rowY[layer] = y; y += rowH[layer];
    }
    const pos = {};
    for (const key in cells) {
      const c = cells[key], p = c[0].pos, per = Math.max(colN[p], 1);
      c.forEach((n, i) => {
        const line = Math.floor(i / per), inLine = Math.min(per, c.length - line * per);
        pos[n.id] = {x: colX[p] + colW[p] / 2 + ((i % per) - (inLine - 1) / 2) * sp,
                     y: rowY[n.layer] + 9 + (line + 0.5) * lineH};
      });
    }
    return {pos, colX, colW, rowY, rowH, width: colX[nTokens] + opt.right, height: y};
  }

  return {index, pathStrength, topPaths, threshold, trace, grouped, layout, isErr};
})();
