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
from rdp_bench.reports.bdrate import BDTable, to_html
from rdp_bench.reports.runs import Aggregate, metric_spec

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}p.caption{font-weight:600;margin:1em 0 .2em}
td.best{font-weight:700;background:#e8f5e9}td.na{color:#888;font-size:.85em}td.weak{color:#999}td.note{text-align:left;color:#666;font-size:.85em}tr.anchor td{color:#555;font-style:italic}
.legend,.note{font-size:.85em;color:#555}.warn{background:#fff8e1;border-left:4px solid #ffb300;padding:.4em .8em}
.plots img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.grid{display:grid;gap:.6em;align-items:start;max-width:100%}.cell{font-size:.78em;text-align:center}
.cell img{width:100%;image-rendering:pixelated;border:1px solid #ccc;display:block}
.cell .missing{border:1px dashed #c00;color:#c00;padding:2em .3em}
code,pre{font-size:.85em;background:#f6f8fa}pre{padding:.6em;overflow:auto;max-height:24em}
"""

# marks the body when every <img> decoded, so a headless browser test can read it from the DOM
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-broken', String(broken.length));
});
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
        # the options the run used (e.g. checkpoint=FILE), so the bitstream decodes with the same weights
        options = next((e.get("codec_options") or {} for e in reversed(run.entries) if inner in e.get("codecs", {})), {})
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


def build_grid(agg: Aggregate, n_images: int = 3, crop: int = 160, target_bpp: float | None = None,
               ) -> tuple[float, list[tuple[str, np.ndarray | None, list[GridCell]]], list[str]]:
    """(target bpp, [(image id, original crop, cells)], notes) at the rate point of each codec nearest the target."""
    from rdp_bench.reports.plots import matched_rates

    notes: list[str] = []
    if target_bpp is None:
        targets = matched_rates(agg, count=1)
        target_bpp = targets[0] if targets else float(np.median(agg.points["bpp"]))
    chosen: dict[str, str] = {}
    for codec in agg.codecs:
        pts = agg.points[agg.points["codec"] == codec]
        i = int(np.argmin(np.abs(np.log(pts["bpp"].to_numpy(float)) - math.log(target_bpp))))
        chosen[codec] = str(pts["rate_label"].iloc[i])
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
            hit = rows[(rows["codec"] == codec) & (rows["rate_label"].astype(str) == chosen[codec])]
            if hit.empty:
                continue
            row = hit.iloc[0].to_dict()
            vals = {m: float(row[m]) for m in metric_cols if isinstance(row.get(m), (int, float)) and math.isfinite(row[m])}
            try:
                rec = _reconstruction(agg, codec, row, codec_cache)
                if box is None:
                    box = pick_crop(rec, crop)
                y, x, s = box
                cells.append(GridCell(codec, chosen[codec], float(row["bpp"]), vals, rec[y:y + s, x:x + s]))
            except Exception as exc:  # one codec that cannot decode here must not sink the report
                cells.append(GridCell(codec, chosen[codec], float(row["bpp"]), vals, None, f"{type(exc).__name__}: {exc}"))
        orig_crop = None
        if original is not None and box is not None:
            y, x, s = box
            orig_crop = original[y:y + s, x:x + s]
        out.append((image_id, orig_crop, cells))
    return target_bpp, out, notes


def _grid_html(target: float, grid, notes: list[str], anchor: str | None) -> str:
    if not grid:
        return "<p class='note'>no images for the visual comparison</p>"
    parts = [f"<p class='note'>Same crop (the most detailed {grid[0][1].shape[0] if grid[0][1] is not None else ''} px square "
             f"of each image) for every codec at its rate point closest to <b>{target:.3g} bpp</b>; bpp and metrics "
             "below are for this image. Crops are shown enlarged with nearest-neighbour scaling.</p>"]
    parts += [f"<p class='warn'>{html.escape(n)}</p>" for n in notes]
    for image_id, orig, cells in grid:
        parts.append(f"<h3>{html.escape(image_id)}</h3><div class='grid' style='grid-template-columns:repeat(auto-fill,minmax(180px,1fr))'>")
        if orig is not None:
            parts.append(f"<div class='cell'><img alt='original {html.escape(image_id)}' src='{png_data_uri(orig)}'>"
                         "<b>original</b></div>")
        else:
            parts.append("<div class='cell'><div class='missing'>original not available</div></div>")
        for c in cells:
            label = f"{c.codec}{' (anchor)' if c.codec == anchor else ''}"
            metrics = " · ".join(f"{metric_spec(m).label} {v:.4g}" for m, v in c.metrics.items())
            caption = f"<b>{html.escape(label)}</b> {html.escape(c.rate_label)}<br>{c.bpp:.3f} bpp<br>{html.escape(metrics)}"
            if c.crop is not None:
                img = f"<img alt='{html.escape(label)} {html.escape(image_id)}' src='{png_data_uri(np.ascontiguousarray(c.crop))}'>"
            else:
                img = f"<div class='missing'>{html.escape(c.error)}</div>"
            parts.append(f"<div class='cell'>{img}{caption}</div>")
        parts.append("</div>")
    return "\n".join(parts)


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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html(path: Path, agg: Aggregate, tables: list[BDTable], figures: dict[str, list[Path]], anchor: str,
               method: str, grid: tuple | None = None, title: str = "rdp-bench report") -> Path:
    sections = [f"<h1>{html.escape(title)}</h1>",
                f"<p>Codecs: {html.escape(', '.join(agg.codecs))}. Anchor: <b>{html.escape(anchor)}</b>. "
                f"BD interpolation: <b>{html.escape(method)}</b>. Images compared: {agg.rows['image_sha256'].nunique()}. "
                "bpp is measured from the bytes of each written bitstream (container header included).</p>"]
    sections += [f"<p class='warn'>{html.escape(w)}</p>" for w in agg.warnings]
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
    sections.append("<h2>Rate points</h2>" + _points_html(agg))
    if grid is not None:
        target, cells, notes = grid
        sections.append("<h2>Visual comparison</h2>" + _grid_html(target, cells, notes, anchor))
    sections.append("<h2>Provenance</h2>" + _provenance_html(agg))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{''.join(sections)}<script>{SCRIPT}</script></body></html>")
    path = Path(path)
    atomic_write_text(path, page)
    return path
