// Attribution-graph viewer, part 3: the sidebar. The selected node's panel (dashboard data,
// ranked edges, per-head attention when the JSON has it, trace and pin), the pinned nodes and
// supernodes, the supernode proposals, and the state saved beside the graph as JSON.
const GraphPanel = (function () {
  "use strict";
  const STATE_FORMAT = "interp.graph_state/1";

  function edgeList(api, title, edges, end, parent, id) {
    const {el, fmt, nodeName, G, select} = api;
    el("h3", {}, `${title} (${edges.length})`, parent);
    const ol = el("ol", {id, class: "edges-ranked"}, null, parent);
    for (const e of edges.slice(0, 15)) {
      const other = G.byId[e[end]];
      const li = el("li", {"data-node-id": other.id, "data-weight": e.weight}, null, ol);
      el("span", {class: e.weight >= 0 ? "w pos" : "w neg"}, fmt(e.weight, 3), li);
      el("span", {}, " " + nodeName(other), li);
      li.addEventListener("click", () => select(other.id));
    }
  }

  function contexts(api, n, parent) {
    const {el, show} = api;
    if (!(n.contexts || []).length) return;
    el("h3", {}, "Top activations", parent);
    for (const c of n.contexts) {
      const line = el("div", {class: "context"}, null, parent);
      const vals = c.values || [], peak = Math.max(1e-12, ...vals.map(Math.abs));
      const arg = vals.indexOf(vals.reduce((m, v) => Math.max(m, v), -Infinity));
      c.tokens.forEach((t, i) => {
        const s = el("span", {class: i === arg ? "tok max" : "tok"}, show(t), line);
        const a = Math.max(0, Math.min(1, (vals[i] || 0) / peak));
        s.style.backgroundColor = `rgba(255, 140, 0, ${(0.6 * a).toFixed(3)})`;
      });
    }
  }

  // Per-head data is optional in the JSON (node key "heads"); without it the page says so.
  function attention(api, n, parent) {
    const {el, fmt, G, nodeName} = api;
    el("h3", {}, "Why attention moved it", parent);
    const box = el("div", {id: "attention"}, null, parent);
    if (!(n.heads || []).length) {
      el("p", {class: "hint"}, "This graph JSON carries no per-head data for this node (the " +
         "optional node key 'heads'), so the heads behind its incoming edges are not shown.", box);
      return;
    }
    const detail = el("div", {id: "head-detail"}, null, null);
    const ol = el("ol", {class: "heads"}, null, box);
    box.appendChild(detail);
    for (const h of n.heads.slice().sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight))) {
      const li = el("li", {"data-head": `${h.layer}.${h.head}`},
                    `L${h.layer}.H${h.head}  ${fmt(h.weight, 3)}`, ol);
      li.addEventListener("click", () => {
        detail.replaceChildren();
        for (const side of ["query", "key"]) {
          const at = side === "query" ? h.q_pos : h.k_pos;
          el("h4", {}, `${side}-side sources of L${h.layer}.H${h.head}` +
             (at === undefined || at === null ? "" : ` (${side} at pos ${at})`), detail);
          const ul = el("ul", {class: side + "-sources"}, null, detail);
          for (const s of h[side] || [])
            el("li", {}, `${fmt(s.weight, 3)}  ${G.byId[s.source] ? nodeName(G.byId[s.source]) :
                                                 s.source}`, ul);
        }
      });
    }
  }

  function fill(api, id) {
    const {el, fmt, show, G, st, panel, tokens} = api;
    const n = G.byId[id];
    panel.replaceChildren();
    if (!n && id.startsWith("supernode_")) {  // a group: its members, each selectable
      const sn = st.supernodes[Number(id.slice(10))];
      el("div", {class: "tip-title", id: "panel-title"}, `Supernode ${sn.name}`, panel);
      const ul = el("ul", {class: "edges-ranked"}, null, panel);
      for (const m of sn.members) el("li", {"data-node-id": m}, api.nodeName(G.byId[m]), ul)
        .addEventListener("click", () => api.select(m));
      return;
    }
    if (!n) return;
    const title = n.kind === "feature" ? `Feature ${n.feature} · L${n.layer} · pos ${n.pos}`
      : n.kind === "error" ? `Error · L${n.layer} · pos ${n.pos} · norm ${fmt(n.norm, 3)}`
      : n.kind === "logit" ? `Logit ${show(n.token)} · p=${fmt(n.prob, 3)}`
      : `Embedding · pos ${n.pos}`;
    el("div", {class: "tip-title", id: "panel-title"}, title, panel);
    el("div", {class: "tip-label"}, n.kind === "error" ? `at token ${show(tokens[n.pos])}` :
       n.label, panel);
    const share = G.errIn[id] / Math.max(G.inAbs[id], 1e-12);
    const stats = [`influence ${fmt(n.influence, 3)}`, `rank ${fmt(n.node_rank, 2)}`,
                   `input from errors ${Math.round(100 * share)}%`];
    if (n.activation != null) stats.unshift(`activation ${fmt(n.activation, 3)}`);
    el("div", {class: "tip-stats"}, stats.join(" · "), panel);
    const url = n.dashboard_url || null;
    if (url && !/^\s*(javascript|data):/i.test(url))
      el("a", {href: url, id: "dashboard-link"}, "feature dashboard", panel);
    const acts = el("div", {class: "actions"}, null, panel);
    const pin = el("button", {type: "button", id: "pin-node"},
                   st.pinned.includes(id) ? "unpin" : "pin", acts);
    pin.addEventListener("click", () => { togglePin(api, [id]); fill(api, id); });
    const depth = el("input", {type: "number", id: "trace-depth", min: "1", max: "6",
                               value: "2", title: "depth"},
                     null, el("label", {}, "depth ", acts));
    const k = el("input", {type: "number", id: "trace-k", min: "1", max: "20", value: "3",
                           title: "edges followed per node"},
                 null, el("label", {}, "edges/node ", acts));
    for (const dir of ["up", "down"]) {
      const b = el("button", {type: "button", id: "trace-" + dir},
                   dir === "up" ? "trace ↑ inputs" : "trace ↓ outputs", acts);
      b.addEventListener("click", () => api.trace(id, dir, Number(depth.value) || 1,
                                                  Number(k.value) || 3));
    }
    el("button", {type: "button", id: "expand-node"}, "show neighbours", acts)
      .addEventListener("click", () => api.expand(id));
    if (st.mode === "trace") el("button", {type: "button", id: "pin-trace"}, "pin the trace", acts)
      .addEventListener("click", () => togglePin(api, st.trace.nodes.map(x => x.id), true));
    if (n.logit_effects && n.logit_effects.length) {
      el("h3", {}, "Logit effects", panel);
      const ul = el("ul", {class: "logit-effects"}, null, panel);
      for (const x of n.logit_effects) el("li", {}, `${fmt(x.value, 3)}  ${show(x.token)}`, ul);
    }
    contexts(api, n, panel);
    edgeList(api, "Incoming, by |weight|", G.inE[id], "source", panel, "incoming");
    edgeList(api, "Outgoing, by |weight|", G.outE[id], "target", panel, "outgoing");
    if (n.kind === "feature" || n.kind === "logit") attention(api, n, panel);
  }

  // ----- Pinned nodes, supernodes, proposals, state.
  let ui = null;
  function togglePin(api, ids, add) {
    const st = api.st;
    for (const id of ids) {
      const at = st.pinned.indexOf(id);
      if (at < 0) st.pinned.push(id);
      else if (!add) st.pinned.splice(at, 1);
    }
    refresh(api);
    api.rerender(false);
  }

  function group(api, name, members) {
    const st = api.st;
    members = members.filter(m => api.G.byId[m]);
    if (members.length < 1) return;
    for (const sn of st.supernodes) sn.members = sn.members.filter(m => !members.includes(m));
    st.supernodes = st.supernodes.filter(sn => sn.members.length);
    for (const m of members) if (!st.pinned.includes(m)) st.pinned.push(m);
    st.supernodes.push({name: name || "group " + (st.supernodes.length + 1), members});
    st.mode = "subgraph";
    refresh(api);
    api.rerender(true);
  }

  function refresh(api) {
    const {el, G, st, nodeName} = api;
    ui.pinned.replaceChildren();
    for (const id of st.pinned) {
      const li = el("li", {"data-node-id": id}, null, ui.pinned);
      el("input", {type: "checkbox", class: "pick", value: id}, null, li);
      el("span", {}, " " + nodeName(G.byId[id]), li);
    }
    ui.supers.replaceChildren();
    st.supernodes.forEach((sn, i) => {
      const li = el("li", {"data-supernode": i}, null, ui.supers);
      const name = el("input", {type: "text", class: "sn-name", value: sn.name}, null, li);
      name.addEventListener("change", () => { sn.name = name.value; api.rerender(false); });
      el("span", {}, ` ${sn.members.length} nodes `, li);
      el("button", {type: "button", class: "ungroup"}, "ungroup", li).addEventListener(
        "click", () => { st.supernodes.splice(i, 1); refresh(api); api.rerender(false); });
    });
    ui.stateText.value = JSON.stringify(saveState(api), null, 1);
  }

  function saveState(api) {
    return {format: STATE_FORMAT, prompt: api.graph.prompt, pinned: api.st.pinned.slice(),
            supernodes: api.st.supernodes.map(s => ({name: s.name, members: s.members.slice()}))};
  }

  function loadState(api, obj) {
    if (!obj || obj.format !== STATE_FORMAT) throw new Error("not an " + STATE_FORMAT + " file");
    api.st.pinned = (obj.pinned || []).filter(id => api.G.byId[id]);
    api.st.supernodes = (obj.supernodes || []).map(s => ({
      name: String(s.name), members: (s.members || []).filter(id => api.G.byId[id])}));
    refresh(api);
  }

  function setup(api, side, extra) {
    const {el} = api;
    const box = el("section", {id: "pins"}, null, side);
    el("h3", {}, "Pinned nodes", box);
    ui = {pinned: el("ul", {id: "pinned-list"}, null, box)};
    const row = el("div", {class: "actions"}, null, box);
    const name = el("input", {type: "text", id: "group-name", placeholder: "supernode name"},
                    null, row);
    el("button", {type: "button", id: "group-btn"}, "group ticked", row).addEventListener(
      "click", () => group(api, name.value, [...ui.pinned.querySelectorAll(".pick:checked")]
        .map(c => c.value)));
    el("h3", {}, "Supernodes", box);
    ui.supers = el("ul", {id: "supernode-list"}, null, box);
    const sug = el("section", {id: "suggestions"}, null, side);
    el("h3", {}, "Suggested supernodes", sug);
    el("p", {class: "hint"}, extra.method || "", sug);
    const ol = el("ol", {id: "suggestion-list"}, null, sug);
    (extra.suggestions || []).forEach((p, i) => {
      const li = el("li", {"data-suggestion": i}, null, ol);
      const nm = el("input", {type: "text", class: "sg-name", value: p.name}, null, li);
      el("span", {}, ` ${p.members.length} features, similarity ${api.fmt(p.similarity, 2)} `, li);
      el("button", {type: "button", class: "accept"}, "accept", li).addEventListener("click", () => {
        li.classList.add("accepted");
        group(api, nm.value, p.members);
      });
      el("div", {class: "members"}, p.members.map(m => api.G.byId[m] ?
        api.G.byId[m].label : m).join(", "), li);
    });
    const sbox = el("section", {id: "state"}, null, side);
    el("h3", {}, "State (save as graph.state.json beside the graph)", sbox);
    ui.stateText = el("textarea", {id: "state-json", rows: "4"}, null, sbox);
    const srow = el("div", {class: "actions"}, null, sbox);
    const link = el("a", {id: "state-download", download: "graph.state.json"}, "download", srow);
    el("button", {type: "button", id: "save-state"}, "save", srow).addEventListener("click", () => {
      ui.stateText.value = JSON.stringify(saveState(api), null, 1);
      link.setAttribute("href", URL.createObjectURL(new Blob([ui.stateText.value],
                                                             {type: "application/json"})));
    });
    const msg = el("span", {id: "state-msg"}, null, null);
    el("button", {type: "button", id: "load-state"}, "load", srow).addEventListener("click", () => {
      try { loadState(api, JSON.parse(ui.stateText.value)); msg.textContent = "loaded";
            api.st.mode = "subgraph"; api.rerender(true); }
      catch (err) { msg.textContent = "state not loaded: " + err.message; }
    });
    const file = el("input", {type: "file", id: "state-file", accept: ".json"}, null, srow);
    srow.appendChild(msg);
    file.addEventListener("change", () => {
      const f = file.files[0];
      if (!f) return;
      f.text().then(t => { ui.stateText.value = t; document.getElementById("load-state").click(); });
    });
    if (extra.state) { loadState(api, extra.state); }
    refresh(api);
  }

  return {fill, setup, saveState, loadState};
})();
