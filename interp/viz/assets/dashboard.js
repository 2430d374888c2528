// Feature-dashboard page: an index of latents and one latent's details (see dashboard_html.py).
// Every string from the data is written with textContent, never parsed as markup.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  const latents = data.latents;
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmt(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return "-";
    if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4)) return x.toExponential(2);
    return x.toFixed(digits === undefined ? 3 : digits);
  }
  // Whitespace made visible so a token of spaces or a newline still has a shape (and an
  // empty string, a token the tokenizer decodes to nothing, a mark).
  function show(s) {
    s = String(s).replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192");
    if (s === "") return "\u2205";
    return s.trim() === "" ? s.replace(/ /g, "\u2423") : s;
  }
  function tokStr(ctx, i) {
    return ctx.token_strs ? ctx.token_strs[i] : "#" + ctx.tokens[i];
  }
  function itemStr(item) {
    return item.str !== undefined ? item.str : "#" + item.token;
  }
  function name(d) {
    return (d.layer !== undefined ? "L" + d.layer + " " : "") + "#" + d.latent;
  }
  function topToken(d) {
    if (!d.contexts.length) return "";
    const c = d.contexts[0];
    return tokStr(c, c.position - c.window_start);
  }

  // ----- Header and controls
  const header = el("header");
  header.appendChild(el("h1", null, data.title || ("Feature dashboard: " + (data.site || ""))));
  const facts = [];
  if (data.site) facts.push("site " + data.site);
  if (data.n_sequences !== undefined)
    facts.push(data.n_sequences + " sequences x " + data.context_length + " tokens");
  const m = data.metrics || {};
  for (const k of ["l0", "fvu", "ce_loss_recovered"])
    if (m[k] !== undefined) facts.push(k + " " + fmt(m[k]));
  facts.push(latents.length + " latents shown");
  header.appendChild(el("p", "facts", facts.join(" \u00b7 ")));
  document.body.appendChild(header);

  const main = el("main");
  const side = el("nav", "index");
  const controls = el("div", "controls");
  const search = el("input");
  search.id = "search";
  search.type = "search";
  search.placeholder = "top token contains\u2026";
  const sort = el("select");
  sort.id = "sort";
  for (const [v, t] of [["density", "density"], ["max", "max activation"], ["id", "latent"]]) {
    const o = el("option", null, "sort: " + t);
    o.value = v;
    sort.appendChild(o);
  }
  controls.append(search, sort);
  const layers = [...new Set(latents.filter(d => d.layer !== undefined).map(d => d.layer))];
  const layerSel = el("select");
  layerSel.id = "layer";
  if (layers.length) {
    const all = el("option", null, "all layers");
    all.value = "";
    layerSel.appendChild(all);
    for (const l of layers.sort((a, b) => a - b)) {
      const o = el("option", null, "layer " + l);
      o.value = String(l);
      layerSel.appendChild(o);
    }
    controls.appendChild(layerSel);
  }
  side.appendChild(controls);
  const table = el("table");
  const head = el("tr");
  for (const t of ["latent", "density", "max", "top token"]) head.appendChild(el("th", null, t));
  table.appendChild(head);
  const rows = latents.map((d, i) => {
    const tr = el("tr", "latent-row");
    tr.dataset.key = String(i);
    tr.append(el("td", null, name(d)), el("td", null, fmt(d.density, 4)),
              el("td", null, fmt(d.max_activation, 2)), el("td", "tok-cell", show(topToken(d))));
    tr.addEventListener("click", () => select(i));
    return tr;
  });
  side.appendChild(table);
  const count = el("p", "count");
  count.id = "index-count";
  side.appendChild(count);
  const detail = el("section", "detail");
  detail.id = "detail";
  main.append(side, detail);
  document.body.appendChild(main);

  function matches(d, q) {
    if (!q) return true;
    const strs = [topToken(d)].concat(d.contexts.map(c => tokStr(c, c.position - c.window_start)));
    return strs.some(s => s.toLowerCase().includes(q));
  }
  function refresh() {
    const q = search.value.trim().toLowerCase();
    const layer = layerSel.value;
    const key = {density: d => -d.density, max: d => -d.max_activation,
                 id: d => (d.layer || 0) * 1e9 + d.latent}[sort.value];
    const order = latents.map((d, i) => i).sort((a, b) => key(latents[a]) - key(latents[b]) || a - b);
    let shown = 0;
    for (const i of order) {
      const d = latents[i];
      const ok = matches(d, q) && (layer === "" || String(d.layer) === layer);
      rows[i].classList.toggle("hidden", !ok);
      shown += ok;
      table.appendChild(rows[i]);
    }
    count.dataset.shown = String(shown);
    count.textContent = shown + " of " + latents.length + " latents";
  }
  search.addEventListener("input", refresh);
  sort.addEventListener("change", refresh);
  layerSel.addEventListener("change", refresh);

  // ----- One latent
  function histogram(h) {
    const W = 420, H = 140, pad = 30;
    const s = svg("svg", {width: W, height: H + pad, id: "histogram"});
    const max = Math.max(1, ...h.counts);
    const n = h.counts.length, bw = (W - pad) / n;
    h.counts.forEach((c, i) => {
      const bh = (H - 10) * c / max;
      const r = svg("rect", {x: pad + i * bw, y: H - bh, width: Math.max(bw - 1, 1), height: bh,
                             class: "bar"});
      r.dataset.count = String(c);
      const t = svg("title", {});
      t.textContent = fmt(h.edges[i]) + " \u2013 " + fmt(h.edges[i + 1]) + ": " + c;
      r.appendChild(t);
      s.appendChild(r);
    });
    const lab = (x, txt, anchor) => {
      const t = svg("text", {x: x, y: H + 16, "text-anchor": anchor, class: "axis"});
      t.textContent = txt;
      s.appendChild(t);
    };
    lab(pad, fmt(h.edges[0]), "start");
    lab(W, fmt(h.edges[n]), "end");
    lab((W + pad) / 2, "activation (log scale)", "middle");
    const y = svg("text", {x: 2, y: 12, class: "axis"});
    y.textContent = String(max);
    s.appendChild(y);
    return s;
  }
  function context(ctx, scale) {
    const div = el("div", "context");
    const v = el("span", "ctx-value", fmt(ctx.activation, 2));
    div.appendChild(v);
    ctx.tokens.forEach((_, i) => {
      const a = ctx.acts[i];
      const t = el("span", "tok", show(tokStr(ctx, i)));
      const alpha = scale > 0 ? Math.max(0, Math.min(1, a / scale)) : 0;
      t.style.backgroundColor = "rgba(255, 120, 0, " + alpha.toFixed(3) + ")";
      t.dataset.act = String(a);
      t.dataset.alpha = alpha.toFixed(3);
      t.title = fmt(a, 3);
      if (ctx.window_start + i === ctx.position) t.classList.add("max");
      div.appendChild(t);
    });
    return div;
  }
  function tokens(title, items, id) {
    const box = el("div", "tokens");
    box.id = id;
    box.appendChild(el("h3", null, title));
    const tb = el("table");
    for (const it of items || []) {
      const tr = el("tr");
      tr.append(el("td", "tok-cell", show(itemStr(it))), el("td", "num", fmt(it.value, 3)));
      tb.appendChild(tr);
    }
    box.appendChild(tb);
    if (!items) box.appendChild(el("p", "note", "not computed for this site"));
    return box;
  }
  function select(i) {
    const d = latents[i];
    rows.forEach((r, j) => r.classList.toggle("selected", j === i));
    detail.replaceChildren();
    detail.dataset.key = String(i);
    detail.appendChild(el("h2", null, "Latent " + name(d)));
    detail.appendChild(el("p", "facts",
        "density " + fmt(d.density, 5) + " (" + (d.fired !== undefined ? d.fired : "?") +
        " tokens) \u00b7 mean when active " + fmt(d.mean_activation) +
        " \u00b7 max " + fmt(d.max_activation)));
    const row = el("div", "row");
    const hbox = el("div", "hist");
    hbox.appendChild(el("h3", null, "Nonzero activations"));
    if (d.histogram) hbox.appendChild(histogram(d.histogram));
    row.append(hbox, tokens("Promoted tokens", d.promoted, "promoted"),
               tokens("Suppressed tokens", d.suppressed, "suppressed"));
    detail.appendChild(row);
    const scale = d.max_activation;
    const top = el("div", "contexts");
    top.id = "contexts";
    top.appendChild(el("h3", null, "Top activations"));
    for (const c of d.contexts) top.appendChild(context(c, scale));
    detail.appendChild(top);
    const bands = el("div", "bands");
    bands.id = "bands";
    for (const b of (d.bands || []).slice().reverse()) {
      bands.appendChild(el("h3", null, "Activations in (" + fmt(b.low, 2) + ", " +
                                       fmt(b.high, 2) + "]"));
      if (!b.contexts.length) bands.appendChild(el("p", "note", "no tokens in this band"));
      for (const c of b.contexts) bands.appendChild(context(c, scale));
    }
    detail.appendChild(bands);
  }

  // `#L<layer>-<latent>` or `#<latent>` (dashboard_html.anchor) opens the page on that latent.
  function fromHash() {
    const m = /^#(?:L(\d+)-)?(\d+)$/.exec(location.hash);
    if (!m) return -1;
    return latents.findIndex(d => String(d.latent) === m[2] &&
                                  (m[1] === undefined ? d.layer === undefined
                                                      : String(d.layer) === m[1]));
  }
  window.addEventListener("hashchange", () => {
    const i = fromHash();
    if (i >= 0) { select(i); rows[i].scrollIntoView({block: "nearest"}); }
  });

  refresh();
  const first = fromHash();
  if (first >= 0) {
    select(first);
    rows[first].scrollIntoView({block: "nearest"});
  } else if (latents.length) {
    select(Number(table.querySelector("tr.latent-row:not(.hidden)").dataset.key));
  } else {
    detail.appendChild(el("p", "note", "no live latents"));
  }
  window.dashboardSelect = select;
})();
