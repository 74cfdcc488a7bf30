"""Rate-distortion-perception plots (matplotlib, no display needed).

* ``rd_<metric>_<size>.{png,svg}``: one metric against bpp, one line per codec with markers at the
  rate points, the anchor dashed, axis labels saying which way is better ("LPIPS ↓").
* ``rd_overview_<size>``: every metric, one panel each.
* ``dp_plane_<size>``: the distortion-perception plane (PSNR against FID) at matched rates.

Sizes: ``paper`` is one column of a two-column paper (3.4 in wide, 300 dpi); ``screen`` is for
reports and slides. A codec keeps its colour and marker in every figure (and across reports).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rdp_bench.atomic import atomic_path  # noqa: E402
from rdp_bench.reports.runs import Aggregate, metric_spec  # noqa: E402


@dataclass(frozen=True)
class FigureSize:
    name: str
    panel: tuple[float, float]  # inches per panel
    dpi: int
    font: float


SIZES = {
    "paper": FigureSize("paper", (3.4, 2.5), 300, 7.0),
    "screen": FigureSize("screen", (6.0, 4.2), 110, 10.0),
}

#: fixed colours for the codecs we ship, so a codec looks the same in every report
CODEC_COLORS = {
    "corrdiff": "#d62728", "cdc": "#9467bd", "hific": "#ff7f0e", "ms-illm": "#2ca02c", "msillm": "#2ca02c",
    "bpg": "#1f77b4", "jpeg": "#7f7f7f", "webp": "#8c564b", "jpeg2000": "#bcbd22", "jpegxl": "#17becf",
    "jxl": "#17becf", "avif": "#e377c2", "vtm": "#393b79", "hm": "#637939",
}
_FALLBACK = ["#843c39", "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194", "#6b6ecf", "#31a354", "#3182bd", "#e6550d"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]


def codec_color(codec: str) -> str:
    # "jpeg (other_run)" is a second run of a known codec: it must not share the codec's colour
    if codec.lower() in CODEC_COLORS:
        return CODEC_COLORS[codec.lower()]
    return _FALLBACK[zlib.crc32(codec.lower().encode()) % len(_FALLBACK)]


def codec_marker(codec: str) -> str:
    return _MARKERS[zlib.crc32(codec.lower().encode()) % len(_MARKERS)]


def _style(codec: str, anchor: str | None) -> dict:
    is_anchor = codec == anchor
    return {"color": codec_color(codec), "marker": codec_marker(codec), "linestyle": "--" if is_anchor else "-",
            "linewidth": 1.2, "markersize": 4, "label": f"{codec} (anchor)" if is_anchor else codec}


def _plot_metric(ax, agg: Aggregate, metric: str, anchor: str | None, log_x: bool) -> bool:
    spec = metric_spec(metric)
    drawn = False
    for codec in agg.codecs:
        bpp, val = agg.curve(codec, metric)
        if len(bpp) == 0:
            continue
        ax.plot(bpp, [spec.display(v) for v in val], **_style(codec, anchor))
        drawn = True
    ax.set_xlabel("bpp (bits per pixel, from bitstream bytes)")
    ax.set_ylabel(spec.axis_label)
    if log_x:
        ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3, linewidth=0.5)
    return drawn


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        path = out / f"{stem}.{ext}"
        with atomic_path(path) as tmp:  # a killed report never leaves a truncated figure
            fig.savefig(tmp, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def plot_metrics(agg: Aggregate, out: Path, anchor: str | None = None, log_x: bool = False,
                 sizes: tuple[str, ...] = ("paper", "screen")) -> dict[str, list[Path]]:
    """One figure per metric and an overview with every metric; returns {figure stem: files}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    metrics = [m for m in agg.metrics if any(len(agg.curve(c, m)[0]) for c in agg.codecs)]
    for size_name in sizes:
        size = SIZES[size_name]
        with plt.rc_context({"font.size": size.font, "figure.dpi": size.dpi, "savefig.dpi": size.dpi,
                             "svg.hashsalt": "rdp-bench"}):
            for metric in metrics:
                fig, ax = plt.subplots(figsize=size.panel)
                _plot_metric(ax, agg, metric, anchor, log_x)
                ax.legend(fontsize=size.font * 0.8, frameon=False)
                stem = f"rd_{metric}_{size_name}"
                written[stem] = _save(fig, out, stem)
            if metrics:
                cols = 2 if len(metrics) in (2, 4) else min(3, len(metrics))
                rows = math.ceil(len(metrics) / cols)
                fig, axes = plt.subplots(rows, cols, figsize=(size.panel[0] * cols, size.panel[1] * rows), squeeze=False)
                for ax, metric in zip(axes.flat, metrics):
                    _plot_metric(ax, agg, metric, anchor, log_x)
                for ax in list(axes.flat)[len(metrics):]:
                    ax.set_visible(False)
                handles, labels = axes.flat[0].get_legend_handles_labels()
                fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                           bbox_to_anchor=(0.5, 1.0), fontsize=size.font)
                fig.tight_layout()
                stem = f"rd_overview_{size_name}"
                written[stem] = _save(fig, out, stem)
            dp = plot_dp_plane(agg, out, size_name, anchor)
            if dp:
                written[f"dp_plane_{size_name}"] = dp
    return written


def _interp_at(bpp: np.ndarray, val: np.ndarray, target: float) -> float:
    """Linear interpolation in log-bpp, no extrapolation (NaN outside the codec's range)."""
    if len(bpp) < 2 or target < bpp.min() or target > bpp.max():
        return math.nan
    order = np.argsort(bpp)
    return float(np.interp(math.log(target), np.log(bpp[order]), val[order]))


def matched_rates(agg: Aggregate, count: int = 3) -> list[float]:
    """Target bpps inside the range every codec covers (geometric spacing); empty when none is shared."""
    lo, hi = 0.0, math.inf
    for codec in agg.codecs:
        bpp = agg.points.loc[agg.points["codec"] == codec, "bpp"].to_numpy(float)
        lo, hi = max(lo, bpp.min()), min(hi, bpp.max())
    if not lo < hi:
        return []
    return [float(x) for x in np.geomspace(lo, hi, count + 2)[1:-1]]


def perception_metric(agg: Aggregate) -> tuple[str | None, str]:
    """FID if any codec has it; otherwise the first available of KID/LPIPS/DISTS, with the reason."""
    for m in ("fid", "kid", "lpips", "dists"):
        if m in agg.metrics and any(len(agg.curve(c, m)[0]) for c in agg.codecs):
            if m == "fid":
                return m, ""
            fid_reason = agg.reason(agg.codecs[0], "fid") if agg.codecs else "not measured"
            return m, f"FID unavailable ({fid_reason}); showing {metric_spec(m).label} instead"
    return None, "no perception metric (FID, KID, LPIPS, DISTS) was measured"


def plot_dp_plane(agg: Aggregate, out: Path, size_name: str = "screen", anchor: str | None = None) -> list[Path]:
    """PSNR (distortion) against FID (perception), each codec interpolated at the same bpps."""
    size = SIZES[size_name]
    perc, note = perception_metric(agg)
    targets = matched_rates(agg)
    if perc is None or not targets or "psnr" not in agg.metrics:
        return []
    spec = metric_spec(perc)
    fig, ax = plt.subplots(figsize=size.panel)
    any_point = False
    for codec in agg.codecs:
        bpp_d, dist = agg.curve(codec, "psnr")
        bpp_p, pval = agg.curve(codec, perc)
        xs = [_interp_at(bpp_p, pval, t) for t in targets]
        ys = [_interp_at(bpp_d, dist, t) for t in targets]
        pts = [(x, y, t) for x, y, t in zip(xs, ys, targets) if np.isfinite(x) and np.isfinite(y)]
        if not pts:
            continue
        any_point = True
        style = _style(codec, anchor)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], **style)
    if not any_point:
        plt.close(fig)
        return []
    # label each matched rate once, next to the anchor's (or first codec's) point
    ref = anchor if anchor in agg.codecs else agg.codecs[0]
    for t in targets:
        x = _interp_at(*agg.curve(ref, perc), t)
        y = _interp_at(*agg.curve(ref, "psnr"), t)
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(f"{t:.3g} bpp", (x, y), textcoords="offset points", xytext=(4, -8), fontsize=size.font * 0.75)
    ax.set_xlabel(spec.axis_label + " (perception)")
    ax.set_ylabel("PSNR [dB] ↑ (distortion)")
    title = "distortion–perception at matched rates " + ", ".join(f"{t:.3g}" for t in targets) + " bpp"
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=size.font * 0.85)
    ax.grid(True, alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=size.font * 0.8, frameon=False)
    with plt.rc_context({"savefig.dpi": size.dpi, "svg.hashsalt": "rdp-bench"}):
        return _save(fig, Path(out), f"dp_plane_{size_name}")
