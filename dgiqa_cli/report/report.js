(function () {
  "use strict";
  // Everything shown comes from the JSON below and is put on the page as text (textContent), never as markup.
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var R = D.rows;
  var n = R.name.length;
  var CELL_W = 190, CELL_H = 246;
  var scored = [];
  for (var i = 0; i < n; i++) if (R.score[i] !== null) scored.push(i);
  var byId = function (id) { return document.getElementById(id); };

  var DIGITS = D.histogram ? D.histogram.digits : 4;
  function fmt(x) { return x === null || x === undefined ? "–" : x.toFixed(DIGITS); }
  function shown(i) { return D.display[i] !== undefined ? D.display[i] : R.name[i]; }
  function base(name) { return name.slice(Math.max(name.lastIndexOf("/"), name.lastIndexOf("\\")) + 1); }
  function thumb(i) { return R.thumb[i] >= 0 ? D.thumbs[R.thumb[i]] : D.placeholder; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function scoreLine(i) {
    var line = el("div", "score", fmt(R.score[i]));
    if (R.lo[i] !== null && R.hi[i] !== null) line.appendChild(el("span", "interval", "  " + fmt(R.lo[i]) + "–" + fmt(R.hi[i])));
    return line;
  }

  // -- threshold ----------------------------------------------------------------------------------------------------
  var slider = byId("threshold"), threshold = D.histogram ? D.histogram.lo : 0;
  function passes(i) { return R.score[i] >= threshold; }
  function passCount() {
    var k = 0;
    for (var j = 0; j < scored.length; j++) if (R.score[scored[j]] >= threshold) k++;
    return k;
  }
  function setThreshold(value) {
    threshold = value;
    byId("threshold-value").textContent = fmt(value);
    byId("threshold-value").dataset.value = String(value);
    var k = passCount();
    byId("pass-count").textContent = k + " of " + scored.length + " pass (score ≥ " + fmt(value) + "), " + (scored.length - k) + " below";
    var h = D.histogram, line = byId("threshold-line");
    if (h && line) {
      var x = h.x0 + (value - h.lo) / (h.hi - h.lo) * h.width;
      line.setAttribute("x1", x); line.setAttribute("x2", x);
      var bars = document.querySelectorAll("svg.histogram .bar");
      for (var b = 0; b < bars.length; b++) bars[b].classList.toggle("below", parseFloat(bars[b].dataset.hi) <= value);
    }
    refresh();
  }
  function download(above) {
    var lines = ["path,score"];
    for (var j = 0; j < scored.length; j++) {
      var r = scored[j];
      if (passes(r) === above) lines.push('"' + R.name[r].replace(/"/g, '""') + '",' + R.score[r]);
    }
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
    a.download = (above ? "above_" : "below_") + fmt(threshold) + ".csv";
    document.body.appendChild(a); a.click(); a.remove();
  }
  if (D.histogram) {
    // Positions 0..1000 rather than scores: the browser rounds a range's value to 15 digits, which would put
    // the lowest score below a threshold set "at" it. Position 0 is the lowest score exactly, 1000 the highest.
    slider.min = 0; slider.max = 1000; slider.step = 1; slider.value = 0;
    slider.addEventListener("input", function () {
      var at = parseInt(slider.value, 10), h = D.histogram;
      setThreshold(at >= 1000 ? h.hi : h.lo + (h.hi - h.lo) * at / 1000);
    });
    byId("download-above").addEventListener("click", function () { download(true); });
    byId("download-below").addEventListener("click", function () { download(false); });
  } else {
    byId("threshold-controls").hidden = true;
  }

  // -- gallery: only the cards on screen exist, so 100 000 rows open as fast as 100 ----------------------------------
  var gallery = byId("gallery"), sizer = byId("gallery-sizer"), order = [], columns = 1, drawn = "";
  var sorters = {
    "score-asc": function (a, b) { return R.score[a] - R.score[b] || a - b; },
    "score-desc": function (a, b) { return R.score[b] - R.score[a] || a - b; },
    "std-desc": function (a, b) { return (R.std[b] === null ? -1 : R.std[b]) - (R.std[a] === null ? -1 : R.std[a]) || a - b; },
    "name": function (a, b) { return R.name[a] < R.name[b] ? -1 : R.name[a] > R.name[b] ? 1 : a - b; }
  };
  function card(i) {
    var c = el("figure", "card" + (passes(i) ? "" : " below"));
    c.dataset.row = i;
    var img = el("img"); img.alt = ""; img.decoding = "async"; img.src = thumb(i);
    c.appendChild(img);
    var name = el("div", "name", base(shown(i))); name.title = shown(i);
    c.appendChild(name);
    c.appendChild(scoreLine(i));
    c.appendChild(el("div", "size", R.w[i] !== null ? R.w[i] + "×" + R.h[i] : ""));
    if (R.note[i]) c.appendChild(el("div", "note", R.note[i]));
    c.addEventListener("click", function () { openView(i); });
    return c;
  }
  function draw(force) {
    columns = Math.max(1, Math.floor(gallery.clientWidth / CELL_W));
    var rows = Math.ceil(order.length / columns);
    sizer.style.height = rows * CELL_H + "px";
    var first = Math.max(0, Math.floor(gallery.scrollTop / CELL_H) - 1);
    var last = Math.min(rows, Math.ceil((gallery.scrollTop + gallery.clientHeight) / CELL_H) + 1);
    var key = first + ":" + last + ":" + columns;
    if (key === drawn && !force) return;
    drawn = key;
    var frag = document.createDocumentFragment();
    for (var r = first; r < last; r++) {
      for (var col = 0; col < columns; col++) {
        var at = r * columns + col;
        if (at >= order.length) break;
        var c = card(order[at]);
        c.style.top = r * CELL_H + "px"; c.style.left = col * CELL_W + "px";
        frag.appendChild(c);
      }
    }
    sizer.replaceChildren(frag);
  }
  function refresh() {
    var text = byId("filter").value.toLowerCase(), show = byId("show").value;
    order = scored.filter(function (i) {
      if (show !== "all" && passes(i) !== (show === "above")) return false;
      return !text || shown(i).toLowerCase().indexOf(text) >= 0;
    });
    order.sort(sorters[byId("sort").value]);
    byId("shown-count").textContent = order.length + " of " + scored.length + " scored pictures";
    draw(true);
  }
  var pending = false;
  gallery.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; draw(false); });
  });
  // Redrawn whenever the gallery's size changes: a window resized, or a notebook frame laid out after the script ran.
  if (window.ResizeObserver) new ResizeObserver(function () { draw(true); }).observe(gallery);
  else window.addEventListener("resize", function () { draw(true); });
  byId("sort").addEventListener("change", refresh);
  byId("show").addEventListener("change", refresh);
  byId("filter").addEventListener("input", refresh);

  // -- the larger view, with the explain panel where there is one ---------------------------------------------------
  var view = byId("view");
  function openView(i) {
    byId("view-image").src = R.panel[i] >= 0 ? D.panels[R.panel[i]] : thumb(i);
    var details = byId("view-details");
    details.replaceChildren(el("div", "name", shown(i)), scoreLine(i));
    if (R.std[i] !== null) details.appendChild(el("div", "muted", "score_std " + fmt(R.std[i])));
    if (R.w[i] !== null) details.appendChild(el("div", "muted", R.w[i] + "×" + R.h[i] + " pixels"));
    if (R.note[i]) details.appendChild(el("div", "note", R.note[i]));
    if (R.panel[i] < 0) details.appendChild(el("div", "muted", "no explain panel for this picture"));
    view.showModal();
  }
  byId("view-close").addEventListener("click", function () { view.close(); });
  view.addEventListener("click", function (event) { if (event.target === view) view.close(); });

  // -- lowest and highest N, with their panels -----------------------------------------------------------------------
  function extremes(id, rows, title) {
    byId(id + "-title").textContent = title;
    if (!rows.length) { byId(id + "-section").hidden = true; return; }
    var frag = document.createDocumentFragment();
    rows.forEach(function (i) {
      var f = el("figure", R.panel[i] >= 0 ? "extreme with-panel" : "extreme");
      f.dataset.row = i;
      var img = el("img"); img.alt = ""; img.src = R.panel[i] >= 0 ? D.panels[R.panel[i]] : thumb(i);
      f.appendChild(img);
      var cap = el("figcaption");
      cap.appendChild(scoreLine(i));
      cap.appendChild(el("div", "name", shown(i)));
      if (R.note[i]) cap.appendChild(el("div", "note", R.note[i]));
      f.appendChild(cap);
      f.addEventListener("click", function () { openView(i); });
      frag.appendChild(f);
    });
    byId(id).replaceChildren(frag);
  }
  extremes("lowest", D.lowest, "Lowest " + D.lowest.length);
  extremes("highest", D.highest, "Highest " + D.highest.length);

  // The threshold starts at the lowest score: every picture passes until the slider is moved.
  if (D.histogram) setThreshold(D.histogram.lo); else refresh();
  window.dgiqaReportReady = performance.now();
})();
