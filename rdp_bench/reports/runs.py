"""Read run folders and reduce them to one rate-quality point per (codec, rate point).

Aggregation rules (the same as ``summary/<codec>.json`` so that every number agrees):

* **bpp** is the mean over images of each image's bpp, which counts the codec's payload and not the
  container's framing (CompressAI's convention; ``bpp_container`` has the file's). The pooled
  ``total bits / total pixels`` is reported next to it as ``bpp_pooled``; on datasets whose images
  all have one size (Kodak) the two are equal.
* per-image quality metrics (PSNR, MS-SSIM, LPIPS, DISTS, ...) are means over images;
  MS-SSIM in dB is ``-10·log10(1 - mean MS-SSIM)``.
* dataset metrics (FID, KID) come from ``dataset_metrics.csv``.

Only rows of the checkpoint a codec's rate point was last run with count (``provenance.json``), and
every codec is compared on the same images: when the image sets differ the report keeps their
intersection and says so.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from rdp_bench.bench.store import upgrade_table, with_seed_column


@dataclass(frozen=True)
class MetricSpec:
    """What a report needs to know about a metric; built from the metric's class, which owns these facts."""

    name: str
    label: str
    higher_is_better: bool
    kind: str = "image"  # "image": mean over images; "dataset": one value per (codec, rate point)
    unit: str = ""
    to_display: Callable[[float], float] | None = None
    requirement: str = ""  # what to install / put where when it is unavailable

    @property
    def axis_label(self) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        unit = f" [{self.unit}]" if self.unit else ""
        return f"{self.label}{unit} {arrow}"

    def display(self, value: float) -> float:
        if self.to_display is None or not np.isfinite(value):
            return value
        return self.to_display(value)


#: table order of the usual metrics; any other registered metric found in a run is appended
REPORT_ORDER: tuple[str, ...] = ("psnr", "ms-ssim", "lpips", "dists", "fid", "kid")

#: per-image columns that are not quality metrics
NON_METRIC_COLUMNS = {
    "codec", "checkpoint", "rate_label", "rate_id", "rate_params", "dataset", "image_id", "image_sha256",
    "height", "width", "bytes", "container_bytes", "bpp", "decoding_time", "encoding_time", "device", "bitstream",
    "unavailable", "seed",
}

_SPECS: dict[str, MetricSpec] = {}


def metric_spec(name: str) -> MetricSpec:
    """Label, unit, direction and display transform of a registered metric, read from its class."""
    if name not in _SPECS:
        from rdp_bench.metrics import metric_class

        try:
            cls = metric_class(name)
        except (KeyError, ImportError):
            raise KeyError(f"metric {name!r} is not registered") from None
        _SPECS[name] = MetricSpec(name, cls.display_label(), bool(cls.higher_is_better), kind=getattr(cls, "kind", "image"),
                                  unit=cls.unit, to_display=cls.to_display, requirement=cls.requirement())
    return _SPECS[name]


def is_dataset_metric(name: str) -> bool:
    try:
        return metric_spec(name).kind == "dataset"
    except KeyError:
        return False


class ReportError(RuntimeError):
    """Input the report cannot use (no results, unknown anchor, ...); the message says why."""


@dataclass
class Run:
    path: Path
    rows: pd.DataFrame
    dataset_rows: pd.DataFrame
    provenance: dict[str, Any]

    @property
    def entries(self) -> list[dict[str, Any]]:
        return list(self.provenance.get("runs", []))

    def latest_entry(self) -> dict[str, Any]:
        return self.entries[-1] if self.entries else {}

    def checkpoint_of(self, codec: str, rate_label: str) -> str | None:
        """Checkpoint the newest provenance entry that ran this rate point recorded."""
        for entry in reversed(self.entries):
            point = entry.get("codecs", {}).get(codec, {}).get("rate_points", {}).get(rate_label)
            if point and point.get("checkpoint"):
                return str(point["checkpoint"])
        return None


def load_run(path: str | Path) -> Run:
    path = Path(path)
    results = path / "results.csv"
    if not results.exists():
        raise ReportError(f"{path} is not a run folder: {results} is missing (run `rdp-bench run --out {path}` first)")
    # a format-v1 folder's rows in today's rate columns; rows from before --seeds are seed 0
    rows = with_seed_column(upgrade_table(pd.read_csv(results)))
    if rows.empty:
        raise ReportError(f"{results} has no rows")
    dataset_csv = path / "dataset_metrics.csv"
    dataset_rows = pd.DataFrame()
    if dataset_csv.exists() and dataset_csv.stat().st_size > 1:
        try:
            dataset_rows = with_seed_column(pd.read_csv(dataset_csv))
        except pd.errors.EmptyDataError:
            pass
    prov_path = path / "provenance.json"
    provenance = json.loads(prov_path.read_text()) if prov_path.exists() else {"runs": []}
    return Run(path, rows, dataset_rows, provenance)


@dataclass
class Aggregate:
    """Rate-quality points of several runs, ready for BD tables, plots and checks."""

    points: pd.DataFrame  # one row per (codec, rate_label): bpp, bpp_pooled, images, metric means
    rows: pd.DataFrame  # the per-image rows that went into it (image set restricted)
    metrics: list[str]  # metric names present, in report order
    reasons: dict[tuple[str, str], str]  # (codec, metric) -> why it is unavailable
    sources: dict[str, tuple[Run, str]]  # displayed codec name -> (run, codec name inside that run)
    warnings: list[str] = field(default_factory=list)

    @property
    def codecs(self) -> list[str]:
        return list(dict.fromkeys(self.points["codec"]))

    def curve(self, codec: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(bpp, value) of a codec sorted by bpp, NaN points dropped; MS-SSIM stays linear here."""
        sub = self.points[self.points["codec"] == codec].sort_values("bpp")
        if metric not in sub.columns:
            return np.array([]), np.array([])
        bpp = sub["bpp"].to_numpy(float)
        val = sub[metric].to_numpy(float)
        ok = np.isfinite(bpp) & np.isfinite(val)
        return bpp[ok], val[ok]

    def reason(self, codec: str, metric: str) -> str:
        return self.reasons.get((codec, metric), "not measured")

    def provenance_of(self, codec: str) -> dict[str, Any]:
        """What a displayed codec recorded about itself in the newest provenance entry that ran it ({} if none)."""
        if codec not in self.sources:
            return {}
        run, inner = self.sources[codec]
        return next((e["codecs"][inner] for e in reversed(run.entries) if inner in e.get("codecs", {})), {})

    def codec_note(self, codec: str) -> str:
        """The codec's own line for reports (its ``report_note`` in provenance.json: e.g. which backend made
        bpg and that backend's measured gap to real bpgenc); older records: the backend they name, if any."""
        info = self.provenance_of(codec)
        if info.get("report_note"):
            return str(info["report_note"])
        return f"{codec}: backend {info['backend']}" if info.get("backend") else ""


def _unavailable_reasons(rows: pd.DataFrame) -> dict[str, str]:
    out: dict[str, str] = {}
    if "unavailable" not in rows.columns:
        return out
    for text in rows["unavailable"].dropna().unique():
        try:
            out.update(json.loads(text))
        except (TypeError, ValueError):
            continue
    return out


def _current_rows(run: Run) -> pd.DataFrame:
    """Drop rows of checkpoints a rate point is no longer run with (a retrained codec in an old folder)."""
    rows = run.rows
    keep = np.ones(len(rows), dtype=bool)
    for (codec, label), idx in rows.groupby(["codec", "rate_label"]).groups.items():
        ckpt = run.checkpoint_of(str(codec), str(label))
        if ckpt is None:
            continue
        sub = rows.loc[idx]
        match = sub["checkpoint"].astype(str) == ckpt
        if match.any():
            keep[rows.index.get_indexer(sub.index[~match])] = False
    return rows[keep]


def aggregate(runs: Iterable[Run], metrics: list[str] | None = None, codecs: list[str] | None = None,
              images: set[str] | None = None) -> Aggregate:
    """Reduce runs to per-(codec, rate point) points on a common image set.

    ``codecs`` restricts (and orders) the codecs; ``images`` restricts to these image sha256s.
    """
    runs = list(runs)
    notes: list[str] = []
    frames, dataset_frames = [], []
    sources: dict[str, tuple[Run, str]] = {}
    for run in runs:
        rows = _current_rows(run).copy()
        drows = run.dataset_rows.copy()
        rename: dict[str, str] = {}
        for codec in dict.fromkeys(rows["codec"].astype(str)):
            shown = codec if codec not in sources else f"{codec} ({run.path.name})"
            rename[codec] = shown
            sources[shown] = (run, codec)
        rows["codec"] = rows["codec"].astype(str).map(rename)
        frames.append(rows)
        if not drows.empty:
            drows = drows[drows["codec"].astype(str).isin(rename)].copy()
            drows["codec"] = drows["codec"].astype(str).map(rename)
            dataset_frames.append(drows)
    rows = pd.concat(frames, ignore_index=True)
    if codecs:
        missing = [c for c in codecs if c not in set(rows["codec"])]
        if missing:
            raise ReportError(f"codec(s) {', '.join(missing)} not in the run(s); present: {', '.join(sorted(set(rows['codec'])))}")
        rows = rows[rows["codec"].isin(codecs)]
    if images is not None:
        rows = rows[rows["image_sha256"].isin(images)]
        if rows.empty:
            raise ReportError("none of the requested images are in the run(s)")

    # one image set for everyone, or BD numbers compare different content
    sets = {key: frozenset(g["image_sha256"]) for key, g in rows.groupby(["codec", "rate_label"])}
    common = frozenset.intersection(*sets.values())
    if not common:
        raise ReportError("the codecs / rate points share no image: nothing comparable")
    if any(s != common for s in sets.values()):
        notes.append(f"codecs or rate points were run on different images; using the {len(common)} images all share "
                     f"(largest set had {max(len(s) for s in sets.values())})")
        rows = rows[rows["image_sha256"].isin(common)]

    dataset_rows = pd.concat(dataset_frames, ignore_index=True) if dataset_frames else pd.DataFrame()

    # which metrics exist
    image_metrics = [c for c in rows.columns if c not in NON_METRIC_COLUMNS and not c.startswith("bpp_")
                     and pd.api.types.is_numeric_dtype(rows[c]) and _is_metric(c)]
    dataset_metrics = sorted(set(dataset_rows["metric"].astype(str))) if not dataset_rows.empty else []
    extra_dataset = [c for c in (dataset_rows.columns if not dataset_rows.empty else [])
                     if c in REPORT_ORDER and is_dataset_metric(c) and c not in dataset_metrics]
    found = list(dict.fromkeys([*image_metrics, *dataset_metrics, *extra_dataset]))
    wanted = metrics if metrics is not None else [*REPORT_ORDER, *[m for m in found if m not in REPORT_ORDER]]
    order = [m for m in wanted if m in found]
    absent = [metric_spec(m).label for m in REPORT_ORDER if m not in found and (metrics is None or m in metrics)]
    if absent:
        notes.append(f"not measured in these runs: {', '.join(absent)} (add them with `rdp-bench run --metrics ...`)")

    reasons: dict[tuple[str, str], str] = {}
    records = []
    for (codec, label), g in rows.groupby(["codec", "rate_label"], sort=False):
        pixels = (g["height"] * g["width"]).sum()
        rec: dict[str, Any] = {
            "codec": codec, "rate_label": label, "rate_id": int(g["rate_id"].iloc[0]),
            "checkpoint": str(g["checkpoint"].iloc[0]), "images": len(g.drop_duplicates(["image_sha256", "image_id"])),
            "seeds": int(g["seed"].nunique()),
            "bpp": float(g["bpp"].mean()), "bpp_pooled": float(8.0 * g["bytes"].sum() / pixels),
        }
        why = _unavailable_reasons(g)
        for m in image_metrics:
            vals = g[m].to_numpy(float)
            finite = vals[np.isfinite(vals)]
            if len(finite) == len(vals) and len(vals):
                rec[m] = float(finite.mean())
            else:
                rec[m] = math.nan
                reasons.setdefault((codec, m), why.get(m) or
                                   (f"NaN for {len(vals) - len(finite)} of {len(vals)} images" if len(finite) else "not computed"))
        records.append(rec)
    points = pd.DataFrame(records)

    # dataset metrics: only rows computed on exactly the common image set
    if not dataset_rows.empty:
        for rec in records:
            sub = dataset_rows[(dataset_rows["codec"] == rec["codec"]) & (dataset_rows["rate_label"] == rec["rate_label"])]
            if "checkpoint" in sub.columns:
                sub = sub[sub["checkpoint"].astype(str) == rec["checkpoint"]]
            if "images" in sub.columns:
                same_size = sub[sub["images"] == len(common)]
                if sub.shape[0] and same_size.empty:
                    for m in set(sub["metric"].astype(str)):
                        reasons.setdefault((rec["codec"], m), f"computed on {int(sub['images'].iloc[-1])} images, "
                                                              f"not the {len(common)} compared here")
                sub = same_size
            for m in dataset_metrics:
                hit = sub[sub["metric"].astype(str) == m]
                if len(hit):  # the latest value per seed: FID/KID is their mean
                    hit = hit.groupby("seed").tail(1)
                value = float(hit["value"].mean()) if len(hit) and hit["value"].notna().all() else (
                    float(hit["value"].iloc[-1]) if len(hit) else math.nan)
                if not np.isfinite(value) and len(hit):
                    reason = hit["reason"].iloc[-1] if "reason" in hit.columns else ""
                    reasons.setdefault((rec["codec"], m), str(reason) if isinstance(reason, str) and reason else "NaN")
                at = (points["codec"] == rec["codec"]) & (points["rate_label"] == rec["rate_label"])
                points.loc[at, m] = value
                if len(hit) and f"{m}_patches" in hit.columns:  # how many samples FID/KID saw
                    points.loc[at, f"{m}_patches"] = hit[f"{m}_patches"].iloc[-1]
            for m in extra_dataset:
                vals = sub[m].dropna() if m in sub.columns else pd.Series(dtype=float)
                points.loc[(points["codec"] == rec["codec"]) & (points["rate_label"] == rec["rate_label"]), m] = (
                    float(vals.iloc[-1]) if len(vals) else math.nan)

    for m in order:
        if m not in points.columns:
            points[m] = math.nan
    for codec in points["codec"].unique():
        for m in order:
            sub = points[points["codec"] == codec][m]
            if sub.isna().all():
                reasons.setdefault((codec, m), "not measured in this run")
    points = points.sort_values(["codec", "bpp"], kind="stable").reset_index(drop=True)
    if codecs:
        points["codec"] = pd.Categorical(points["codec"], categories=codecs, ordered=True)
        points = points.sort_values(["codec", "bpp"], kind="stable").reset_index(drop=True)
        points["codec"] = points["codec"].astype(str)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return Aggregate(points, rows.reset_index(drop=True), order, reasons, sources, notes)


def _is_metric(column: str) -> bool:
    try:
        metric_spec(column)
        return True
    except KeyError:
        return False
