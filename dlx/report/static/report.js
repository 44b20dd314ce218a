/* dlx report: draws the page's charts (uPlot, vendored) from the inline JSON, sorts tables,
   toggles runs, and draws the sweep's parallel coordinates as SVG. No network. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("dlx-data").textContent);
  var plots = [];

  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v !== "number") return String(v);
    if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(3);
    return String(Number(v.toPrecision(Math.abs(v) < 1 ? 4 : 6)));
  }

  function tick(v) {  // axis labels: short
    if (v === null || v === undefined) return "";
    if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(1);
    return String(Number(v.toPrecision(4)));
  }

  // ----- charts
  function seriesOpts(s) {
    var o = {
      label: s.label,
      stroke: s.color,
      width: 1.5,
      spanGaps: true,
      value: function (u, v) { return fmt(v); },
      points: { show: s.style !== "line", size: s.style === "points" ? 7 : 5, fill: s.color },
    };
    if (s.style === "points") o.paths = function () { return null; };
    if (s.style === "step") o.paths = uPlot.paths.stepped({ align: 1 });
    return o;
  }

  function drawChart(el, spec) {
    var width = Math.max(280, Math.min(el.clientWidth || 480, 640));
    var opts = {
      title: spec.title,
      width: width,
      height: 240,
      scales: { x: { time: false } },
      series: [{ label: spec.xlabel, value: function (u, v) { return fmt(v); } }].concat(
        spec.series.map(seriesOpts)),
      axes: [{ label: spec.xlabel }, { size: 64, values: function (u, vs) { return vs.map(tick); } }],
      legend: { live: true },
      cursor: { points: { size: 6 } },
    };
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    var u = new uPlot(opts, data, el);
    u.dlxSpec = spec;
    plots.push(u);
    return u;
  }

  (DATA.charts || []).forEach(function (spec) {
    var el = document.querySelector('[data-chart="' + spec.id + '"]');
    if (el) drawChart(el, spec);
  });

  // ----- toggling runs across every chart
  document.querySelectorAll("#run-toggles input[data-run]").forEach(function (box) {
    box.addEventListener("change", function () {
      var run = Number(box.dataset.run);
      plots.forEach(function (u) {
        u.dlxSpec.series.forEach(function (s, i) {
          if (s.run === run) u.setSeries(i + 1, { show: box.checked });
        });
      });
      var row = document.querySelectorAll("#runs-table tbody tr")[run];
      if (row) row.classList.toggle("hidden-run", !box.checked);
    });
  });

  // ----- sortable tables
  function key(td) {
    if (!td) return { n: null, t: "" };
    var v = td.getAttribute("data-v");
    return { n: v === null ? null : Number(v), t: td.textContent.trim() };
  }
  document.querySelectorAll("table.sortable").forEach(function (tbl) {
    var ths = tbl.querySelectorAll("thead th");
    ths.forEach(function (th, col) {
      th.classList.add("sort-key");
      th.title = "sort";
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        ths.forEach(function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = tbl.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          var r;
          if (x.n !== null && y.n !== null) r = x.n - y.n;
          else if (x.n !== null) return -1;  // empty cells last, either way
          else if (y.n !== null) return 1;
          else if (x.t === "" || y.t === "") return x.t === "" ? (y.t === "" ? 0 : 1) : -1;
          else r = x.t.localeCompare(y.t);
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  // ----- parallel coordinates (SVG)
  var NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function ramp(t) {  // dark blue (worst) -> yellow (best)
    var a = [68, 1, 84], m = [33, 145, 140], b = [253, 231, 37];
    var lo = t < 0.5 ? a : m, hi = t < 0.5 ? m : b, f = t < 0.5 ? t * 2 : (t - 0.5) * 2;
    return "rgb(" + lo.map(function (c, i) { return Math.round(c + (hi[i] - c) * f); }).join(",") + ")";
  }
  function scale(axis, vals) {
    if (axis.type === "cat") {
      // values arrive as indexes into cats
      var cats = axis.cats || [];
      var pos = function (i) { return cats.length === 1 ? 0.5 : i / (cats.length - 1); };
      return {
        ticks: cats.map(function (c, i) { return [pos(i), c]; }),
        at: function (v) { return typeof v === "number" ? pos(v) : NaN; },
      };
    }
    var log = axis.type === "log";
    var f = function (v) { return log ? Math.log10(v) : v; };
    var nums = vals.filter(function (v) { return typeof v === "number" && (!log || v > 0); }).map(f);
    var lo = Math.min.apply(null, nums), hi = Math.max.apply(null, nums);
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    var at = function (v) { return (f(v) - lo) / (hi - lo); };
    var ticks = [0, 0.5, 1].map(function (t) {
      var x = lo + t * (hi - lo);
      return [t, fmt(log ? Math.pow(10, x) : x)];
    });
    return { ticks: ticks, at: at };
  }
  function parcoords(el, pc) {
    var axes = pc.axes.concat([{ key: pc.metric, type: "linear" }]);
    var W = Math.max(480, el.clientWidth || 800), H = 360, top = 40, bottom = 30, side = 70;
    var s = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" }, el);
    var gap = (W - 2 * side) / Math.max(1, axes.length - 1);
    var scales = axes.map(function (a, j) {
      var vals = pc.rows.map(function (r) { return j < pc.axes.length ? r.values[j] : r.value; });
      return scale(a, vals);
    });
    var y = function (t) { return H - bottom - t * (H - top - bottom); };
    var values = pc.rows.map(function (r) { return r.value; });
    var vlo = Math.min.apply(null, values), vhi = Math.max.apply(null, values);
    var tip = document.createElement("div");
    tip.className = "pc-tip";
    el.appendChild(tip);
    var lines = svg("g", { "class": "pc-lines" }, s);
    pc.rows.forEach(function (r) {
      var pts = axes.map(function (a, j) {
        var v = j < pc.axes.length ? r.values[j] : r.value;
        var t = v === null || v === undefined ? NaN : scales[j].at(v);
        if (!isFinite(t)) t = -0.06;  // no value: just below the axis
        return (side + j * gap).toFixed(1) + "," + y(t).toFixed(1);
      });
      var t = vhi > vlo ? (r.value - vlo) / (vhi - vlo) : 1;
      if (!pc.maximize) t = 1 - t;
      var line = svg("polyline", {
        points: pts.join(" "), fill: "none", stroke: ramp(t), "stroke-width": 2,
        "stroke-opacity": 0.85, "class": "pc-line", "data-trial": r.trial,
      }, lines);
      if (r.status === "pruned") line.setAttribute("stroke-dasharray", "5,4");
      var text = "trial " + r.trial + " (" + r.status + "): " + axes.map(function (a, j) {
        return a.key + "=" + fmt(j < pc.axes.length ? r.values[j] : r.value);
      }).join(", ");
      svg("title", {}, line).textContent = text;
      line.addEventListener("mouseenter", function () {
        line.classList.add("pc-hot");
        lines.appendChild(line);
        tip.textContent = text;
      });
      line.addEventListener("mouseleave", function () { line.classList.remove("pc-hot"); });
    });
    axes.forEach(function (a, j) {
      var x = side + j * gap;
      var g = svg("g", { "class": "pc-axis" }, s);
      svg("line", { x1: x, x2: x, y1: y(0), y2: y(1), stroke: "#333" }, g);
      svg("text", { x: x, y: top - 18, "text-anchor": "middle", "class": "pc-label" }, g)
        .textContent = a.key + (a.type === "log" ? " (log)" : "");
      scales[j].ticks.forEach(function (tk) {
        svg("line", { x1: x - 4, x2: x, y1: y(tk[0]), y2: y(tk[0]), stroke: "#333" }, g);
        svg("text", { x: x - 6, y: y(tk[0]) + 4, "text-anchor": "end", "class": "pc-tick" }, g)
          .textContent = tk[1];
      });
    });
  }
  var pcEl = document.getElementById("parcoords");
  if (pcEl && DATA.parcoords) parcoords(pcEl, DATA.parcoords);

  // ----- keep charts to their column's width
  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      plots.forEach(function (u) {
        var w = Math.max(280, Math.min(u.root.parentNode.clientWidth || 480, 640));
        u.setSize({ width: w, height: 240 });
      });
    }, 150);
  });
  document.body.setAttribute("data-ready", "1");
})();
