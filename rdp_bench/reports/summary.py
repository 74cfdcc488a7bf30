"""The table ``rdp-bench run`` prints at the end, and the lines that say what to do next.

Values are shown as reports show them (MS-SSIM in dB, labels and units from the metric classes), rows
sorted by bpp within each codec, dataset metrics (FID/KID) in the same table.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import pandas as pd

from rdp_bench.reports.runs import metric_spec


def _header(metric: str) -> str:
    try:
        spec = metric_spec(metric)
    except KeyError:
        return metric
    return f"{spec.label} [{spec.unit}]" if spec.unit else spec.label


def _display(metric: str, value: float) -> float:
    try:
        return metric_spec(metric).display(value)
    except KeyError:
        return value


def _small_sample_mark(metric: str, dataset_rows: pd.DataFrame | None) -> str:
    """" ⚠ 60 patches" for an FID resting on fewer than FID_MIN_PATCHES patches (biased; KID is not)."""
    from rdp_bench.metrics.fid_bootstrap import FID_MIN_PATCHES

    if metric != "fid" or dataset_rows is None or "fid_patches" not in dataset_rows.columns:
        return ""
    counts = pd.to_numeric(dataset_rows.loc[dataset_rows["metric"].astype(str) == "fid", "fid_patches"],
                           errors="coerce").dropna()
    if counts.empty or counts.min() >= FID_MIN_PATCHES:
        return ""
    return f" ⚠ {int(counts.min())} patches: biased, see KID"


def run_summary(rows: pd.DataFrame, dataset_rows: pd.DataFrame | None, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of per-(codec, rate point) means, each codec's rate points in bpp order."""
    shown = [m for m in metrics if m in rows.columns]
    means = rows.groupby(["codec", "rate_label"], sort=False)[["bpp", *shown]].mean(numeric_only=True).reset_index()
    dataset_metrics: list[str] = []
    if dataset_rows is not None and not dataset_rows.empty and {"metric", "value"} <= set(dataset_rows.columns):
        d = dataset_rows[dataset_rows["metric"].astype(str).isin(metrics)]
        if not d.empty:
            wide = d.pivot_table(index=["codec", "rate_label"], columns="metric", values="value", aggfunc="last")
            dataset_metrics = [m for m in metrics if m in wide.columns]
            means = means.merge(wide[dataset_metrics].reset_index(), on=["codec", "rate_label"], how="left")
    order = list(dict.fromkeys(rows["codec"].astype(str)))
    means["_codec"] = pd.Categorical(means["codec"].astype(str), categories=order, ordered=True)
    means = means.sort_values(["_codec", "bpp"], kind="stable")
    columns = [*shown, *dataset_metrics]
    headers = ["codec", "rate point", "bpp", *[_header(m) + _small_sample_mark(m, dataset_rows) for m in columns]]
    out = []
    for _, r in means.iterrows():
        vals = []
        for m in columns:
            v = _display(m, float(r[m])) if pd.notna(r[m]) else math.nan
            vals.append("n/a" if not math.isfinite(v) else f"{v:.4f}" if abs(v) < 10 else f"{v:.3f}")
        out.append([str(r["codec"]), str(r["rate_label"]), f"{r['bpp']:.4f}", *vals])
    return headers, out


def next_steps(out: Path, codecs: list[str]) -> list[str]:
    """Where the results are and the ``report`` command that works for this run folder."""
    folder = shlex.quote(str(out))
    report = shlex.quote(str(Path(out) / "report"))
    lines = [f"results: {out}/results.csv (per image), {out}/summary/ (per rate point), {out}/provenance.json",
             f"next: rdp-bench report {folder} --out {report}"]
    if len(codecs) < 2:
        lines.append(f"(one codec so far: run another into the same --out {folder}, e.g. --codec bpg, for BD tables)")
    return lines
