"""``rdp-bench report --published hific,msillm``: published points as external codecs of a report.

Each entry becomes one codec named ``"<label> (published)"`` in the aggregate's points (so the BD tables
list it as a row and the plots draw it, dashed), with no per-image rows (nothing to decode, nothing in the
visual grid). It is added only when the run's dataset and protocol match the entry's; otherwise
``ReportError`` says which entry, which dataset or protocol it has and which the run has.
"""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from rdp_bench.published import (
    FID256, MEAN_PER_IMAGE, PublishedMismatch, check_match, describe, entry, load_points,
)
from rdp_bench.reports.runs import Aggregate, ReportError

SUFFIX = " (published)"


def is_published(codec: str) -> bool:
    """Whether a codec of a report is a published reference curve (drawn dashed, never decoded)."""
    return str(codec).endswith(SUFFIX)


def run_dataset(agg: Aggregate) -> str:
    names = sorted(set(agg.rows["dataset"].dropna().astype(str))) if "dataset" in agg.rows.columns else []
    if len(names) != 1:
        raise ReportError(f"published points need a run on one dataset; these rows come from "
                          f"{', '.join(names) or 'no named dataset'}")
    return names[0]


def run_patch_protocol(agg: Aggregate) -> str | None:
    """The FID/KID patch protocol id of the run (None when it measured neither)."""
    from rdp_bench.metrics.fid import PROTOCOL

    if not {"fid", "kid"} & set(agg.metrics):
        return None
    recorded = set()
    for run, _ in agg.sources.values():
        for e in run.entries:
            for m in ("fid", "kid"):
                proto = (e.get("metrics", {}).get(m) or {}).get("protocol")
                if proto:
                    recorded.add(str(proto))
    # rdp-bench's own protocol is HiFiC's FID/256; anything else recorded keeps its own name
    ids = {FID256 if p == PROTOCOL else p for p in recorded} or {FID256}
    if len(ids) > 1:
        raise ReportError(f"the runs computed FID/KID with different protocols ({', '.join(sorted(ids))})")
    return ids.pop()


def add_published(agg: Aggregate, keys: Iterable[str]) -> list[str]:
    """Append the published entries ``keys`` to ``agg.points`` (in place); returns their provenance lines,
    which are also added to ``agg.warnings`` so every table and page carries them."""
    keys = [k for k in dict.fromkeys(keys) if k]
    if not keys:
        return []
    dataset = run_dataset(agg)
    patches = run_patch_protocol(agg)
    lines: list[str] = []
    frames = []
    for key in keys:
        try:
            e = entry(key)
            check_match(key, dataset, patches, MEAN_PER_IMAGE)
        except (KeyError, PublishedMismatch) as exc:
            raise ReportError(str(exc.args[0] if exc.args else exc)) from None
        name = e.display_name
        if name in set(agg.points["codec"]):
            raise ReportError(f"{name} is already a codec of the run(s)")
        records = []
        for i, p in enumerate(load_points(key, dataset)):
            rec: dict = {"codec": name, "rate_label": p.checkpoint or f"p{i + 1}", "rate_id": i,
                         "checkpoint": f"published: {e.source}", "images": math.nan, "bpp": p.bpp,
                         "bpp_pooled": math.nan}
            for m in agg.metrics:
                rec[m] = p.values.get(m, math.nan)
            records.append(rec)
        for m in agg.metrics:
            if all(not math.isfinite(r[m]) for r in records):
                agg.reasons[(name, m)] = f"not published by {e.label} on {dataset}"
        frames.append(pd.DataFrame(records))
        lines.append(describe(e) + (f". {e.notes}" if e.notes else ""))
    images = agg.rows["image_sha256"].nunique()
    from rdp_bench.datasets import REMOTE

    expected = REMOTE[dataset].count if dataset in REMOTE else None
    if expected is not None and images != expected:
        lines.append(f"the run covers {images} of the {expected} {dataset} images the published numbers are on")
    agg.points = pd.concat([agg.points, *frames], ignore_index=True)
    agg.warnings.extend(lines)
    return lines
