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
from rdp_bench.metrics.fid_bootstrap import FID_MIN_PATCHES  # noqa: E402
from rdp_bench.reports.bdrate import small_sample  # noqa: E402


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
    from rdp_bench.reports.published import is_published

    is_anchor = codec == anchor
    # published reference curves are dashed like the anchor: numbers from elsewhere, not measured here
    external = is_published(codec)
    dashed = is_anchor or external
    # a published curve takes its codec's colour ("HiFiC (published)" next to a measured hific)
    base = codec.rsplit(" (", 1)[0].lower() if external else ""
    color = CODEC_COLORS.get(base) or codec_color(codec)
    return {"color": color, "marker": codec_marker(codec), "linestyle": "--" if dashed else "-",
            "linewidth": 1.2, "markersize": 4, "label": f"{codec} (anchor)" if is_anchor else codec}


def figure_context(agg: Aggregate, metric: str | None = None) -> str:
    """'samples, 10 images' (+ ', 60 patches' for FID/KID): what a figure's numbers were measured on."""
    datasets = sorted(set(agg.rows["dataset"].dropna().astype(str))) if "dataset" in agg.rows.columns else []
    images = agg.rows["image_sha256"].nunique()
    text = f"{', '.join(datasets) or 'unnamed dataset'}, {images} image{'s' if images != 1 else ''}"
    col = f"{metric}_patches" if metric else None
    if col and col in agg.points.columns:
        vals = agg.points.loc[agg.points[metric].notna(), col].dropna().astype(int) if metric in agg.points else []
        if len(vals):
            lo, hi = int(min(vals)), int(max(vals))
            text += f", {lo if lo == hi else f'{lo}–{hi}'} patches"
            if metric == "fid" and lo < FID_MIN_PATCHES:
                text += f" ⚠ biased (< {FID_MIN_PATCHES:,})"
    return text


#: the legend entry of an FID figure whose FID rests on fewer than FID_MIN_PATCHES patches
SMALL_SAMPLE_LEGEND = f"⚠ < {FID_MIN_PATCHES:,} patches: FID biased upwards, prefer KID"

#: the legend entry that explains hollow markers
DROPPED_NOTE = "hollow: left out of BD (no better than a lower-rate point)"


def _plot_metric(ax, agg: Aggregate, metric: str, anchor: str | None, log_x: bool) -> bool:
    """One curve per codec; points BD drops as non-monotonic are hollow. Returns whether any was hollow."""
    from rdp_bench.reports.bdrate import monotone_mask

    spec = metric_spec(metric)
    hollow_any = False
    sign = 1.0 if spec.higher_is_better else -1.0
    for codec in agg.codecs:
        bpp, val = agg.curve(codec, metric)
        if len(bpp) == 0:
            continue
        shown = np.array([spec.display(v) for v in val], float)
        style = _style(codec, anchor)
        ax.plot(bpp, shown, **style)
        keep = monotone_mask(bpp, sign * shown)
        if not keep.all():
            hollow_any = True
            ax.plot(bpp[~keep], shown[~keep], linestyle="none", marker=style["marker"], markersize=style["markersize"] + 1,
                    markerfacecolor="white", markeredgecolor=style["color"], markeredgewidth=1.0, zorder=3)
        _error_bars(ax, agg, codec, metric, bpp, style["color"])
    ax.set_xlabel("bpp (bits per pixel, from bitstream bytes)")
    ax.set_ylabel(spec.axis_label)
    if log_x:
        ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3, linewidth=0.5)
    return hollow_any


def _error_bars(ax, agg: Aggregate, codec: str, metric: str, bpp: np.ndarray, color: str) -> None:
    """Confidence intervals, when the aggregate carries ``<metric>_ci_low`` / ``_ci_high`` (e.g. a bootstrap)."""
    lo_col, hi_col = f"{metric}_ci_low", f"{metric}_ci_high"
    if lo_col not in agg.points.columns or hi_col not in agg.points.columns:
        return
    spec = metric_spec(metric)
    sub = agg.points[(agg.points["codec"] == codec) & agg.points[metric].notna()].sort_values("bpp")
    lo = np.array([spec.display(v) for v in sub[lo_col].to_numpy(float)])
    hi = np.array([spec.display(v) for v in sub[hi_col].to_numpy(float)])
    mid = np.array([spec.display(v) for v in sub[metric].to_numpy(float)])
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any() and len(sub) == len(bpp):
        ax.errorbar(sub["bpp"].to_numpy(float)[ok], mid[ok], yerr=[np.abs(mid - lo)[ok], np.abs(hi - mid)[ok]],
                    fmt="none", ecolor=color, elinewidth=0.8, capsize=2)


def _legend(ax, font: float, hollow: bool, beside: bool, note: str = "") -> None:
    """The codecs (and what hollow markers mean, and ``note``); beside the axes on screen, inside on a paper column."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if hollow:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="#555"))
        labels.append(DROPPED_NOTE)
    if note:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(note)
    where = {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)} if beside else {}
    ax.legend(handles, labels, fontsize=font, frameon=False, **where)


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
                hollow = _plot_metric(ax, agg, metric, anchor, log_x)
                ax.set_title(f"{metric_spec(metric).label} vs rate: {figure_context(agg, metric)}", fontsize=size.font * 0.9)
                # on screen beside the axes: many codecs would hide their own curves
                _legend(ax, size.font * 0.8, hollow, beside=size_name != "paper",
                        note=SMALL_SAMPLE_LEGEND if metric in small_sample(agg) else "")
                stem = f"rd_{metric}_{size_name}"
                written[stem] = _save(fig, out, stem)
            if metrics:
                cols = 2 if len(metrics) in (2, 4) else min(3, len(metrics))
                rows = math.ceil(len(metrics) / cols)
                fig, axes = plt.subplots(rows, cols, figsize=(size.panel[0] * cols, size.panel[1] * rows), squeeze=False)
                hollow = False
                for ax, metric in zip(axes.flat, metrics):
                    hollow |= _plot_metric(ax, agg, metric, anchor, log_x)
                    patches = figure_context(agg, metric).split(", ")[2:]  # only FID/KID say their patches
                    ax.set_title(metric_spec(metric).label + (f" ({patches[0]})" if patches else ""),
                                 fontsize=size.font * 0.9)
                for ax in list(axes.flat)[len(metrics):]:
                    ax.set_visible(False)
                handles, labels = axes.flat[0].get_legend_handles_labels()
                if hollow:
                    from matplotlib.lines import Line2D

                    handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                                          markeredgecolor="#555"))
                    labels.append(DROPPED_NOTE)
                fig.tight_layout()
                legend = fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                                    bbox_to_anchor=(0.5, 1.0), fontsize=size.font)
                # the title above the legend, however many rows it has (measured, not guessed)
                box = legend.get_window_extent(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
                fig.suptitle(figure_context(agg), y=box.y1 + 0.01, va="bottom", fontsize=size.font * 1.05)
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
    has = {m for m in ("fid", "kid", "lpips", "dists")
           if m in agg.metrics and any(len(agg.curve(c, m)[0]) for c in agg.codecs)}
    if "fid" in has and "kid" in has and small_sample(agg):  # KID is the headline when FID is small-sample biased
        return "kid", f"FID is biased on these few patches (< {FID_MIN_PATCHES:,}); showing KID"
    for m in ("fid", "kid", "lpips", "dists"):
        if m in has:
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
    title = (f"{figure_context(agg, perc)}: distortion–perception at matched rates "
             + ", ".join(f"{t:.3g}" for t in targets) + " bpp")
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=size.font * 0.85)
    ax.grid(True, alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=size.font * 0.8, frameon=False)
    with plt.rc_context({"savefig.dpi": size.dpi, "svg.hashsalt": "rdp-bench"}):
        return _save(fig, Path(out), f"dp_plane_{size_name}")
