"use strict";
// heapprof report: draws the data in #data (see src/report/html.rs) as a
// stacked-area chart with a brush, a verdict table and two flame graphs.
// Everything is local: no request leaves the page.
(function () {
  var errors = document.getElementById("errors");
  function fail(msg) {
    var d = document.createElement("div");
    d.className = "error";
    d.textContent = "error: " + msg;
    errors.appendChild(d);
  }
  window.onerror = function (msg, src, line) { fail(msg + " (line " + line + ")"); };
  window.addEventListener("unhandledrejection", function (e) { fail(String(e.reason)); });

  var D = JSON.parse(document.getElementById("data").textContent);
  var app = document.getElementById("app");
  var NS = "http://www.w3.org/2000/svg";
  var N = D.times.length;
  var SPAN = N ? D.times[N - 1] / 1000 : 0;

  function el(tag, attrs, parent, text) {
    var e = document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function sv(tag, attrs, parent, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmtV(v) {
    if (D.unit !== "bytes") return Math.round(v).toLocaleString("en");
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0, a = Math.abs(v);
    while (a >= 1024 && i < u.length - 1) { a /= 1024; v /= 1024; i++; }
    return (i ? v.toFixed(a < 10 ? 2 : 1) : Math.round(v)) + " " + u[i];
  }
  function fmtT(s) {
    if (s < 120) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#edc948", "#76b7b2", "#af7aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#86bcb6", "#8cd17d", "#b6992d", "#499894", "#d4a6c8", "#fabfd2"];
  var LEAKS = ["#d62728", "#e8584b", "#b22222", "#ff6f61", "#c0392b"];
  function hash(s) { var h = 0; for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0; return h >>> 0; }
  function stackTitle(s) {
    return D.stacks[s].map(function (f) { return D.funcs[f]; }).reverse().join("\n");
  }

  // ---- state, from the URL hash too: #window=A,B&split=KEY&value=V
  var hashArgs = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("=");
    if (p[0]) hashArgs[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
  });
  var st = {
    split: D.label_keys.indexOf(hashArgs.split || ""),
    value: -1,
    hl: null,
    // One dump has no time axis: its growth graph is everything live.
    win: N > 1 ? [SPAN / 2, SPAN] : [-1e12, 1e12],
    search: "",
    zoom: { end: null, growth: null },
  };
  if (hashArgs.window) {
    var w = hashArgs.window.split(",").map(Number);
    if (w.length === 2 && !isNaN(w[0]) && !isNaN(w[1])) st.win = [Math.min(w[0], w[1]), Math.max(w[0], w[1])];
  }
  if (st.split >= 0 && hashArgs.value) st.value = D.label_values[st.split].indexOf(hashArgs.value);

  // ---- header
  el("h1", {}, app, "heapprof report: " + (D.program ? D.program.split("/").pop() : D.title));
  var meta = el("div", { class: "meta" }, app);
  function item(k, v) { var s = el("span", {}, meta, k + " "); el("b", {}, s, v); }
  if (D.program) item("program", D.program);
  if (D.pid !== null) item("pid", String(D.pid));
  item("sampling rate", D.rate > 1 ? fmtV(D.rate) : "every allocation");
  item("live samples behind the estimates", Math.round(D.samples).toLocaleString("en"));
  item("dumps", String(N));
  item("span", fmtT(SPAN));
  if (D.start) item("from", new Date(D.start).toISOString().replace("T", " ").replace(/\..*/, " UTC"));
  if (D.triggers) {
    var count = {};
    D.triggers.forEach(function (t) { t = t || "unrecorded"; count[t] = (count[t] || 0) + 1; });
    item("triggers", Object.keys(count).map(function (k) { return k + " ×" + count[k]; }).join(", "));
  }
  item("value", D.sample + " (" + D.unit + ")");

  // ---- controls
  var controls = el("div", { class: "controls" }, app);
  var splitLabel = el("label", {}, controls, "split by label ");
  var splitSel = el("select", { id: "split" }, splitLabel);
  el("option", { value: "-1" }, splitSel, "(stacks)");
  D.label_keys.forEach(function (k, i) { el("option", { value: String(i) }, splitSel, k); });
  splitSel.value = String(st.split);
  var valueLabel = el("label", {}, controls, "flame graphs for ");
  var valueSel = el("select", { id: "value" }, valueLabel);
  var searchLabel = el("label", {}, controls, "search function ");
  var search = el("input", { id: "search", type: "search", placeholder: "name or regexp" }, searchLabel);
  var winNote = el("span", { class: "note" }, controls);

  // ---- chart
  el("h2", {}, app, "Memory over time");
  el("div", { class: "note" }, app, "Stacked: the charted stacks' in-use " + D.unit +
    "; black line: total in use" + (D.rss ? "; red dashed: RSS (anonymous)" : "") +
    (D.limit ? "; grey: the cgroup's memory limit" : "") +
    ". Drag on the chart to pick the growth window.");
  var W = 1200, H = 340, ML = 70, MR = 12, MT = 10, MB = 28;
  var chart = sv("svg", { class: "chart", id: "chart", viewBox: "0 0 " + W + " " + H, width: W, height: H }, app);
  var legend = el("div", { class: "legend", id: "legend" }, app);
  var pw = W - ML - MR, ph = H - MT - MB;
  function xOf(ms) { return ML + (N > 1 ? (ms / D.times[N - 1]) * pw : pw / 2); }
  function secOfX(x) { return Math.max(0, Math.min(SPAN, ((x - ML) / pw) * SPAN)); }

  function currentSeries() {
    if (st.split < 0) {
      var leakIdx = 0;
      return D.series.map(function (s, i) {
        var leak = s.why === "leak";
        return {
          key: "s" + s.s, stack: s.s, name: D.names[s.s], title: stackTitle(s.s), v: s.v, leak: leak,
          color: leak ? LEAKS[leakIdx++ % LEAKS.length] : PALETTE[i % PALETTE.length],
        };
      });
    }
    return D.label_series[st.split].map(function (s, i) {
      return { key: "v" + i, value: D.label_values[st.split].indexOf(s.name), name: D.label_keys[st.split] + "=" + s.name,
        title: s.name, v: s.v, leak: false, color: PALETTE[i % PALETTE.length] };
    });
  }

  var brush = null;
  function drawChart() {
    while (chart.firstChild) chart.removeChild(chart.firstChild);
    legend.textContent = "";
    var series = currentSeries();
    var top = new Array(N).fill(0), maxY = 1;
    var paths = [];
    series.forEach(function (s) {
      var lower = top.slice();
      for (var i = 0; i < N; i++) top[i] += Math.max(0, s.v[i]);
      paths.push({ s: s, lower: lower, upper: top.slice() });
    });
    for (var i = 0; i < N; i++) {
      maxY = Math.max(maxY, top[i], D.total[i], D.rss && D.rss[i] !== null ? D.rss[i] : 0);
    }
    // The limit joins the axis when it is near enough to be read against
    // the heap (within 4x); otherwise the legend gives it.
    var maxLimit = 0;
    if (D.limit) D.limit.forEach(function (l) { if (l !== null) maxLimit = Math.max(maxLimit, l); });
    var limitShown = maxLimit > 0 && maxLimit <= 4 * maxY;
    if (limitShown) maxY = Math.max(maxY, maxLimit);
    maxY *= 1.05;
    function yOf(v) { return MT + ph - (v / maxY) * ph; }
    // axes and ticks
    sv("line", { class: "axis", x1: ML, y1: MT + ph, x2: ML + pw, y2: MT + ph }, chart);
    sv("line", { class: "axis", x1: ML, y1: MT, x2: ML, y2: MT + ph }, chart);
    for (var k = 0; k <= 4; k++) {
      var yv = (maxY / 1.05) * k / 4;
      sv("text", { x: ML - 6, y: yOf(yv) + 4, "text-anchor": "end" }, chart, fmtV(yv));
      sv("line", { class: "axis", x1: ML - 3, y1: yOf(yv), x2: ML, y2: yOf(yv) }, chart);
      var ts = SPAN * k / 4;
      sv("text", { x: ML + pw * k / 4, y: H - 8, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" }, chart, fmtT(ts));
    }
    // stacked areas
    paths.forEach(function (p) {
      var d = "";
      for (var i = 0; i < N; i++) d += (i ? "L" : "M") + xOf(D.times[i]).toFixed(1) + "," + yOf(p.upper[i]).toFixed(1);
      for (var j = N - 1; j >= 0; j--) d += "L" + xOf(D.times[j]).toFixed(1) + "," + yOf(p.lower[j]).toFixed(1);
      var cls = "area" + (p.s.leak ? " leak" : "") + (st.hl === null ? "" : st.hl === p.s.key ? " hl" : " dim");
      var path = sv("path", { d: d + "Z", fill: p.s.color, class: cls, "data-key": p.s.key }, chart);
      sv("title", {}, path, p.s.name + "\n" + fmtV(p.s.v[N - 1]) + " at the end\n\n" + p.s.title);
      path.addEventListener("click", function () { highlight(p.s.key); });
    });
    function line(values, cls, id) {
      var pts = [];
      for (var i = 0; i < N; i++) if (values[i] !== null) pts.push(xOf(D.times[i]).toFixed(1) + "," + yOf(values[i]).toFixed(1));
      var pl = sv("polyline", { class: cls, id: id, points: pts.join(" "), "data-n": pts.length }, chart);
      return pl;
    }
    var total = line(D.total, "total", "total-line");
    sv("title", {}, total, "total in use");
    if (D.rss) sv("title", {}, line(D.rss, "rss", "rss-line"), "RSS (anonymous)");
    if (limitShown) sv("title", {}, line(D.limit, "limit", "limit-line"), "the cgroup's memory limit");
    // one mark per dump on the total, saying when and what took it
    for (var k = 0; k < N; k++) {
      var why = D.triggers ? D.triggers[k] || "unrecorded" : "unrecorded";
      var mark = sv("circle", { class: "dump", cx: xOf(D.times[k]).toFixed(1), cy: yOf(D.total[k]).toFixed(1), r: 2.5, "data-trigger": why }, chart);
      sv("title", {}, mark, "dump " + (k + 1) + " at " + fmtT(D.times[k] / 1000) + ", taken by " + why + "\n" + fmtV(D.total[k]) + " in use");
    }
    // the brush
    brush = sv("rect", { class: "brush", y: MT, height: ph }, chart);
    placeBrush();
    // legend
    series.forEach(function (s) {
      var span = el("span", { "data-key": s.key, title: s.title, class: st.hl === s.key ? "hl" : "" }, legend);
      el("i", { style: "background:" + s.color }, span);
      el("span", { class: s.leak ? "leak" : "" }, span, (s.leak ? "⚠ leak suspect: " : "") + s.name);
      span.addEventListener("click", function () {
        if (s.value !== undefined && s.value >= 0) { st.value = st.value === s.value ? -1 : s.value; fillValues(); drawFlames(); }
        highlight(s.key);
      });
    });
    var tot = el("span", {}, legend);
    el("i", { style: "background:#000" }, tot);
    el("span", {}, tot, "total in use (" + fmtV(D.total[N - 1]) + " at the end)");
    if (D.rss) {
      var r = el("span", {}, legend);
      el("i", { style: "background:#c00" }, r);
      el("span", {}, r, "RSS");
    }
    if (maxLimit > 0) {
      var lim = el("span", { id: "limit-legend" }, legend);
      el("i", { style: "background:#888" }, lim);
      el("span", {}, lim, "cgroup memory limit " + fmtV(maxLimit) + (limitShown ? "" : " (above the chart)"));
    }
    return total.getAttribute("data-n");
  }
  function placeBrush() {
    var x0 = xOf(st.win[0] * 1000), x1 = xOf(st.win[1] * 1000);
    if (!(SPAN > 0)) { x0 = ML; x1 = ML + pw; }
    brush.setAttribute("x", Math.min(x0, x1));
    brush.setAttribute("width", Math.max(1, Math.abs(x1 - x0)));
    winNote.textContent = N > 1 ? "growth window: " + fmtT(st.win[0]) + " – " + fmtT(st.win[1]) + " after the first dump" : "";
  }
  function highlight(key) {
    st.hl = st.hl === key ? null : key;
    drawChart();
    var rows = document.querySelectorAll("#verdicts tr.link");
    for (var i = 0; i < rows.length; i++) rows[i].classList.toggle("hl", rows[i].getAttribute("data-key") === st.hl);
  }
  // dragging on the chart picks the window
  var drag = null;
  function svgX(e) { var r = chart.getBoundingClientRect(); return ((e.clientX - r.left) / r.width) * W; }
  chart.addEventListener("mousedown", function (e) { drag = secOfX(svgX(e)); e.preventDefault(); });
  window.addEventListener("mousemove", function (e) {
    if (drag === null) return;
    var s = secOfX(svgX(e));
    st.win = [Math.min(drag, s), Math.max(drag, s)];
    placeBrush();
  });
  window.addEventListener("mouseup", function () {
    if (drag === null) return;
    drag = null;
    if (st.win[1] - st.win[0] < SPAN / 200) st.win = [0, SPAN];
    placeBrush();
    st.zoom.growth = null;
    drawFlames();
  });

  // ---- verdicts
  el("h2", {}, app, "Leak verdicts");
  el("div", { class: "note", id: "verdict-note" }, app, D.verdict_note);
  var table = el("table", { id: "verdicts" }, app);
  var head = el("tr", {}, table);
  ["stack", "verdict", "confidence", "rate (90% interval)", "in use at the end", "live samples"].forEach(function (h) { el("th", {}, head, h); });
  D.verdicts.forEach(function (v) {
    var charted = D.series.some(function (s) { return s.s === v.s; });
    var tr = el("tr", { class: (charted ? "link " : "") + (v.class === "steady growth" ? "steady" : ""), "data-key": "s" + v.s }, table);
    el("td", { title: stackTitle(v.s) }, tr, D.names[v.s]);
    el("td", {}, tr, v.class + (v.wait !== null && v.class !== "steady growth" ? " (wait ~" + fmtT(v.wait) + ")" : ""));
    el("td", {}, tr, v.class === "steady growth" ? v.confidence : "");
    el("td", { class: "num" }, tr, v.class === "steady growth"
      ? fmtV(v.rate) + "/s (" + fmtV(v.lo) + " – " + fmtV(v.hi) + ")" : "");
    el("td", { class: "num" }, tr, fmtV(v.inuse));
    el("td", { class: "num" }, tr, String(v.samples));
    if (charted) tr.addEventListener("click", function () {
      if (st.split >= 0) { st.split = -1; splitSel.value = "-1"; fillValues(); }
      highlight("s" + v.s);
      chart.scrollIntoView({ block: "nearest" });
    });
  });
  if (!D.verdicts.length) el("div", { class: "note" }, app, "No stack is a leak suspect, plateau or undecided.");

  // ---- flame graphs
  el("h2", {}, app, "In use at the end");
  var flameEnd = el("div", { id: "flame-end" }, app);
  el("h2", {}, app, "Growth over the window: allocated in it and still live at the end");
  var flameGrowth = el("div", { id: "flame-growth" }, app);
  var flamePeak = null;
  if (D.peak) {
    el("h2", {}, app, "At the peak: what was live when the estimated in-use heap was highest");
    flamePeak = el("div", { id: "flame-peak" }, app);
  }

  function fillValues() {
    valueSel.textContent = "";
    el("option", { value: "-1" }, valueSel, "all samples");
    if (st.split >= 0) D.label_values[st.split].forEach(function (v, i) {
      el("option", { value: String(i) }, valueSel, D.label_keys[st.split] + "=" + v);
    });
    valueSel.value = String(st.value);
    valueLabel.style.display = st.split >= 0 ? "" : "none";
  }
  function tree(keep, entries) {
    var root = { name: "all", v: 0, kids: {} };
    (entries || D.end).forEach(function (e) {
      if (!keep(e)) return;
      if (st.split >= 0 && st.value >= 0 && e[3 + st.split] !== st.value) return;
      var node = root;
      root.v += e[1];
      D.stacks[e[0]].forEach(function (f) {
        var name = D.funcs[f];
        var k = node.kids[name] || (node.kids[name] = { name: name, v: 0, kids: {} });
        k.v += e[1];
        node = k;
      });
    });
    return root;
  }
  function matcher() {
    if (!st.search) return null;
    try { return new RegExp(st.search, "i"); } catch (e) { var s = st.search.toLowerCase(); return { test: function (n) { return n.toLowerCase().indexOf(s) >= 0; } }; }
  }
  function drawFlame(div, root, which, empty) {
    div.textContent = "";
    if (!root.v) { el("div", { class: "note" }, div, empty); return; }
    var path = st.zoom[which] || [];
    var top = root, trail = [root];
    for (var i = 0; i < path.length && top.kids[path[i]]; i++) { top = top.kids[path[i]]; trail.push(top); }
    var RH = 17, depth = 0;
    (function d(n, l) { depth = Math.max(depth, l); for (var k in n.kids) d(n.kids[k], l + 1); })(top, 0);
    var re = matcher(), matched = 0;
    var svgEl = sv("svg", { class: "flame", viewBox: "0 0 " + W + " " + (depth + trail.length + 1) * RH, width: W, height: (depth + trail.length + 1) * RH }, div);
    function box(n, x, w, y, onclick, partial) {
      var hit = re && re.test(n.name);
      var g = sv("g", {}, svgEl);
      var c = "hsl(" + (hash(n.name) % 55) + "," + (60 + hash(n.name) % 30) + "%," + (partial ? 80 : 62) + "%)";
      var r = sv("rect", { x: x.toFixed(1), y: y, width: Math.max(0.5, w).toFixed(1), height: RH - 1, fill: c, class: hit ? "match" : "" }, g);
      sv("title", {}, g, n.name + "\n" + fmtV(n.v) + " (" + (100 * n.v / root.v).toFixed(1) + "%)");
      if (w > 30) {
        var chars = Math.floor((w - 6) / 6.5);
        sv("text", { x: (x + 3).toFixed(1), y: y + RH - 5 }, g, n.name.length > chars ? n.name.slice(0, Math.max(0, chars - 1)) + "…" : n.name);
      }
      r.addEventListener("click", onclick);
      return hit;
    }
    // the zoom trail: click an ancestor to zoom out to it
    trail.forEach(function (n, i) {
      box(n, 0, W, i * RH, function () { st.zoom[which] = path.slice(0, i); drawFlames(); }, i < trail.length - 1);
    });
    var y0 = trail.length * RH;
    (function lay(n, x, w, y, p) {
      var keys = Object.keys(n.kids).sort(function (a, b) { return n.kids[b].v - n.kids[a].v; });
      var cx = x;
      keys.forEach(function (k) {
        var kid = n.kids[k], kw = (w * kid.v) / n.v;
        if (kw < 0.3) { cx += kw; return; }
        var kp = p.concat([k]);
        if (box(kid, cx, kw, y, function () { st.zoom[which] = kp; drawFlames(); })) matched += kid.v;
        lay(kid, cx, kw, y + RH, kp);
        cx += kw;
      });
    })(top, 0, W, y0, path);
    if (re) el("div", { class: "note" }, div, "search matches " + fmtV(matched) + " of " + fmtV(root.v));
  }
  function drawFlames() {
    drawFlame(flameEnd, tree(function () { return true; }), "end", "nothing in use");
    if (flamePeak) drawFlame(flamePeak, tree(function () { return true; }, D.peak), "peak", "nothing live at the peak");
    if (!D.has_ages) {
      flameGrowth.textContent = "";
      el("div", { class: "note" }, flameGrowth, "These profiles carry no age labels, so allocation times are unknown.");
      return;
    }
    var a = st.win[0], b = st.win[1];
    drawFlame(flameGrowth, tree(function (e) { return e[2] + D.born_step > a && e[2] <= b; }), "growth",
      "nothing allocated in the window is still live");
  }

  splitSel.addEventListener("change", function () {
    st.split = Number(splitSel.value); st.value = -1; st.hl = null; fillValues(); drawChart(); drawFlames();
  });
  valueSel.addEventListener("change", function () { st.value = Number(valueSel.value); st.zoom = { end: null, growth: null, peak: null }; drawFlames(); });
  search.addEventListener("input", function () { st.search = search.value; drawFlames(); });

  fillValues();
  var points = drawChart();
  drawFlames();
  el("div", { id: "status" }, app, "ok " + points + " points");
})();
