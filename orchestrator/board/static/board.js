// The board: draws the state pushed by /events. Every journal string is set with textContent or as an
// SVG attribute value, never parsed as markup.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  let state = null;
  let skewMs = 0; // server clock minus this clock
  let selected = null;
  const QUIET_S = 120; // a run that wrote nothing for this long is said to be quiet

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) { if (v !== null && v !== undefined) node.setAttribute(k, String(v)); }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function setText(id, text) { const n = $(id); if (n) n.textContent = text === null || text === undefined || text === "" ? "-" : String(text); }
  function duration(s) {
    if (s === null || s === undefined || isNaN(s)) return "-";
    const neg = s < 0; s = Math.abs(s);
    let out;
    if (s < 60) out = s.toFixed(0) + " s";
    else if (s < 3600) out = Math.floor(s / 60) + " min " + String(Math.floor(s % 60)).padStart(2, "0") + " s";
    else if (s < 172800) out = Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
    else out = Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
    return neg ? "overdue by " + out : out;
  }
  function now() { return Date.now() + skewMs; }

  function tick() {
    if (!state || state.waiting) return;
    const start = state.started ? Date.parse(state.started.iso) : null;
    if (state.finished && state.duration_s !== null) setText("elapsed", duration(state.duration_s));
    else if (start) setText("elapsed", duration((now() - start) / 1000));
    const quiet = $("quiet");
    const last = state.last_record ? (now() - Date.parse(state.last_record.iso)) / 1000 : 0;
    quiet.hidden = state.finished || last < QUIET_S;
    quiet.textContent = "no journal record for " + duration(last) + ": the run may wait, be stuck or be gone; ask the engineer";
    for (const key of ["early-warning", "incident-notification"]) {
      const box = $("nis2-" + key);
      if (box) box.parentElement.hidden = !(state.nis2 || []).some(function (n) { return n.key === key && n.due; });
    }
    for (const item of state.nis2 || []) {
      const value = $("nis2-" + item.key);
      if (!value || !item.due) continue;
      const left = (Date.parse(item.due.iso) - now()) / 1000;
      value.textContent = left >= 0 ? duration(left) + " left" : duration(left);
      value.dataset.overdue = left < 0 ? "yes" : left < 3600 ? "soon" : "no";
      setText("nis2-" + item.key + "-due", "due " + item.due.local);
    }
  }

  function drawGraph(g) {
    const svg = $("graph");
    clear(svg);
    svg.setAttribute("viewBox", "0 0 " + g.width + " " + g.height);
    svg.style.maxWidth = Math.round(g.width * 1.6) + "px";
    const defs = el("svg:defs");
    const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.appendChild(el("svg:path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
    defs.appendChild(marker);
    svg.appendChild(defs);
    for (const t of g.tiers) svg.appendChild(el("svg:text", { x: 4, y: t.y, class: "tier" }, t.label));
    for (const e of g.edges) {
      const p = el("svg:path", { d: e.path, class: "edge", "marker-end": "url(#arrow)" });
      p.appendChild(el("svg:title", {}, e.dependent + " depends on " + e.dependency));
      svg.appendChild(p);
    }
    for (const b of g.boxes) {
      const node = el("svg:g", { class: "node", tabindex: "0", role: "button", "data-host": b.name, "data-state": b.state, "aria-label": b.name + ": " + b.label + ". " + b.why });
      node.appendChild(el("svg:title", {}, b.name + ": " + b.label + " — " + b.why));
      node.appendChild(el("svg:rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6, fill: b.colour, class: "box" }));
      const fg = b.text;
      node.appendChild(el("svg:text", { x: b.x + b.w / 2, y: b.y + 18, "text-anchor": "middle", fill: fg, class: "name" }, b.name.length > 22 ? b.name.slice(0, 21) + "…" : b.name));
      node.appendChild(el("svg:text", { x: b.x + b.w / 2, y: b.y + 35, "text-anchor": "middle", fill: fg, class: "state" }, b.label));
      const show = function () { selected = b.name; $("why").textContent = b.name + ": " + b.label + " — " + b.why; };
      node.addEventListener("click", show);
      node.addEventListener("focus", show);
      node.addEventListener("mouseenter", show);
      svg.appendChild(node);
      if (selected === b.name) show();
    }
    for (const l of g.legend) {
      const item = el("svg:g", { class: "legend" });
      item.appendChild(el("svg:rect", { x: l.x, y: l.y, width: 14, height: 14, rx: 3, fill: l.colour }));
      item.appendChild(el("svg:text", { x: l.x + 19, y: l.y + 12 }, l.label));
      svg.appendChild(item);
    }
  }

  function drawChart(c) {
    const svg = $("chart");
    clear(svg);
    svg.setAttribute("viewBox", "0 0 " + c.width + " " + c.height);
    svg.appendChild(el("svg:line", { x1: c.label_w, y1: c.axis_y, x2: c.chart_right, y2: c.axis_y, class: "axis" }));
    for (const t of c.ticks) {
      svg.appendChild(el("svg:line", { x1: t.x, y1: c.axis_y, x2: t.x, y2: c.bottom, class: "grid" }));
      svg.appendChild(el("svg:text", { x: t.x, y: c.axis_y - 6, "text-anchor": "middle", class: "tick" }, t.label));
    }
    for (const m of c.marks) {
      svg.appendChild(el("svg:line", { x1: m.x, y1: c.axis_y, x2: m.x, y2: c.bottom, class: "mark" }));
      svg.appendChild(el("svg:text", { x: m.x + 3, y: c.bottom + 14, class: "mark-label" }, m.label));
    }
    for (const b of c.bars) {
      const g = el("svg:g", { class: "bar", "data-status": b.status });
      g.appendChild(el("svg:title", {}, b.title));
      g.appendChild(el("svg:text", { x: c.label_w - 6, y: b.y + 11, "text-anchor": "end", class: "bar-label" }, b.label));
      if (b.point) g.appendChild(el("svg:circle", { cx: b.x, cy: b.y + 7, r: 4, fill: b.colour }));
      else g.appendChild(el("svg:rect", { x: b.x, y: b.y + 2, width: b.w, height: 11, rx: 2, fill: b.colour }));
      svg.appendChild(g);
    }
  }

  function fillList(id, items, render) {
    const list = $(id);
    clear(list);
    if (!items.length) { list.appendChild(el("li", { class: "muted" }, "none")); return; }
    for (const item of items) list.appendChild(render(item));
  }

  function drawRestore(rows) {
    const panel = $("restore-panel");
    panel.hidden = !rows.length;
    const body = $("restore").tBodies[0];
    clear(body);
    for (const r of rows) {
      const tr = el("tr");
      const gate = r.gate || {};
      const gateText = !r.gate ? "-" : gate.approved === true ? "approved" : gate.approved === false ? "refused" : gate.status;
      const cells = [r.tier, r.hosts.join(", ") || "-", r.summary.start, r.summary.integrity, r.summary.health, gateText,
        gate.approver ? gate.approver + (gate.how ? " (" + gate.how + ")" : "") + (gate.at ? " " + gate.at : "") : "-", r.summary.reconnected];
      cells.forEach(function (text, i) {
        const td = el("td", {}, text);
        if (i >= 2 && i !== 6) td.dataset.status = String(text).replace(/^\d+ /, "");
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  }

  function render(s) {
    state = s;
    const status = $("status");
    status.textContent = s.waiting ? "waiting for a run" : s.status;
    status.dataset.status = s.waiting ? "waiting" : s.status;
    setText("records", s.records);
    setText("journal", s.journal || "(no run yet)");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    const notice = $("notice");
    notice.hidden = !s.error && !(s.notes && s.notes.length);
    notice.textContent = s.error || (s.notes || []).join(" · ");
    if (s.waiting) return;
    setText("site", s.site); setText("mode", s.mode); setText("run-id", s.run_id);
    setText("operator", s.operator); setText("started", s.started ? s.started.local : "");
    setText("ttc", s.times.containment); setText("tts", s.times.shutdown); setText("ttr", s.times.restored);
    const restore = s.mode === "restore";
    $("ttc").parentElement.hidden = restore && !s.times.containment;
    $("tts").parentElement.hidden = restore && !s.times.shutdown;
    $("ttr").parentElement.hidden = !restore && !s.times.restored;
    document.title = s.site + " · " + s.status + " · board";
    const counts = $("counts");
    clear(counts);
    for (const [label, n] of Object.entries(s.hosts_by_state)) {
      const chip = el("span", { class: "chip", "data-state": label }, null);
      chip.appendChild(el("strong", {}, n));
      chip.appendChild(document.createTextNode(" " + label));
      counts.appendChild(chip);
    }
    drawGraph(s.graph);
    drawChart(s.chart);
    fillList("kept", s.kept, function (k) {
      const li = el("li");
      li.appendChild(el("strong", {}, k.name));
      li.appendChild(document.createTextNode(" (" + k.state + "): " + k.why));
      return li;
    });
    $("pending").textContent = s.finished ? "" : s.pending_steps + " step(s) still to go";
    fillList("left", s.left, function (x) {
      const li = el("li");
      li.appendChild(el("strong", {}, x.step_id));
      li.appendChild(document.createTextNode(": " + x.reason));
      return li;
    });
    drawRestore(s.restore);
    const events = $("events");
    clear(events);
    for (const e of s.timeline.slice().reverse()) {
      const li = el("li", { "data-type": e.type, "data-status": e.status });
      li.appendChild(el("time", {}, e.at.slice(11) + " (+" + e.offset + ")"));
      li.appendChild(document.createTextNode(" " + e.summary));
      events.appendChild(li);
    }
    tick();
  }

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("state", function (ev) {
      $("link").textContent = "live";
      $("link").dataset.live = "yes";
      render(JSON.parse(ev.data));
    });
    source.addEventListener("clock", function (ev) {
      const server = Date.parse(ev.data);
      if (!isNaN(server)) skewMs = server - Date.now();
    });
    source.addEventListener("error", function () {
      $("link").textContent = "connection lost: retrying";
      $("link").dataset.live = "no";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    connect();
    setInterval(tick, 1000);
  });
})();
