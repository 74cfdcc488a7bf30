"""Bjøntegaard-delta tables: BD-rate and BD-quality of every codec against an anchor, per metric.

The interpolation is the ``bjontegaard`` package's: ``akima`` (default), ``pchip`` (the JCT-VC CTC
spreadsheet) or ``cubic`` (VCEG-M33). The package assumes quality rises with rate, so lower-is-better
metrics (LPIPS, DISTS, FID, KID) are negated before interpolation. BD-quality is reported back in
the metric's own units and sign (BD-LPIPS -0.02 = 0.02 lower LPIPS than the anchor at equal rate).

A curve must rise with rate to be interpolated: points that are not (a higher rate with no better
quality than a lower one) are dropped and counted in the table's notes; curves with fewer than two
points left (four for ``cubic``), or that do not overlap, are "n/a" with the reason.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import bjontegaard
import numpy as np
import pandas as pd

from rdp_bench.metrics.fid_bootstrap import FID_MIN_PATCHES
from rdp_bench.reports.runs import Aggregate, metric_spec

METHODS = ("akima", "pchip", "cubic")
#: the package's own threshold below which it warns about little overlap
MIN_OVERLAP = 0.75


@dataclass
class BDResult:
    value: float  # BD-rate in % or BD-quality in the metric's units; NaN when n/a
    reason: str = ""  # why n/a
    overlap: float = math.nan  # relative overlap (0..1) of the interval BD integrates over
    dropped: int = 0  # points dropped as non-monotonic (both curves)
    notes: list[str] = field(default_factory=list)
    #: confidence interval of the value (e.g. bootstrap over images) once one is computed; shown when set
    ci: tuple[float, float] | None = None

    @property
    def ok(self) -> bool:
        return math.isfinite(self.value)

    @property
    def low_overlap(self) -> bool:
        """A value resting on less than MIN_OVERLAP of the joint range: shown, but never as the best."""
        return self.ok and math.isfinite(self.overlap) and self.overlap < MIN_OVERLAP


def monotone_mask(rate: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """True for the points BD keeps: each must improve on every lower-rate point (quality: higher is better)."""
    rate, quality = np.asarray(rate, float), np.asarray(quality, float)
    order = np.argsort(rate, kind="stable")
    keep = np.zeros(len(rate), dtype=bool)
    best, last_rate = -math.inf, None
    for i in order:
        if quality[i] > best and (last_rate is None or rate[i] > last_rate):
            keep[i] = True
            best, last_rate = quality[i], rate[i]
    return keep


def _monotone(rate: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort by rate and keep only points that improve on every lower-rate point."""
    keep = monotone_mask(rate, quality)
    order = np.argsort(rate, kind="stable")
    order = order[keep[order]]
    return rate[order], quality[order], int(len(rate) - keep.sum())


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    total = max(a.max(), b.max()) - min(a.min(), b.min())
    inter = min(a.max(), b.max()) - max(a.min(), b.min())
    return max(inter, 0.0) / total if total > 0 else 1.0


def bd(rate_anchor: Sequence[float], quality_anchor: Sequence[float], rate_test: Sequence[float],
       quality_test: Sequence[float], *, higher_is_better: bool = True, kind: str = "rate",
       method: str = "akima") -> BDResult:
    """BD-rate (``kind="rate"``, percent) or BD-quality (``kind="quality"``, metric units) of test vs anchor."""
    if method not in METHODS:
        raise ValueError(f"unknown BD interpolation {method!r}; use one of {', '.join(METHODS)}")
    if kind not in ("rate", "quality"):
        raise ValueError(f"kind must be 'rate' or 'quality', not {kind!r}")
    sign = 1.0 if higher_is_better else -1.0
    curves = []
    for r, q in ((rate_anchor, quality_anchor), (rate_test, quality_test)):
        r, q = np.asarray(r, float), sign * np.asarray(q, float)
        ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
        curves.append(_monotone(r[ok], q[ok]))
    (ra, qa, da), (rt, qt, dt) = curves
    dropped = da + dt
    need = 4 if method == "cubic" else 2
    for name, r in (("anchor", ra), ("test", rt)):
        if len(r) < need:
            return BDResult(math.nan, f"{name} has {len(r)} usable rate point(s), {method} needs {need}", dropped=dropped)
    # BD-rate integrates over quality, BD-quality over log-rate
    overlap = _overlap(qa, qt) if kind == "rate" else _overlap(np.log10(ra), np.log10(rt))
    if overlap <= 0:
        axis = "quality" if kind == "rate" else "rate"
        return BDResult(math.nan, f"curves do not overlap in {axis}", overlap=0.0, dropped=dropped)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn = bjontegaard.bd_rate if kind == "rate" else bjontegaard.bd_psnr
        value = float(fn(ra, qa, rt, qt, method=method, require_matching_points=False, min_overlap=MIN_OVERLAP))
    # the package warns (and still integrates) below MIN_OVERLAP; keep that as a short note on the cell
    notes = [f"curves overlap on {overlap:.1%} of their joint {'quality' if kind == 'rate' else 'log-rate'} range "
             f"(< {MIN_OVERLAP:.0%})" for w in caught if "overlap" in str(w.message).lower()][:1]
    if kind == "quality":
        value *= sign  # back to the metric's own direction
    if not math.isfinite(value):
        return BDResult(math.nan, "interpolation gave no finite value", overlap=overlap, dropped=dropped, notes=notes)
    return BDResult(value, overlap=overlap, dropped=dropped, notes=notes)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

#: short forms of the reasons ``bd`` and ``bd_table`` give, for table cells
_NA_SHORT = (("do not overlap", "no overlap"), ("usable rate point", "too few points"),
             ("no finite value", "no value"))


@dataclass
class BDTable:
    kind: str  # "rate" or "quality"
    anchor: str
    method: str
    metrics: list[str]  # metric columns shown (columns no codec has are left out, see ``hidden``)
    codecs: list[str]  # test codecs (anchor excluded)
    cells: dict[tuple[str, str], BDResult]
    best: dict[str, str | None]  # metric -> best codec (better than the anchor, curves overlapping enough)
    warnings: list[str] = field(default_factory=list)
    context: str = ""  # dataset, image and patch counts
    hidden: dict[str, str] = field(default_factory=dict)  # metric left out -> what would make it available
    #: metric -> why its values are small-sample biased (FID on < 2,048 patches); its header gets ⚠
    biased: dict[str, str] = field(default_factory=dict)
    #: what the anchor codec recorded about itself for reports (``Aggregate.codec_note``), under every table
    anchor_note: str = ""

    def title(self) -> str:
        if self.kind == "rate":
            what = "BD-rate [%] (negative = fewer bits than the anchor for the same quality)"
        else:
            what = "BD-quality (metric units at equal rate; ↑/↓ says which sign is better)"
        where = f"; {self.context}" if self.context else ""
        return f"{what}{where}; anchor: {self.anchor}; interpolation: {self.method}"

    def header(self, metric: str) -> str:
        spec = metric_spec(metric)
        unit = f" [{spec.unit}]" if spec.unit else ""
        mark = " ⚠" if metric in self.biased else ""
        if self.kind == "rate":
            return f"{spec.label}{unit}{mark}"
        arrow = "↑" if spec.higher_is_better else "↓"
        return f"BD-{spec.label}{unit} {arrow}{mark}"

    def value_text(self, codec: str, metric: str) -> str:
        """The number (or "n/a (why)") without emphasis; weak values in parentheses."""
        cell = self.cells[(codec, metric)]
        if not cell.ok:
            return f"n/a ({na_short(cell.reason)})"
        text = f"{cell.value:+.2f}%" if self.kind == "rate" else _fmt_quality(metric, cell.value)
        if cell.ci is not None:
            lo, hi = cell.ci
            fmt = (lambda v: f"{v:+.2f}") if self.kind == "rate" else (lambda v: _fmt_quality(metric, v))
            text += f" [{fmt(lo)}, {fmt(hi)}]"
        if cell.low_overlap:
            text = f"({text})"
        if cell.dropped:
            text += " †"
        return text

    # kept for callers of the earlier API
    format = value_text

    def overlap_note(self, codec: str) -> str:
        """The footnote column: which of this codec's values rest on little overlap, and how little."""
        # floor, so that 74.7 % never reads as 75 % next to a "< 75 %" header
        weak = [f"{metric_spec(m).label} {math.floor(100 * self.cells[(codec, m)].overlap)}%" for m in self.metrics
                if self.cells[(codec, m)].low_overlap]
        return ", ".join(weak)

    @property
    def has_overlap_column(self) -> bool:
        return any(self.overlap_note(c) for c in self.codecs)


def na_short(reason: str) -> str:
    for key, short in _NA_SHORT:
        if key in reason:
            return short
    if " unavailable for " in reason:
        return "missing for " + reason.split(" unavailable for ", 1)[1].split(":", 1)[0]
    return short_reason(reason, 40)


def short_reason(reason: str, limit: int = 70) -> str:
    """First clause of a reason, without machine paths, for a table cell or footnote."""
    short = clean_reason(reason).split(" (")[0].split("; ")[0]
    return short if len(short) <= limit else short[: limit - 1] + "…"


_URL = re.compile(r"https?://[^\s)]+")
_PATH = re.compile(r"(?<![\w.])(?:~|\.{1,2})?(?:/[^\s/,;:()'\"]+)+/?")


def clean_reason(reason: str) -> str:
    """A reason fit for a reader: absolute paths reduced to their last part, nested exceptions cut off."""
    text = re.split(r" \((?:download failed|could not download)", reason)[0]
    parts = _URL.split(text)
    urls = _URL.findall(text)
    parts = [_PATH.sub(lambda m: "…/" + Path(m.group(0).rstrip("/")).name, p) for p in parts]
    out = parts[0]
    for url, rest in zip(urls, parts[1:]):
        out += url + rest
    return out.strip()


def _fmt_quality(metric: str, value: float) -> str:
    spec = metric_spec(metric)
    if spec.unit == "dB" or spec.name == "fid":
        return f"{value:+.3f}"
    return f"{value:+.4f}"


def context_line(agg: Aggregate) -> str:
    """"samples, 10 images, FID/KID on 68 patches": what every number in a report was measured on."""
    datasets = sorted(set(agg.rows["dataset"].dropna().astype(str))) if "dataset" in agg.rows.columns else []
    images = agg.rows["image_sha256"].nunique()
    parts = [", ".join(datasets) or "unnamed dataset", f"{images} image{'s' if images != 1 else ''}"]
    patches = patch_counts(agg)
    if patches:
        names = "/".join(metric_spec(m).label for m in patches)
        lo = min(int(min(v)) for v in patches.values())
        hi = max(int(max(v)) for v in patches.values())
        parts.append(f"{names} on {lo if lo == hi else f'{lo}–{hi}'} patches")
    return ", ".join(parts)


def patch_counts(agg: Aggregate) -> dict[str, list[float]]:
    """Metric -> the patch counts its values rest on (dataset metrics that report ``<metric>_patches``)."""
    out: dict[str, list[float]] = {}
    for m in agg.metrics:
        col = f"{m}_patches"
        if col in agg.points.columns and m in agg.points.columns:
            vals = agg.points.loc[agg.points[m].notna(), col].dropna()
            if len(vals):
                out[m] = [float(v) for v in vals]
    return out


def small_sample(agg: Aggregate) -> dict[str, str]:
    """``{"fid": why}`` when any FID shown rests on fewer than ``FID_MIN_PATCHES`` patches, else ``{}``."""
    counts = patch_counts(agg).get("fid")
    if not counts or min(counts) >= FID_MIN_PATCHES:
        return {}
    lo, hi = int(min(counts)), int(max(counts))
    n = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return {"fid": f"FID from {n} patches (fewer than {FID_MIN_PATCHES:,}) is biased upwards (small sample: "
                   "its 2048-d covariance is estimated from too few patches); compare codecs by KID, which is "
                   "unbiased, and never with published FID"}


def small_sample_note(agg: Aggregate) -> str:
    """The report-wide warning line (empty when FID rests on enough patches)."""
    why = small_sample(agg).get("fid")
    return f"⚠ {why}." if why else ""


def _missing_requirement(agg: Aggregate, metric: str) -> str:
    """Why no codec has this metric, as what to do: the metric's own requirement, else the cleaned reason."""
    spec = metric_spec(metric)
    reasons = [agg.reason(c, metric) for c in agg.codecs]
    if spec.requirement and any(r not in ("not measured", "not measured in this run", "not computed") for r in reasons):
        return f"needs {spec.requirement}"
    if all(r.startswith("not measured") for r in reasons):
        return "not measured: add it to `--metrics`"
    return short_reason(reasons[0], 120)


def bd_table(agg: Aggregate, anchor: str, kind: str = "rate", method: str = "akima",
             metrics: list[str] | None = None) -> BDTable:
    if anchor not in agg.codecs:
        raise KeyError(f"anchor {anchor!r} is not among the codecs: {', '.join(agg.codecs)} (pick one with --anchor)")
    metrics = list(metrics or agg.metrics)
    codecs = [c for c in agg.codecs if c != anchor]
    # a column with no value for any codec (weights missing everywhere, say) is noise: one footnote instead
    hidden = {m: _missing_requirement(agg, m) for m in metrics if not any(len(agg.curve(c, m)[0]) for c in agg.codecs)}
    metrics = [m for m in metrics if m not in hidden]
    cells: dict[tuple[str, str], BDResult] = {}
    notes: list[str] = []
    for metric in metrics:
        spec = metric_spec(metric)
        ra, qa = agg.curve(anchor, metric)
        for codec in codecs:
            rt, qt = agg.curve(codec, metric)
            if len(rt) == 0 or len(ra) == 0:
                who = anchor if len(ra) == 0 else codec
                cells[(codec, metric)] = BDResult(math.nan, f"{spec.label} unavailable for {who}: {agg.reason(who, metric)}")
                continue
            qa_d = np.array([spec.display(v) for v in qa])
            qt_d = np.array([spec.display(v) for v in qt])
            res = bd(ra, qa_d, rt, qt_d, higher_is_better=spec.higher_is_better, kind=kind, method=method)
            cells[(codec, metric)] = res
            for n in res.notes:
                notes.append(f"{codec} / {spec.label}: {n}")
    best: dict[str, str | None] = {}
    for metric in metrics:
        spec = metric_spec(metric)
        # "better than the anchor" in the metric's direction; weak (little overlap) values never win
        sign = -1.0 if kind == "rate" or not spec.higher_is_better else 1.0
        scored = [(c, sign * cells[(c, metric)].value) for c in codecs
                  if cells[(c, metric)].ok and not cells[(c, metric)].low_overlap and sign * cells[(c, metric)].value > 0]
        best[metric] = max(scored, key=lambda t: t[1])[0] if scored else None
    return BDTable(kind, anchor, method, metrics, codecs, cells, best, notes + list(agg.warnings),
                   context=context_line(agg), hidden=hidden,
                   biased={m: why for m, why in small_sample(agg).items() if m in metrics},
                   anchor_note=agg.codec_note(anchor))


def _legend(table: BDTable) -> list[str]:
    """The lines under a table: what the marks mean and why cells are empty; short, without machine paths."""
    lines = [f"Anchor {table.anchor_note}."] if table.anchor_note else []
    if not table.codecs:
        lines.append("Only the anchor is in the run(s): add another codec for BD numbers.")
    elif any(table.best.values()):
        lines.append(f"Bold: the best codec of a column, among those better than the anchor on curves overlapping "
                     f"≥ {MIN_OVERLAP:.0%}.")
    else:
        lines.append(f"No codec is better than the anchor on curves overlapping ≥ {MIN_OVERLAP:.0%}: nothing is bold.")
    if any(c.low_overlap for c in table.cells.values()):
        axis = "quality" if table.kind == "rate" else "log-rate"
        lines.append(f"(…): the curves overlap on less than {MIN_OVERLAP:.0%} of their joint {axis} range (the "
                     "last column says how much); the value describes only the overlapping part.")
    if any(c.dropped for c in table.cells.values()):
        lines.append("†: non-monotonic points (more bits, no better quality) were dropped before interpolation.")
    shorts = {na_short(c.reason) for c in table.cells.values() if not c.ok}
    if "no overlap" in shorts:
        axis = "quality" if table.kind == "rate" else "rate"
        lines.append(f"n/a (no overlap): the two curves share no {axis} range.")
    for m, why in table.biased.items():
        lines.append(f"⚠ {metric_spec(m).label}: {why}.")
    if "too few points" in shorts:
        need = 4 if table.method == "cubic" else 2
        lines.append(f"n/a (too few points): {table.method} needs {need} rate points that rise in quality.")
    missing: dict[str, list[str]] = {}
    for (codec, metric), cell in table.cells.items():
        if not cell.ok and " unavailable for " in cell.reason:
            who = cell.reason.split(" unavailable for ", 1)[1].split(":", 1)[0]
            missing.setdefault(metric_spec(metric).label, [])
            if who not in missing[metric_spec(metric).label]:
                missing[metric_spec(metric).label].append(who)
    for label, who in missing.items():
        metric = next(m for m in table.metrics if metric_spec(m).label == label)
        spec = metric_spec(metric)
        how = f"needs {spec.requirement}" if spec.requirement else "re-run it with `--metrics`"
        lines.append(f"n/a (missing for …): no {label} for {', '.join(who)}; {how}.")
    if table.hidden:
        groups: dict[str, list[str]] = {}
        for m, why in table.hidden.items():
            groups.setdefault(why, []).append(metric_spec(m).label)
        lines.append("Not shown, no codec has them: " + "; ".join(f"{' and '.join(labels)} ({why})"
                                                               for why, labels in groups.items())
                     + ". Re-running the same `rdp-bench run` afterwards computes only what is missing.")
    return lines


def _row_cells(table: BDTable, codec: str, strong: Callable[[str], str]) -> list[str]:
    cells = []
    for m in table.metrics:
        text = table.value_text(codec, m)
        cells.append(strong(text) if table.best.get(m) == codec else text)
    if table.has_overlap_column:
        cells.append(table.overlap_note(codec))
    return cells


def _head(table: BDTable) -> list[str]:
    head = ["codec", *[table.header(m) for m in table.metrics]]
    if table.has_overlap_column:
        head.append(f"overlap < {MIN_OVERLAP:.0%}")
    return head


def to_markdown(table: BDTable) -> str:
    head = _head(table)
    out = [f"**{table.title()}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    zero = "0 (anchor)" if table.kind == "rate" else "±0"
    anchor_row = [f"{table.anchor} (anchor)", *[zero for _ in table.metrics]] + ([""] if table.has_overlap_column else [])
    out.append("| " + " | ".join(anchor_row) + " |")
    for codec in table.codecs:
        out.append("| " + " | ".join([codec, *_row_cells(table, codec, lambda t: f"**{t}**")]) + " |")
    out.append("")
    out += [f"{line}  " for line in _legend(table)]
    return "\n".join(out) + "\n"


def to_html(table: BDTable) -> str:
    import html

    head = "".join(f"<th>{html.escape(h)}</th>" for h in _head(table))
    rows = [f"<tr class='anchor'><td>{html.escape(table.anchor)} (anchor)</td>"
            + "".join("<td>0</td>" for _ in table.metrics) + ("<td></td>" if table.has_overlap_column else "") + "</tr>"]
    for codec in table.codecs:
        tds = []
        for m in table.metrics:
            cell = table.cells[(codec, m)]
            text = html.escape(table.value_text(codec, m))
            if table.best.get(m) == codec:
                cls = "best"
            elif not cell.ok:
                cls = "na"
            elif cell.low_overlap:
                cls = "weak"
            else:
                cls = ""
            tip = (f"curves overlap on {cell.overlap:.1%} of their joint range" if cell.ok else clean_reason(cell.reason))
            tds.append(f"<td class='{cls}' title='{html.escape(tip)}'>{text}</td>")
        if table.has_overlap_column:
            tds.append(f"<td class='note'>{html.escape(table.overlap_note(codec))}</td>")
        rows.append(f"<tr><td>{html.escape(codec)}</td>{''.join(tds)}</tr>")
    # `command` spans as <code>: backticks are Markdown, not something to print
    legend = "".join("<br>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(line)) for line in _legend(table))
    return (f"<p class='caption'>{html.escape(table.title())}</p><table class='bd'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><p class='legend'>{legend[4:]}</p>")


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("⚠", r"$^{!}$"), ("†", r"$^{\dagger}$"),
                 ("±", r"$\pm$"), ("≥", r"$\geq$"), ("–", "--"), ("…", r"\ldots{}"), ("<", r"$<$"),
                 ("`", "")):
        text = text.replace(a, b)
    return text


def to_latex(table: BDTable) -> str:
    head = _head(table)
    cols = "l" + "r" * len(table.metrics) + ("l" if table.has_overlap_column else "")
    zero = "0" if table.kind == "rate" else r"$\pm$0"
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{_latex_escape(table.title())}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(["Codec", *[_latex_escape(h) for h in head[1:]]]) + r" \\", r"\midrule",
             " & ".join([_latex_escape(f"{table.anchor} (anchor)"), *[zero for _ in table.metrics]]
                        + ([""] if table.has_overlap_column else [])) + r" \\"]
    for codec in table.codecs:
        cells = [_latex_escape(c) for c in _row_cells(table, codec, lambda t: f"\x00{t}\x01")]
        cells = [c.replace("\x00", r"\textbf{").replace("\x01", "}") for c in cells]
        cells = [r"n/a" if c.startswith("n/a") else c for c in cells]
        lines.append(" & ".join([_latex_escape(codec), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    # the same legend as the Markdown table, so the marks mean something in the paper too
    lines.append(r"\par\smallskip\footnotesize " + r" \\ ".join(_latex_escape(line) for line in _legend(table)))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_frame(table: BDTable) -> pd.DataFrame:
    """Tidy CSV form: one row per (codec, metric)."""
    recs: list[dict[str, Any]] = []
    for codec in table.codecs:
        for m in table.metrics:
            cell = table.cells[(codec, m)]
            spec = metric_spec(m)
            recs.append({
                "kind": f"bd-{table.kind}", "anchor": table.anchor, "codec": codec, "metric": m,
                "value": cell.value, "unit": "%" if table.kind == "rate" else (spec.unit or spec.label),
                "method": table.method, "best": table.best.get(m) == codec, "overlap": cell.overlap,
                "low_overlap": cell.low_overlap, "dropped_points": cell.dropped, "reason": clean_reason(cell.reason),
                "warning": "; ".join(cell.notes),
                "ci_low": cell.ci[0] if cell.ci else math.nan, "ci_high": cell.ci[1] if cell.ci else math.nan,
            })
    return pd.DataFrame(recs)
