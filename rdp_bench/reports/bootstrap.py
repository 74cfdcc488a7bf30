"""Bootstrap confidence intervals over images for a report's rate points and BD numbers.

One resample draws images with replacement; the *same* draw is used for every codec and rate point
(the codecs were measured on the same images, so their errors are paired), the per-rate-point means are
recomputed and, from those curves, every BD-rate / BD-quality cell. The interval is the percentile
interval of the resampled values.

FID/KID are one number per rate point over all patches: their intervals resample *patches* from the
Inception features the run stored in ``partials/`` (``rdp_bench.metrics.fid_bootstrap``; the network is
not run again), the same patch draws for every codec; none when a run folder lacks its ``partials/`` (a
copied baseline). Their BD cells resample *images with their patches*: the image draws of the other
metrics, each drawn image's patches counted as often as the image was drawn, so a resampled FID/KID
curve is paired with the same draw's mean bpp (patches of one image are not independent, and the bpp
belongs to images). Resampled FIDs are shifted by their mean bias per rate point, as the per-point
intervals are. Published curves have no images and keep no interval.
"""

from __future__ import annotations

import math

import numpy as np

from rdp_bench.bench.store import partial_file
from rdp_bench.metrics.fid_bootstrap import bootstrap_fid, bootstrap_kid, load_features, patch_interval, weighted_fid
from rdp_bench.reports.bdrate import BDTable, bd
from rdp_bench.reports.runs import Aggregate, is_dataset_metric, metric_spec

#: dataset metrics whose intervals come from resampling stored patch features
PATCH_METRICS = ("fid", "kid")


def _matrices(agg: Aggregate, metrics: list[str]) -> tuple[list[str], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Images (common set, fixed order) and, per (codec, rate label), bpp and metric values in that order."""
    images = sorted(set(agg.rows["image_sha256"].astype(str)))
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for (codec, label), g in agg.rows.groupby(["codec", "rate_label"], sort=False):
        g = g.drop_duplicates("image_sha256")
        g.index = g["image_sha256"].astype(str)
        if set(g.index) != set(images):
            continue  # aggregate() restricts to a common set; anything else is not comparable
        g = g.loc[images]
        out[(str(codec), str(label))] = {"bpp": g["bpp"].to_numpy(float),
                                         **{m: g[m].to_numpy(float) for m in metrics if m in g.columns}}
    return images, out


def bootstrap_report(agg: Aggregate, tables: list[BDTable], n: int = 200, seed: int = 0,
                     level: float = 0.95) -> int:
    """Add ``<metric>_ci_low``/``_ci_high`` (and ``bpp_ci_*``) to ``agg.points`` and set ``ci`` on every
    BD cell of ``tables`` whose curves rest on per-image rows. Returns the number of resamples used."""
    if n <= 0:
        return 0
    patch_done = patch_metric_intervals(agg, n, seed, level)
    metrics = [m for m in agg.metrics if not is_dataset_metric(m)]
    images, data = _matrices(agg, metrics)
    if len(images) < 2 or not data:
        return n if patch_done else 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(images), size=(n, len(images)))
    # resampled means: key -> column -> (n,) array
    means = {key: {col: vals[draws].mean(axis=1) for col, vals in cols.items()} for key, cols in data.items()}
    alpha = (1 - level) / 2

    def interval(samples: np.ndarray) -> tuple[float, float]:
        finite = samples[np.isfinite(samples)]
        if len(finite) < max(10, n // 2):  # mostly n/a resamples: no honest interval
            return math.nan, math.nan
        return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))

    for col in ["bpp", *metrics]:
        lo_col, hi_col = f"{col}_ci_low", f"{col}_ci_high"
        agg.points[lo_col] = math.nan
        agg.points[hi_col] = math.nan
        for key, cols in means.items():
            if col not in cols:
                continue
            at = (agg.points["codec"] == key[0]) & (agg.points["rate_label"] == key[1])
            agg.points.loc[at, [lo_col, hi_col]] = interval(cols[col])

    # FID/KID of the same image draws, from the stored features: key -> metric -> (n,) array
    for key, values in _patch_metric_draws(agg, images, draws, list(data)).items():
        means[key].update(values)
    labels: dict[str, list[str]] = {}
    for codec, label in means:
        labels.setdefault(codec, []).append(label)
    for table in tables:
        if table.anchor not in labels:
            continue
        for metric in table.metrics:
            if not all(metric in means[(table.anchor, lab)] for lab in labels[table.anchor]):
                continue
            spec = metric_spec(metric)
            for codec in table.codecs:
                cell = table.cells.get((codec, metric))
                if cell is None or not cell.ok or codec not in labels:
                    continue
                if not all(metric in means[(codec, lab)] for lab in labels[codec]):
                    continue
                values = np.full(n, math.nan)
                for r in range(n):
                    curves = []
                    for c in (table.anchor, codec):
                        rate = np.array([means[(c, lab)]["bpp"][r] for lab in labels[c]])
                        qual = np.array([spec.display(means[(c, lab)][metric][r]) for lab in labels[c]])
                        curves.append((rate, qual))
                    (ra, qa), (rt, qt) = curves
                    res = bd(ra, qa, rt, qt, higher_is_better=spec.higher_is_better, kind=table.kind,
                             method=table.method)
                    values[r] = res.value
                lo, hi = interval(values)
                if math.isfinite(lo):
                    cell.ci = (lo, hi)
    return n


def _image_features(agg: Aggregate, codec: str, label: str, metric: str,
                    images: list[str]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per image of ``images`` (in that order), the stored (reconstruction, reference) patch features of one
    rate point; None when the run has no such features or they are not those its value was computed from."""
    source = agg.sources.get(codec)
    if source is None:
        return None
    run, inner = source
    rows = agg.rows[(agg.rows["codec"] == codec) & (agg.rows["rate_label"] == label)].drop_duplicates("image_sha256")
    rows = rows.set_index(rows["image_sha256"].astype(str)).loc[images]
    paths = [partial_file(run.path, metric, inner, str(ckpt), label, sha) for ckpt, sha in zip(rows["checkpoint"], images)]
    if not all(p.is_file() for p in paths):
        return None
    features = [load_features([p]) for p in paths]
    point = agg.points[(agg.points["codec"] == codec) & (agg.points["rate_label"] == label)]
    counted = float(point[f"{metric}_patches"].iloc[0]) if f"{metric}_patches" in point.columns and len(point) else math.nan
    if math.isfinite(counted) and int(counted) != sum(len(rec) for rec, _ in features):
        return None
    return features


def _patch_metric_draws(agg: Aggregate, images: list[str], draws: np.ndarray,
                        keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """FID/KID of every image draw (rows of ``draws``: image indices) per rate point with stored features:
    each patch counted as often as its image was drawn; FIDs shifted by their mean bias."""
    wanted = [m for m in PATCH_METRICS if m in agg.metrics and m in agg.points.columns]
    image_counts = np.stack([np.bincount(row, minlength=len(images)) for row in draws]).astype(np.float64)
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for codec, label in keys:
        for m in wanted:
            features = _image_features(agg, codec, label, m, images)
            if not features or sum(len(rec) for rec, _ in features) < 2:
                continue
            rec = np.concatenate([f[0] for f in features])
            ref = np.concatenate([f[1] for f in features])
            counts = np.repeat(image_counts, [len(f[0]) for f in features], axis=1)
            if m == "fid":
                values = bootstrap_fid(rec, ref, counts)
                finite = values[np.isfinite(values)]
                values = values - (finite.mean() - weighted_fid(rec, ref) if len(finite) else 0.0)
            else:
                values = bootstrap_kid(rec, ref, counts)
            out.setdefault((codec, label), {})[m] = values
    return out


def patch_metric_intervals(agg: Aggregate, n: int, seed: int = 0, level: float = 0.95) -> bool:
    """``fid_ci_low``/``_ci_high`` (+ ``fid_bootstrap_bias``) and ``kid_ci_*`` on ``agg.points`` from the runs'
    stored patch features; a note in ``agg.warnings`` names the points whose features are missing.
    Returns whether any interval was computed."""
    wanted = [m for m in PATCH_METRICS if m in agg.metrics and m in agg.points.columns]
    missing: list[str] = []
    done = False
    for m in wanted:
        for col in (f"{m}_ci_low", f"{m}_ci_high"):
            if col not in agg.points.columns:
                agg.points[col] = math.nan
    for i, point in agg.points.iterrows():
        codec, label = str(point["codec"]), str(point["rate_label"])
        source = agg.sources.get(codec)
        if source is None:  # a published curve: no images, no features
            continue
        run, inner = source
        rows = agg.rows[(agg.rows["codec"] == codec) & (agg.rows["rate_label"] == label)]
        rows = rows.sort_values(["image_sha256", "image_id"], kind="stable")  # one patch order for every codec
        for m in wanted:
            if not np.isfinite(float(point[m])):
                continue
            paths = [partial_file(run.path, m, inner, str(ckpt), label, str(sha))
                     for ckpt, sha in zip(rows["checkpoint"], rows["image_sha256"])]
            if not paths or not all(p.is_file() for p in paths):
                missing.append(f"{codec} {label}")
                continue
            rec, ref = load_features(paths)
            counted = float(point[f"{m}_patches"]) if f"{m}_patches" in agg.points.columns else math.nan
            if math.isfinite(counted) and int(counted) != len(rec):
                missing.append(f"{codec} {label}")  # features of another image set than the value
                continue
            out = patch_interval(m, rec, ref, n, seed, level)
            agg.points.loc[i, [f"{m}_ci_low", f"{m}_ci_high"]] = (out["low"], out["high"])
            if "bias" in out:
                agg.points.loc[i, f"{m}_bootstrap_bias"] = out["bias"]
            done = done or math.isfinite(out["low"])
    if missing:
        shown = ", ".join(dict.fromkeys(missing))
        agg.warnings.append(f"no FID/KID interval for {shown}: the run folder lacks the matching stored patch "
                            "features (partials/)")
    return done
