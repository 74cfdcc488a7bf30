"""One self-contained ``report.html``: provenance, BD tables, plots and a visual comparison grid.

Everything is inlined (PNG as base64 data URIs, CSS in the page), so the file can be mailed or
attached to a CI run. The visual grid shows the same crop of a few images for every codec at a
similar bpp, taken from ``recon/`` when the run saved reconstructions, otherwise decoded from the
stored bitstreams with the codec itself.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rdp_bench.atomic import atomic_write_text
from rdp_bench.container import FRAMING_BYTES
from rdp_bench.reports.bdrate import BDTable, to_html
from rdp_bench.reports.runs import Aggregate, metric_spec

CSS = r"""
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}p.caption{font-weight:600;margin:1em 0 .2em}
td.best{font-weight:700;background:#e8f5e9}td.na{color:#888;font-size:.85em}td.weak{color:#999}td.note{text-align:left;color:#666;font-size:.85em}tr.anchor td{color:#555;font-style:italic}
.legend,.note{font-size:.85em;color:#555}.warn{background:#fff8e1;border-left:4px solid #ffb300;padding:.4em .8em}
.plots img{max-width:100%;border:1px solid #eee;margin:.3em 0}figure{margin:.5em 0}
.grid{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-start}.cell{font-size:.78em;text-align:center;break-inside:avoid}
.cell img{image-rendering:auto;border:1px solid #ccc;display:block;cursor:zoom-in}
.zoom .cell img{image-rendering:pixelated}
.cell .missing{border:1px dashed #c00;color:#c00;padding:2em .3em;width:12em}
.cell .showing{color:#b00;font-weight:600}.image{break-inside:avoid}
code,pre{font-size:.85em;background:#f6f8fa}pre{padding:.6em;overflow:auto;max-height:24em}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \2195";color:#bbb}
table.sortable th[data-dir=asc]:after{content:" \2191";color:#333}table.sortable th[data-dir=desc]:after{content:" \2193";color:#333}
.scroll{max-height:30em;overflow:auto}
#iplot{border:1px solid #eee;max-width:100%;height:auto;cursor:crosshair}#iplot text{font-size:11px}
.toggles label{margin-right:1em;font-size:.85em;cursor:pointer}
#tip{position:absolute;background:#fff;border:1px solid #999;padding:.2em .4em;font-size:.8em;pointer-events:none;display:none}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);color:#eee;display:flex;flex-direction:column;align-items:center;
 justify-content:center;z-index:10;font-size:.9em}
#lightbox .stage{position:relative;cursor:ew-resize}#lightbox .stage img{position:absolute;left:0;top:0;width:100%;height:100%;
 image-rendering:pixelated}#lightbox .divider{position:absolute;top:0;bottom:0;width:1px;background:#ff0}
#lightbox input[type=range]{width:20em;vertical-align:middle}
@media print{body{max-width:none;margin:0;font-size:10pt}.noprint,details,#tip,#lightbox{display:none}h2,h3{break-after:avoid}
 .image,.cell,figure,table.bd,tr{break-inside:avoid}.scroll{max-height:none;overflow:visible}a{color:inherit;text-decoration:none}
 .plots img{max-width:100%;max-height:9in}table.sortable th:after{content:none}}
"""

# Bundled, no CDN: the page must work offline and from a CI artifact. Marks the body with image counts
# (for a headless browser test), sorts tables, zooms crops (with an A/B wipe against the original), swaps a
# row of crops to the original, and draws the interactive curves from the JSON in #plot-data.
SCRIPT = r"""
(function () {
  'use strict';
  function each(list, f) { Array.prototype.forEach.call(list, f); }
  function ready() {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
    document.body.setAttribute('data-images', String(imgs.length));
    document.body.setAttribute('data-images-broken', String(broken.length));
  }
  function sortable(table) {
    var heads = table.tHead.rows[0].cells;
    each(heads, function (th, col) {
      th.title = 'click to sort';
      th.addEventListener('click', function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
        each(heads, function (h) { h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
          if (x === null) { x = a.cells[col].textContent; }
          if (y === null) { y = b.cells[col].textContent; }
          var nx = parseFloat(x), ny = parseFloat(y);
          if (isNaN(nx) !== isNaN(ny)) { return isNaN(nx) ? 1 : -1; }  // n/a last either way
          if (!isNaN(nx)) { return dir * (nx - ny); }
          return dir * String(x).localeCompare(String(y));
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  // ---- the visual grid: A/B of a row, click-to-zoom with a wipe against the original
  function originalOf(img) {
    var o = document.getElementById(img.getAttribute('data-alt') || '');
    return o ? o.src : '';
  }
  function rowToggle(box) {  // every crop of one image shows the original at once (synchronised A/B)
    box.addEventListener('change', function () {
      var grid = document.getElementById(box.getAttribute('data-grid'));
      each(grid.querySelectorAll('img[data-alt]'), function (img) {
        img.src = box.checked ? originalOf(img) : img.getAttribute('data-src');
        var label = img.parentNode.querySelector('.which');
        if (label) { label.textContent = box.checked ? 'showing: original' : ''; label.className = box.checked ? 'which showing' : 'which'; }
      });
    });
  }
  var opened = null;
  function closeZoom() {
    if (opened) { opened.parentNode.removeChild(opened); opened = null; }
    document.body.removeAttribute('data-lightbox');
  }
  function openZoom(img) {
    closeZoom();
    var w = img.naturalWidth, h = img.naturalHeight;
    var f = Math.max(2, Math.min(6, Math.floor(Math.min(window.innerWidth * 0.92 / w, window.innerHeight * 0.78 / h))));
    var box = document.createElement('div'), stage = document.createElement('div');
    box.id = 'lightbox'; stage.className = 'stage';
    stage.style.width = (w * f) + 'px'; stage.style.height = (h * f) + 'px';
    var codec = document.createElement('img');
    codec.src = img.getAttribute('data-src') || img.src; codec.alt = img.alt; stage.appendChild(codec);
    var cap = document.createElement('p'), cell = img.parentNode.querySelector('.cap'), words = [img.alt];
    if (cell) {  // the crop's caption, its lines joined
      words = Array.prototype.map.call(cell.childNodes, function (n) { return n.textContent.trim(); })
        .filter(function (t) { return t; });
    }
    cap.textContent = words.join(' · ') + ' · ' + f + '× nearest neighbour';
    var orig = originalOf(img);
    if (orig) {
      var a = document.createElement('img'), line = document.createElement('div'), slider = document.createElement('input');
      a.src = orig; a.alt = 'original'; a.className = 'a'; line.className = 'divider';
      stage.appendChild(a); stage.appendChild(line);
      slider.type = 'range'; slider.min = '0'; slider.max = '100'; slider.value = '50';
      var wipe = function (v) {
        slider.value = String(v); a.style.clipPath = 'inset(0 ' + (100 - v) + '% 0 0)'; line.style.left = v + '%';
      };
      slider.addEventListener('input', function () { wipe(parseFloat(slider.value)); });
      var dragging = false;
      var follow = function (ev) {
        var r = stage.getBoundingClientRect();
        wipe(Math.max(0, Math.min(100, 100 * (ev.clientX - r.left) / r.width)));
      };
      stage.addEventListener('mousedown', function (ev) { dragging = true; follow(ev); ev.preventDefault(); });
      stage.addEventListener('mousemove', function (ev) { if (dragging) { follow(ev); } });
      window.addEventListener('mouseup', function () { dragging = false; });
      var ctl = document.createElement('p'), l = document.createElement('span'), r = document.createElement('span');
      l.textContent = 'original '; r.textContent = ' ' + img.alt.split(' ')[0];
      ctl.appendChild(l); ctl.appendChild(slider); ctl.appendChild(r);
      box.appendChild(stage); box.appendChild(ctl);
      wipe(50);
    } else {
      box.appendChild(stage);
    }
    var close = document.createElement('button');
    close.textContent = 'close (Esc)'; close.addEventListener('click', closeZoom);
    cap.appendChild(document.createTextNode(' ')); cap.appendChild(close);
    box.appendChild(cap);
    box.addEventListener('click', function (ev) { if (ev.target === box) { closeZoom(); } });
    document.body.appendChild(box); opened = box;
    document.body.setAttribute('data-lightbox', 'open');
  }

  // ---- the interactive plot
  var SVGNS = 'http://www.w3.org/2000/svg';
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function extent(values, fallback) {
    if (!values.length) { return fallback; }
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (hi === lo) { var d = Math.abs(lo) * 0.05 || 1; lo -= d; hi += d; }
    return [lo, hi];
  }
  function ticks(lo, hi, log) {  // round numbers: 1/2/5 x 10^k per decade on a log axis, else a 1/2/5 step
    var out = [], k, v;
    if (log) {
      for (k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
        [1, 2, 5].forEach(function (m) { var t = m * Math.pow(10, k); if (t >= lo && t <= hi) { out.push(t); } });
      }
      if (out.length >= 2) { return out; }
      out = [];
    }
    var raw = (hi - lo) / 5, p = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / p;
    var step = (n < 1.5 ? 1 : n < 3.5 ? 2 : n < 7.5 ? 5 : 10) * p;
    for (v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) { out.push(Number(v.toPrecision(12))); }
    return out;
  }
  function label(v) { return String(Number(v.toPrecision(6))); }
  function plot(data) {
    var svg = document.getElementById('iplot'), select = document.getElementById('iplot-metric');
    var toggles = document.getElementById('iplot-codecs'), tip = document.getElementById('tip');
    var logx = document.getElementById('iplot-log'), reset = document.getElementById('iplot-reset');
    if (!svg || !data.metrics.length) { return; }
    var hidden = {}, W = 720, H = 420, L = 62, R = 16, T = 16, B = 46, view = null, sx = null;
    data.metrics.forEach(function (m, i) {
      var o = document.createElement('option'); o.value = String(i); o.textContent = m.axis; select.appendChild(o);
    });
    data.codecs.forEach(function (c) {
      var lab = document.createElement('label'), box = document.createElement('input');
      box.type = 'checkbox'; box.checked = true; box.setAttribute('data-codec', c.name);
      box.addEventListener('change', function () { hidden[c.name] = !box.checked; draw(); });
      lab.appendChild(box); lab.appendChild(document.createTextNode(' ' + c.name + (c.anchor ? ' (anchor, dashed)' : '')));
      lab.style.color = c.color; toggles.appendChild(lab);
    });
    select.addEventListener('change', function () { view = null; draw(); });
    logx.addEventListener('change', function () { view = null; draw(); });
    reset.addEventListener('click', function () { view = null; draw(); });
    svg.addEventListener('dblclick', function () { view = null; draw(); });
    function local(ev) {  // event position in viewBox units (the svg may be scaled to the page)
      var r = svg.getBoundingClientRect();
      return (ev.clientX - r.left) * W / r.width;
    }
    var drag = null, band = null;
    svg.addEventListener('mousedown', function (ev) {
      drag = local(ev);
      band = el('rect', {x: drag, y: T, width: 0, height: H - T - B, fill: 'rgba(80,120,200,.15)'}, svg);
      ev.preventDefault();
    });
    svg.addEventListener('mousemove', function (ev) {
      if (drag === null || !band) { return; }
      var x = local(ev);
      band.setAttribute('x', String(Math.min(x, drag))); band.setAttribute('width', String(Math.abs(x - drag)));
    });
    window.addEventListener('mouseup', function (ev) {  // drag across to zoom into a bpp range
      if (drag === null) { return; }
      var x = local(ev);
      if (Math.abs(x - drag) > 8 && sx) { view = [sx.inv(Math.min(drag, x)), sx.inv(Math.max(drag, x))]; }
      drag = null; band = null; draw();
    });
    function visible(p) { return !view || (p[0] >= view[0] && p[0] <= view[1]); }
    function draw() {
      while (svg.firstChild) { svg.removeChild(svg.firstChild); }
      var m = data.metrics[parseInt(select.value || '0', 10)], pts = [], log = logx.checked;
      data.codecs.forEach(function (c) {
        if (!hidden[c.name]) { (m.curves[c.name] || []).filter(visible).forEach(function (p) { pts.push(p); }); }
      });
      var f = log ? Math.log : function (v) { return v; }, finv = log ? Math.exp : function (v) { return v; };
      var xr = view ? [f(view[0]), f(view[1])] : extent(pts.map(function (p) { return f(p[0]); }), [0, 1]);
      var yr = extent(pts.map(function (p) { return p[1]; }), [0, 1]);
      var xp = view ? 0 : 0.04 * (xr[1] - xr[0]), yp = 0.06 * (yr[1] - yr[0]);
      var x0 = xr[0] - xp, x1 = xr[1] + xp, y0 = yr[0] - yp, y1 = yr[1] + yp;
      if (!log && !view && xr[0] >= 0) { x0 = Math.max(0, x0); }  // no negative bpp on the axis
      sx = function (v) { return L + (f(v) - x0) / (x1 - x0) * (W - L - R); };
      sx.inv = function (px) { return finv(x0 + (px - L) / (W - L - R) * (x1 - x0)); };
      var sy = function (v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); };
      var clip = el('clipPath', {id: 'iplot-clip'}, el('defs', {}, svg));
      el('rect', {x: L, y: T, width: W - L - R, height: H - T - B}, clip);
      ticks(finv(x0), finv(x1), log).forEach(function (xv) {
        el('line', {x1: sx(xv), y1: T, x2: sx(xv), y2: H - B, stroke: '#f0f0f0'}, svg);
        el('text', {x: sx(xv), y: H - B + 15, 'text-anchor': 'middle'}, svg).textContent = label(xv);
      });
      ticks(y0, y1, false).forEach(function (yv) {
        el('line', {x1: L, y1: sy(yv), x2: W - R, y2: sy(yv), stroke: '#eee'}, svg);
        el('text', {x: L - 5, y: sy(yv) + 4, 'text-anchor': 'end'}, svg).textContent = label(yv);
      });
      el('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#333'}, svg);
      el('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#333'}, svg);
      el('text', {x: (L + W - R) / 2, y: H - 10, 'text-anchor': 'middle'}, svg).textContent =
        'bpp' + (log ? ' (log scale)' : '') + (view ? ' (zoomed: double-click or reset)' : '');
      el('text', {x: 14, y: (T + H - B) / 2, transform: 'rotate(-90 14 ' + (T + H - B) / 2 + ')', 'text-anchor': 'middle'}, svg).textContent = m.axis;
      var layer = el('g', {'clip-path': 'url(#iplot-clip)'}, svg), drawn = 0;
      data.codecs.forEach(function (c) {
        if (hidden[c.name] || !m.curves[c.name]) { return; }
        var cp = m.curves[c.name], kept = cp.filter(function (p) { return !p[3]; });
        if (!cp.filter(visible).length) { return; }
        drawn += 1;
        el('polyline', {points: kept.map(function (p) { return sx(p[0]) + ',' + sy(p[1]); }).join(' '), fill: 'none',
                        stroke: c.color, 'stroke-width': 1.6, 'stroke-dasharray': c.anchor ? '6,4' : 'none',
                        'data-codec': c.name}, layer);
        cp.forEach(function (p) {
          var dot = el('circle', {cx: sx(p[0]), cy: sy(p[1]), r: 4.5, fill: p[3] ? '#fff' : c.color, stroke: c.color,
                                  'stroke-width': 1.5}, layer);
          dot.addEventListener('mousemove', function (ev) {
            tip.style.display = 'block'; tip.style.left = (ev.pageX + 12) + 'px'; tip.style.top = (ev.pageY + 12) + 'px';
            tip.textContent = c.name + ' ' + p[2] + ': ' + p[0].toFixed(4) + ' bpp, ' + m.label + ' ' + p[1].toPrecision(5)
              + (p[3] ? ' (left out of BD: non-monotonic)' : '');
          });
          dot.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
        });
      });
      svg.setAttribute('data-curves', String(drawn));
    }
    draw();
    if (location.hash === '#selftest') {  // for the headless test: a toggle must change the drawing
      var before = svg.getAttribute('data-curves');
      var box = toggles.querySelector('input'); box.checked = false; box.dispatchEvent(new Event('change'));
      document.body.setAttribute('data-toggle', before + '->' + svg.getAttribute('data-curves'));
    }
  }

  window.addEventListener('load', function () {
    ready();
    each(document.querySelectorAll('table.sortable'), sortable);
    each(document.querySelectorAll('.cell img'), function (img) {
      img.setAttribute('data-src', img.src);
      img.title = 'click to zoom' + (img.getAttribute('data-alt') ? ' (with an A/B wipe against the original)' : '');
      img.addEventListener('click', function () { openZoom(img); });
    });
    each(document.querySelectorAll('input.ab-row'), rowToggle);
    document.addEventListener('keydown', function (ev) { if (ev.key === 'Escape') { closeZoom(); } });
    var zoom = document.getElementById('zoom');
    if (zoom) {
      zoom.addEventListener('change', function () {
        each(document.querySelectorAll('.grid img'), function (img) {
          img.style.width = zoom.checked ? (2 * img.naturalWidth) + 'px' : '';
          img.style.height = zoom.checked ? (2 * img.naturalHeight) + 'px' : '';
        });
        document.body.classList.toggle('zoom', zoom.checked);
      });
    }
    var holder = document.getElementById('plot-data');
    if (holder) { plot(JSON.parse(holder.textContent)); }
    if (location.hash === '#selftest') {  // and a crop must open zoomed
      var first = document.querySelector('.cell img[data-alt]');
      if (first) { first.click(); }
    }
  });
})();
"""


def png_data_uri(path_or_array: Path | np.ndarray) -> str:
    if isinstance(path_or_array, np.ndarray):
        buf = io.BytesIO()
        Image.fromarray(path_or_array).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    else:
        data = Path(path_or_array).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)


# ------------------------------------------------------------------------------------------
# visual comparison grid
# ------------------------------------------------------------------------------------------

@dataclass
class GridCell:
    codec: str
    rate_label: str
    bpp: float
    metrics: dict[str, float]
    crop: np.ndarray | None
    error: str = ""


def pick_crop(image: np.ndarray, size: int) -> tuple[int, int, int]:
    """Top-left corner and side of the most detailed square (gradient energy), where artifacts show."""
    h, w = image.shape[:2]
    size = min(size, h, w)
    gray = image.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    best, corner = -1.0, (0, 0)
    step = max(8, size // 4)
    for y in range(0, max(h - size, 0) + 1, step):
        for x in range(0, max(w - size, 0) + 1, step):
            y1, x1 = min(y + size - 1, energy.shape[0]), min(x + size - 1, energy.shape[1])
            total = integral[y1, x1] - integral[y, x1] - integral[y1, x] + integral[y, x]
            if total > best:
                best, corner = total, (y, x)
    return corner[0], corner[1], size


def _reconstruction(agg: Aggregate, codec: str, row: dict[str, Any], codec_cache: dict[str, Any]) -> np.ndarray:
    run, inner = agg.sources[codec]
    recon = run.path / "recon" / inner / _slug(str(row["rate_label"])) / Path(str(row["image_id"])).with_suffix(".png")
    if recon.exists():
        return np.asarray(Image.open(recon).convert("RGB"))
    stream = run.path / str(row.get("bitstream", ""))
    if not str(row.get("bitstream", "")) or not stream.is_file():
        raise FileNotFoundError(f"neither recon/ nor the bitstream {row.get('bitstream')} is in {run.path}")
    from rdp_bench.codecs import get_codec
    from rdp_bench.imageio import quantize_8bit, tensor_to_uint8

    if inner not in codec_cache:
        # the options the run used (e.g. checkpoint=FILE), so the bitstream decodes with the same weights:
        # per codec where the run recorded them, else the run's flat options this codec declares
        from rdp_bench.codecs import options_for

        entry = next((e for e in reversed(run.entries) if inner in e.get("codecs", {})), {})
        recorded = (entry.get("codecs") or {}).get(inner, {}).get("options")
        options = recorded if recorded is not None else options_for(inner, entry.get("codec_options") or {})
        codec_cache[inner] = get_codec(inner, device="cpu", **options)
    decoded = codec_cache[inner].decode([stream.read_bytes()])[0]
    return tensor_to_uint8(quantize_8bit(decoded.float().cpu()))


def _originals(agg: Aggregate) -> tuple[dict[str, np.ndarray], str]:
    """Original images by sha256, loaded from the dataset the run used (no download)."""
    from rdp_bench.datasets import load_dataset
    from rdp_bench.imageio import load_image_uint8

    names = agg.rows["dataset"].dropna().astype(str).unique()
    if len(names) != 1:
        return {}, f"rows come from {len(names)} datasets"
    wanted = set(agg.rows["image_sha256"])
    try:
        dataset = load_dataset(names[0], None, False, None)
    except Exception as exc:  # a remote dataset not on this machine: grid without originals
        return {}, f"dataset {names[0]!r} not available here ({exc})"
    out = {}
    for item in dataset.items:
        if item.image_id in set(agg.rows["image_id"]):
            sha = item.sha256()
            if sha in wanted:
                out[sha] = load_image_uint8(item.path)
    return out, ""


def build_grid(agg: Aggregate, n_images: int = 3, crop: int = 256, target_bpp: float | None = None,
               ) -> tuple[float, list[tuple[str, np.ndarray | None, list[GridCell]]], list[str]]:
    """(target bpp, [(image id, original crop, cells)], notes).

    Equal rate per image: for each image, every codec shows the rate point whose bpp *on that image* is
    nearest the target (a codec's mean bpp can be far from its bpp on one image)."""
    from rdp_bench.reports.plots import matched_rates

    notes: list[str] = []
    if target_bpp is None:
        targets = matched_rates(agg, count=1)
        target_bpp = targets[0] if targets else float(np.median(agg.points["bpp"]))
    originals, why = _originals(agg)
    if why:
        notes.append(f"originals not shown: {why}")
    image_ids = sorted(agg.rows["image_id"].astype(str).unique())[:n_images]
    metric_cols = [m for m in agg.metrics if m in agg.rows.columns]
    codec_cache: dict[str, Any] = {}
    out = []
    for image_id in image_ids:
        rows = agg.rows[agg.rows["image_id"].astype(str) == image_id]
        sha = str(rows["image_sha256"].iloc[0])
        original = originals.get(sha)
        box = pick_crop(original, crop) if original is not None else None
        cells = []
        for codec in agg.codecs:
            hits = rows[rows["codec"] == codec]
            if hits.empty:
                continue
            i = int(np.argmin(np.abs(np.log(hits["bpp"].to_numpy(float)) - math.log(target_bpp))))
            row = hits.iloc[i].to_dict()
            label = str(row["rate_label"])
            vals = {m: float(row[m]) for m in metric_cols if isinstance(row.get(m), (int, float)) and math.isfinite(row[m])}
            try:
                rec = _reconstruction(agg, codec, row, codec_cache)
                if box is None:
                    box = pick_crop(rec, crop)
                y, x, s = box
                cells.append(GridCell(codec, label, float(row["bpp"]), vals, rec[y:y + s, x:x + s]))
            except Exception as exc:  # one codec that cannot decode here must not sink the report
                cells.append(GridCell(codec, label, float(row["bpp"]), vals, None, f"{type(exc).__name__}: {exc}"))
        orig_crop = None
        if original is not None and box is not None:
            y, x, s = box
            orig_crop = original[y:y + s, x:x + s]
        out.append((image_id, orig_crop, cells))
    return target_bpp, out, notes


def _metric_text(metrics: dict[str, float]) -> str:
    parts = []
    for m, v in metrics.items():
        spec = metric_spec(m)
        parts.append(f"{spec.label} {spec.display(v):.4g}{' ' + spec.unit if spec.unit else ''}")
    return " · ".join(parts)


def _grid_html(target: float, grid, notes: list[str], anchor: str | None, grid_sources=()) -> str:
    if not grid:
        return "<p class='note'>no images for the visual comparison</p>"
    cells_all = [c for _, _, cells in grid for c in cells]
    side = next((c.crop.shape[0] for c in cells_all if c.crop is not None), None)
    parts = [f"<p class='note'>Per image, every codec at its rate point whose bpp <i>on that image</i> is closest to "
             f"<b>{target:.3g} bpp</b>, with that image's real bpp and metrics under each crop.</p>"]
    parts += [f"<p class='warn'>{_inline(n)}</p>" for n in notes]
    if side is None:  # nothing decodable here (e.g. a lean copy of a run without bitstreams): the picks as a table
        folders = sorted({str(run.path) for run, _ in grid_sources})
        names = ", ".join(f"<code>{html.escape(f)}</code>" for f in folders)
        which = f"the run folders {names} keep" if len(folders) > 1 else f"the run folder {names} keeps"
        parts.append(f"<p class='warn'>No crops: {which} neither <code>recon/</code> nor the bitstreams (a lean copy "
                     "of a run). Run the report on the full run folder to see them. The rate points the grid would "
                     "show:</p>")
        rows = []
        for image_id, _, cells in grid:
            for c in cells:
                rows.append(f"<tr><td>{html.escape(image_id)}</td><td>{html.escape(c.codec)}</td>"
                            f"<td>{html.escape(c.rate_label)}</td><td>{c.bpp:.3f}</td>"
                            f"<td style='text-align:left'>{html.escape(_metric_text(c.metrics))}</td></tr>")
        return "\n".join(parts) + ("<table><thead><tr><th>image</th><th>codec</th><th>rate point</th><th>bpp</th>"
                                   f"<th>metrics</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    parts.append(f"<p class='note'>Crops: the most detailed {side} px square of each image at native resolution "
                 "(one image pixel per screen pixel). Click a crop to zoom in (nearest neighbour) with an A/B wipe "
                 "against the original; tick <i>original in every crop</i> to swap a whole row at once.</p>"
                 "<p class='noprint'><label><input type='checkbox' id='zoom'> every crop 2× (nearest neighbour)</label></p>")
    for k, (image_id, orig, cells) in enumerate(grid):
        grid_id = f"grid-{k}"
        parts.append(f"<div class='image'><h3>{html.escape(image_id)}</h3>")
        if orig is not None:
            parts.append(f"<p class='noprint note'><label><input type='checkbox' class='ab-row' data-grid='{grid_id}'> "
                         "original in every crop (A/B)</label></p>")
        parts.append(f"<div class='grid' id='{grid_id}'>")
        orig_id = f"orig-{k}"
        if orig is not None:
            parts.append(f"<div class='cell'><img id='{orig_id}' alt='original {html.escape(image_id)}' "
                         f"src='{png_data_uri(np.ascontiguousarray(orig))}' width='{orig.shape[1]}' height='{orig.shape[0]}'>"
                         f"<span class='cap'><b>original</b> {orig.shape[1]}×{orig.shape[0]} px</span></div>")
        else:
            parts.append("<div class='cell'><div class='missing'>original not available</div></div>")
        for c in cells:
            label = f"{c.codec}{' (anchor)' if c.codec == anchor else ''}"
            caption = (f"<span class='cap'><b>{html.escape(label)}</b> {html.escape(c.rate_label)}<br>{c.bpp:.3f} bpp"
                       f"<br>{html.escape(_metric_text(c.metrics))}</span><br><span class='which'></span>")
            if c.crop is not None:
                alt = f" data-alt='{orig_id}'" if orig is not None else ""  # the original's element, not a copy
                img = (f"<img alt='{html.escape(label)} {html.escape(image_id)}' src='{png_data_uri(np.ascontiguousarray(c.crop))}'"
                       f" width='{c.crop.shape[1]}' height='{c.crop.shape[0]}'{alt}>")
            else:
                img = f"<div class='missing'>{html.escape(c.error)}</div>"
            parts.append(f"<div class='cell'>{img}{caption}</div>")
        parts.append("</div></div>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escaped text with `code` spans as <code>, so command names read as commands, not backticks."""
    return re.sub(r"`([^`]+)`", lambda m: f"<code>{m.group(1)}</code>", html.escape(text))


def _per_image_html(agg: Aggregate) -> str:
    """Every (image, codec, rate point) row, sortable by any column (click a header)."""
    metrics = [m for m in agg.metrics if m in agg.rows.columns and agg.rows[m].notna().any()]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["image", "codec", "rate point", "bpp", *[metric_spec(m).axis_label for m in metrics]])
    body = []
    for _, r in agg.rows.sort_values(["image_id", "codec", "bpp"]).iterrows():
        cells = [f"<td>{html.escape(str(r['image_id']))}</td>", f"<td>{html.escape(str(r['codec']))}</td>",
                 f"<td>{html.escape(str(r['rate_label']))}</td>", f"<td data-v='{r['bpp']:.6f}'>{r['bpp']:.4f}</td>"]
        for m in metrics:
            v = metric_spec(m).display(float(r[m])) if pd_notna(r[m]) else math.nan
            cells.append(f"<td data-v='{v:.6g}'>{v:.4f}</td>" if math.isfinite(v) else "<td data-v=''>n/a</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table class='sortable' id='per-image'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def pd_notna(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _plot_data(agg: Aggregate, anchor: str | None) -> dict[str, Any]:
    """Curves for the page's interactive plot: [bpp, value, rate point, left out of BD] per point."""
    from rdp_bench.reports.bdrate import monotone_mask
    from rdp_bench.reports.plots import codec_color

    metrics = []
    for m in agg.metrics:
        spec = metric_spec(m)
        curves = {}
        for codec in agg.codecs:
            sub = agg.points[(agg.points["codec"] == codec) & agg.points[m].notna()].sort_values("bpp")
            if sub.empty:
                continue
            bpp = sub["bpp"].to_numpy(float)
            val = np.array([spec.display(v) for v in sub[m].to_numpy(float)])
            ok = np.isfinite(val)
            keep = monotone_mask(bpp[ok], (1 if spec.higher_is_better else -1) * val[ok])
            curves[codec] = [[float(b), float(v), str(lab), int(not k)]
                             for b, v, lab, k in zip(bpp[ok], val[ok], sub["rate_label"].astype(str)[ok], keep)]
        if curves:
            metrics.append({"name": m, "label": spec.label, "axis": spec.axis_label, "curves": curves})
    codecs = [{"name": c, "color": codec_color(c), "anchor": c == anchor} for c in agg.codecs]
    return {"metrics": metrics, "codecs": codecs}


def _interactive_html(agg: Aggregate, anchor: str | None) -> str:
    data = _plot_data(agg, anchor)
    if not data["metrics"]:
        return ""
    payload = json.dumps(data).replace("</", "<\\/")  # never closes the script element early
    return ("<div class='noprint'><p><label>metric <select id='iplot-metric'></select></label> "
            "<label><input type='checkbox' id='iplot-log'> log bpp</label> <button id='iplot-reset'>reset zoom</button> "
            "<span class='note'>hover a point for its values; untick a codec to hide it; drag across to zoom into a "
            "bpp range, double-click to reset; hollow points are left out of BD (non-monotonic)</span></p>"
            "<p class='toggles' id='iplot-codecs'></p>"
            "<svg id='iplot' width='720' height='420' viewBox='0 0 720 420'></svg><div id='tip'></div>"
            f"<script type='application/json' id='plot-data'>{payload}</script></div>")


def _figure_links(figures: dict[str, list[Path]], page: Path) -> str:
    items = []
    for stem in sorted(figures):
        links = " · ".join(f"<a href='{html.escape(_relative(p, page))}'>{html.escape(p.suffix[1:])}</a>"
                           for p in figures[stem])
        items.append(f"<li>{html.escape(stem)}: {links}</li>")
    return f"<ul class='note'>{''.join(items)}</ul>"


def _relative(path: Path, page: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), Path(page).resolve().parent).replace(os.sep, "/")


# ------------------------------------------------------------------------------------------
# provenance and the page
# ------------------------------------------------------------------------------------------

def _provenance_html(agg: Aggregate) -> str:
    runs: list = []
    for run, _ in agg.sources.values():
        if not any(r is run for r in runs):
            runs.append(run)
    parts = []
    for run in runs:
        entry = run.latest_entry()
        ds = entry.get("dataset", {})
        facts = [
            ("run folder", str(run.path)), ("dataset", f"{ds.get('name', '?')} ({ds.get('images', '?')} images, "
                                                       f"fingerprint {str(ds.get('fingerprint', '?'))[:16]}…)"),
            ("started", entry.get("started", "?")), ("command", entry.get("command", "?")),
            ("git revision", entry.get("git_revision", "?")), ("device", entry.get("device", "?")),
            ("python", entry.get("python", "?")), ("platform", entry.get("platform", "?")),
            ("packages", ", ".join(f"{k} {v}" for k, v in (entry.get("packages") or {}).items() if v)),
        ]
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                       for k, v in facts)
        codec_rows = []
        for shown, (r, inner) in agg.sources.items():
            if r is not run:
                continue
            info = {}
            for e in reversed(run.entries):
                if inner in e.get("codecs", {}):
                    info = e["codecs"][inner]
                    break
            ckpts = sorted({str(p.get("checkpoint", "?"))[:12] for p in info.get("rate_points", {}).values()})
            codec_rows.append(f"<tr><td>{html.escape(shown)}</td><td style='text-align:left'>"
                              f"{html.escape(str(info.get('description', '')))}</td><td style='text-align:left'>"
                              f"<code>{html.escape(', '.join(ckpts))}</code></td></tr>")
        parts.append(f"<table>{rows}</table><table><thead><tr><th>codec</th><th>description</th>"
                     f"<th>checkpoint sha256 (first 12)</th></tr></thead><tbody>{''.join(codec_rows)}</tbody></table>"
                     f"<details><summary>full provenance.json of {html.escape(run.path.name)}</summary><pre>"
                     f"{html.escape(json.dumps(run.provenance, indent=1, default=str))}</pre></details>")
    return "\n".join(parts)


def _points_html(agg: Aggregate) -> str:
    metrics = [m for m in agg.metrics if agg.points[m].notna().any()]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["codec", "rate point", "images", "bpp", "bpp pooled", *[metric_spec(m).axis_label for m in metrics]])
    body = []
    for _, r in agg.points.iterrows():
        vals = [f"{metric_spec(m).display(r[m]):.4f}" if np.isfinite(r[m]) else "n/a" for m in metrics]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in
                                     [r["codec"], r["rate_label"], r["images"], f"{r['bpp']:.4f}", f"{r['bpp_pooled']:.4f}", *vals]) + "</tr>")
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html(path: Path, agg: Aggregate, tables: list[BDTable], figures: dict[str, list[Path]], anchor: str,
               method: str, grid: tuple | None = None, title: str = "rdp-bench report",
               notes: list[str] | None = None) -> Path:
    path = Path(path)
    note = agg.codec_note(anchor)
    anchor_text = f"<b>{html.escape(anchor)}</b>" + (f" ({html.escape(note)})" if note else "")
    sections = [f"<h1>{html.escape(title)}</h1>",
                f"<p>Codecs: {html.escape(', '.join(agg.codecs))}. Anchor: {anchor_text}. "
                f"BD interpolation: <b>{html.escape(method)}</b>. Images compared: {agg.rows['image_sha256'].nunique()}. "
                "bpp is measured from the bytes of each written bitstream: the codec's payload, without the "
                f"rdp-bench container's {FRAMING_BYTES} bytes of framing (CompressAI's convention).</p>"]
    sections += [f"<p class='warn'>{_inline(w)}</p>" for w in [*(notes or []), *agg.warnings]]
    patches = agg.points["fid_patches"].dropna() if "fid_patches" in agg.points.columns else []
    if len(patches):
        count = f"{int(min(patches))}" if min(patches) == max(patches) else f"{int(min(patches))}–{int(max(patches))}"
        sections.append(f"<p class='note'>FID/KID use {count} 256×256 patches per codec "
                        "and rate point. With this few samples FID is strongly biased upwards: compare codecs within "
                        "this report, not with published FID values.</p>")
    sections.append("<h2>Bjøntegaard deltas</h2>")
    sections += [to_html(t) for t in tables]
    sections.append("<h2>Rate–distortion–perception curves</h2><div class='plots'>")
    for stem in sorted(figures, key=lambda st: (not st.startswith("rd_overview"), st)):
        if stem.endswith("_screen") and (stem.startswith("rd_overview") or stem.startswith("dp_plane")):
            png = [p for p in figures[stem] if p.suffix == ".png"][0]
            sections.append(f"<figure><img alt='{html.escape(stem)}' src='{png_data_uri(png)}'>"
                            f"<figcaption class='note'>{html.escape(png.name)} (SVG and paper-column size next to it)"
                            "</figcaption></figure>")
    sections.append("</div>")
    sections.append("<h3 class='noprint'>Interactive</h3>" + _interactive_html(agg, anchor))
    sections.append("<h3>Every figure (PNG and SVG)</h3>" + _figure_links(figures, path))
    sections.append("<h2>Rate points</h2>" + _points_html(agg))
    if grid is not None:
        target, cells, notes = grid
        sections.append("<h2>Visual comparison at equal rate</h2>"
                        + _grid_html(target, cells, notes, anchor, agg.sources.values()))
    sections.append("<h2>Per image</h2><p class='note'>Click a column header to sort.</p>" + _per_image_html(agg))
    sections.append("<h2>Provenance</h2>" + _provenance_html(agg))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{''.join(sections)}<script>{SCRIPT}</script></body></html>")
    atomic_write_text(path, page)
    return path
