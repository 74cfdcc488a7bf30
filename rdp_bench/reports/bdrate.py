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
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import bjontegaard
import numpy as np
import pandas as pd

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

    @property
    def ok(self) -> bool:
        return math.isfinite(self.value)


def _monotone(rate: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort by rate and keep only points that improve on every lower-rate point."""
    order = np.argsort(rate, kind="stable")
    rate, quality = rate[order], quality[order]
    keep, best = [], -math.inf
    for i, q in enumerate(quality):
        if q > best and (not keep or rate[i] > rate[keep[-1]]):
            keep.append(i)
            best = q
    return rate[keep], quality[keep], len(rate) - len(keep)


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

@dataclass
class BDTable:
    kind: str  # "rate" or "quality"
    anchor: str
    method: str
    metrics: list[str]
    codecs: list[str]  # test codecs (anchor excluded)
    cells: dict[tuple[str, str], BDResult]
    best: dict[str, str | None]  # metric -> best codec
    warnings: list[str] = field(default_factory=list)

    def title(self) -> str:
        if self.kind == "rate":
            what = "BD-rate [%] (negative = fewer bits than the anchor for the same quality)"
        else:
            what = "BD-quality (metric units at equal rate; ↑/↓ says which sign is better)"
        return f"{what}; anchor: {self.anchor}; interpolation: {self.method}"

    def header(self, metric: str) -> str:
        spec = metric_spec(metric)
        unit = f" [{spec.unit}]" if spec.unit else ""
        if self.kind == "rate":
            return f"{spec.label}{unit}"
        arrow = "↑" if spec.higher_is_better else "↓"
        return f"BD-{spec.label}{unit} {arrow}"

    def format(self, codec: str, metric: str) -> str:
        cell = self.cells[(codec, metric)]
        if not cell.ok:
            return f"n/a ({short_reason(cell.reason)})"
        text = f"{cell.value:+.2f}%" if self.kind == "rate" else _fmt_quality(metric, cell.value)
        if cell.notes:
            text += " ⚠"
        if cell.dropped:
            text += " †"
        return text


def short_reason(reason: str, limit: int = 70) -> str:
    """First two clauses of a reason, for a table cell; the full text goes under the table."""
    short = ": ".join(reason.split(": ")[:2]).split(" (")[0]
    return short if len(short) <= limit else short[: limit - 1] + "…"


def _fmt_quality(metric: str, value: float) -> str:
    spec = metric_spec(metric)
    if spec.unit == "dB" or spec.name == "fid":
        return f"{value:+.3f}"
    return f"{value:+.4f}"


def bd_table(agg: Aggregate, anchor: str, kind: str = "rate", method: str = "akima",
             metrics: list[str] | None = None) -> BDTable:
    if anchor not in agg.codecs:
        raise KeyError(f"anchor {anchor!r} is not among the codecs: {', '.join(agg.codecs)} (pick one with --anchor)")
    metrics = metrics or agg.metrics
    codecs = [c for c in agg.codecs if c != anchor]
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
        scored = [(c, cells[(c, metric)].value) for c in codecs if cells[(c, metric)].ok]
        if not scored:
            best[metric] = None
            continue
        if kind == "rate":
            best[metric] = min(scored, key=lambda t: t[1])[0]
        else:
            pick = max if spec.higher_is_better else min
            best[metric] = pick(scored, key=lambda t: t[1])[0]
    return BDTable(kind, anchor, method, list(metrics), codecs, cells, best, notes + list(agg.warnings))


def _legend(table: BDTable) -> list[str]:
    lines = []
    if any(c.notes for c in table.cells.values()):
        lines.append(f"⚠ curves overlap less than {MIN_OVERLAP:.0%} of their joint range (the bjontegaard package's rule): "
                     "the value describes the overlapping part only.")
    for (codec, metric), cell in table.cells.items():
        lines += [f"⚠ {codec} / {metric_spec(metric).label}: {note}" for note in cell.notes]
    full = [c.reason for c in table.cells.values() if not c.ok and short_reason(c.reason) != c.reason]
    lines += [f"n/a: {r}" for r in dict.fromkeys(full)]
    if any(c.dropped for c in table.cells.values()):
        lines.append("† non-monotonic points (more bits, no better quality) were dropped before interpolation.")
    lines.append("Best codec per column in bold.")
    return lines


def to_markdown(table: BDTable) -> str:
    head = ["codec", *[table.header(m) for m in table.metrics]]
    out = [f"**{table.title()}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out.append("| " + " | ".join([f"{table.anchor} (anchor)", *["0 (anchor)" if table.kind == "rate" else "±0"
                                                                 for _ in table.metrics]]) + " |")
    for codec in table.codecs:
        cells = []
        for m in table.metrics:
            text = table.format(codec, m)
            cells.append(f"**{text}**" if table.best.get(m) == codec else text)
        out.append("| " + " | ".join([codec, *cells]) + " |")
    out.append("")
    out += [f"{line}  " for line in _legend(table)]
    return "\n".join(out) + "\n"


def to_html(table: BDTable) -> str:
    import html

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["codec", *[table.header(m) for m in table.metrics]])
    rows = [f"<tr class='anchor'><td>{html.escape(table.anchor)} (anchor)</td>"
            + "".join("<td>0</td>" for _ in table.metrics) + "</tr>"]
    for codec in table.codecs:
        tds = []
        for m in table.metrics:
            cell = table.cells[(codec, m)]
            text = html.escape(table.format(codec, m))
            cls = "best" if table.best.get(m) == codec else ("na" if not cell.ok else "")
            tds.append(f"<td class='{cls}'>{text}</td>")
        rows.append(f"<tr><td>{html.escape(codec)}</td>{''.join(tds)}</tr>")
    legend = "".join(f"<br>{html.escape(line)}" for line in _legend(table))
    return (f"<p class='caption'>{html.escape(table.title())}</p><table class='bd'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><p class='legend'>{legend[4:]}</p>")


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("⚠", r"$^{!}$"), ("†", r"$^{\dagger}$"),
                 ("±", r"$\pm$")):
        text = text.replace(a, b)
    return text


def to_latex(table: BDTable) -> str:
    cols = "l" + "r" * len(table.metrics)
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{_latex_escape(table.title())}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(["Codec", *[_latex_escape(table.header(m)) for m in table.metrics]]) + r" \\", r"\midrule",
             " & ".join([_latex_escape(f"{table.anchor} (anchor)"), *["0" for _ in table.metrics]]) + r" \\"]
    for codec in table.codecs:
        cells = []
        for m in table.metrics:
            cell = table.cells[(codec, m)]
            text = _latex_escape(table.format(codec, m) if cell.ok else "n/a")
            cells.append(rf"\textbf{{{text}}}" if table.best.get(m) == codec else text)
        lines.append(" & ".join([_latex_escape(codec), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
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
                "dropped_points": cell.dropped, "reason": cell.reason, "warning": "; ".join(cell.notes),
            })
    return pd.DataFrame(recs)
