"""Issue 17, statistics: FID/KID intervals from stored patch features, intervals in summary/*.json,
small-sample FID warnings."""

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from PIL import Image

from rdp_bench.metrics import fid as fid_module
from rdp_bench.metrics.fid import FIDStatistics, fid_from_statistics, kid_from_features
from rdp_bench.metrics.fid_bootstrap import (
    FID_MIN_PATCHES, _trace_sqrt_product, bootstrap_kid, patch_draws, patch_interval, weighted_fid,
)


def _features(n, d, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    ref = rng.gamma(2.0, 1.0, size=(n, d))
    return ref + noise * rng.normal(size=(n, d)), ref


def test_unresampled_fid_and_kid_equal_the_metrics():
    rec, ref = _features(300, 16)
    a, b = FIDStatistics(), FIDStatistics()
    a.update(rec)
    b.update(ref)
    assert weighted_fid(rec, ref) == pytest.approx(fid_from_statistics(a, b), rel=1e-9)
    # at most 1,000 patches: KID is one subset = every patch, the all-pairs estimator exactly
    assert bootstrap_kid(rec, ref, np.ones((1, 300)))[0] == pytest.approx(kid_from_features(rec, ref)["kid"], rel=1e-9)
    assert bootstrap_kid(rec, ref, np.ones((1, 300)), block=7)[0] == pytest.approx(kid_from_features(rec, ref)["kid"],
                                                                                  rel=1e-9)


def test_trace_sqrt_is_exact_on_rank_deficient_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(12, 40)), rng.normal(size=(12, 40))  # 12 patches, 40 dims: both ranks 12
    exact = np.trace(scipy.linalg.sqrtm((a.T @ a) @ (b.T @ b))).real
    assert _trace_sqrt_product(a, b) == pytest.approx(exact, rel=1e-6)  # singular values of A B^T
    a, b = rng.normal(size=(50, 20)), rng.normal(size=(50, 20))
    exact = np.trace(scipy.linalg.sqrtm((a.T @ a) @ (b.T @ b))).real
    assert _trace_sqrt_product(a, b) == pytest.approx(exact, rel=1e-6)  # the eigen route


def test_resampled_kid_leaves_out_pairs_of_copies():
    rec, ref = _features(5, 4, seed=1)
    w = np.array([[2, 1, 1, 1, 0]], float)
    # the same statistic written out over the 5 drawn positions, pairs of two copies of patch 0 dropped
    idx = [0, 0, 1, 2, 3]
    k = lambda x, y: (x @ y / 4 + 1) ** 3  # noqa: E731
    pos = [(a, b) for a in range(5) for b in range(5) if idx[a] != idx[b]]
    kxx = np.mean([k(rec[idx[a]], rec[idx[b]]) for a, b in pos])
    kyy = np.mean([k(ref[idx[a]], ref[idx[b]]) for a, b in pos])
    cross = pos + [(a, a) for a in range(5)]
    kxy = np.mean([k(rec[idx[a]], ref[idx[b]]) for a, b in cross])
    assert bootstrap_kid(rec, ref, w)[0] == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)


def test_patch_intervals_hold_the_estimate_and_narrow_with_more_patches():
    few, many = _features(60, 32, seed=2), _features(600, 32, seed=2)
    widths = {}
    for name, (rec, ref) in (("few", few), ("many", many)):
        fid = patch_interval("fid", rec, ref, 100)
        kid = patch_interval("kid", rec, ref, 100)
        assert fid["low"] <= weighted_fid(rec, ref) <= fid["high"]
        assert fid["bias"] > 0  # resamples see fewer distinct patches: FID rises
        assert kid["low"] <= kid_from_features(rec, ref)["kid"] <= kid["high"]
        widths[name] = kid["high"] - kid["low"]
    assert widths["many"] < widths["few"]
    draws = patch_draws(60, 5, seed=0)
    assert (draws.sum(axis=1) == 60).all() and np.array_equal(draws, patch_draws(60, 5, seed=0))


# --- a report on a run folder with stored features --------------------------------------------------------

CURVES = {"bpg": [(0.10, 29.0), (0.20, 31.0), (0.35, 33.0), (0.55, 35.0)],
          "jpeg": [(0.12, 27.5), (0.25, 30.0), (0.45, 32.0), (0.70, 34.0)]}


def _run_with_features(folder, images=4, patches_per_image=6, dim=8, partials=True):
    """A run folder with per-image patch features in partials/ and the FID/KID finalize() computed from them."""
    from rdp_bench.bench.store import partial_file

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    refs = {i: rng.gamma(2.0, 1.0, size=(patches_per_image, dim)) for i in range(images)}
    rows, drows = [], []
    for codec, curve in CURVES.items():
        for rid, (bpp, psnr) in enumerate(curve):
            label = f"q{rid}"
            feats = {}
            for i in range(images):
                sha = f"{i:02x}" + "e" * 62  # hex letters (all digits would read as a number), distinct 24-char prefixes
                rows.append({"codec": codec, "checkpoint": "none", "rate_label": label, "rate_id": rid,
                             "dataset": "samples", "image_id": f"img{i}.png", "image_sha256": sha, "height": 512,
                             "width": 768, "bytes": int(bpp * 512 * 768 / 8),
                             "container_bytes": int(bpp * 512 * 768 / 8) + 25, "bpp": bpp, "psnr": psnr + 0.1 * i})
                rec = refs[i] + (1.0 - bpp) * rng.normal(size=refs[i].shape)
                feats[sha] = {"ref": refs[i].astype(np.float32), "rec": rec.astype(np.float32)}
                for metric in ("fid", "kid"):
                    if partials:
                        path = partial_file(folder, metric, codec, "none", label, sha)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        np.savez(path, **feats[sha])
            for metric in ("fid", "kid"):
                cls = fid_module.FID if metric == "fid" else fid_module.KID
                values = cls.finalize(None, list(feats.values()))
                drows.append({"codec": codec, "checkpoint": "none", "rate_label": label, "rate_id": rid,
                              "dataset": "samples", "metric": metric, "value": values[metric], "images": images,
                              f"{metric}_patches": values[f"{metric}_patches"], "reason": ""})
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    pd.DataFrame(drows).to_csv(folder / "dataset_metrics.csv", index=False)
    entry = {"dataset": {"name": "samples", "images": images},
             "codecs": {c: {"rate_points": {f"q{i}": {"checkpoint": "none"} for i in range(4)}} for c in CURVES},
             "metrics": {"psnr": {"available": True}, "fid": {"available": True}, "kid": {"available": True}}}
    (folder / "provenance.json").write_text(json.dumps({"runs": [entry]}))
    return folder


def _no_inception(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the bootstrap must reuse the stored features, not run Inception")

    monkeypatch.setattr(fid_module, "inception_features", refuse)
    monkeypatch.setattr(fid_module, "inception_model", refuse)


def test_report_fid_kid_intervals_come_from_stored_features(tmp_path, monkeypatch):
    from rdp_bench.reports.report import make_report

    _no_inception(monkeypatch)
    run = _run_with_features(tmp_path / "run")
    make_report([run], tmp_path / "rep", anchor="bpg", grid_images=0, sizes=("screen",), bootstrap=60)
    points = pd.read_csv(tmp_path / "rep" / "rate_points.csv")
    for m in ("fid", "kid"):
        assert points[f"{m}_ci_low"].notna().all()
        assert (points[f"{m}_ci_low"] <= points[m]).all() and (points[m] <= points[f"{m}_ci_high"]).all()
    assert (points["fid_bootstrap_bias"] > 0).all()
    md = (tmp_path / "rep" / "bd_tables.md").read_text()
    assert "FID/KID over their patches" in md and "BD cells over the images with their patches" in md
    # the BD cells of FID and KID get intervals too, around their value
    bd_cells = pd.read_csv(tmp_path / "rep" / "bd_tables.csv")
    cells = bd_cells[(bd_cells["codec"] == "jpeg") & bd_cells["metric"].isin(["fid", "kid"]) & bd_cells["value"].notna()]
    assert len(cells) == 4, bd_cells[["kind", "codec", "metric", "value", "reason"]]
    assert cells["ci_low"].notna().all()
    assert ((cells["ci_low"] <= cells["value"]) & (cells["value"] <= cells["ci_high"])).all(), cells


def test_report_says_when_features_are_missing(tmp_path):
    from rdp_bench.reports.report import make_report

    run = _run_with_features(tmp_path / "run", partials=False)
    make_report([run], tmp_path / "rep", anchor="bpg", grid_images=0, sizes=("screen",), bootstrap=30)
    points = pd.read_csv(tmp_path / "rep" / "rate_points.csv")
    assert points["fid_ci_low"].isna().all() and points["psnr_ci_low"].notna().all()
    assert "lacks the matching stored patch features (partials/)" in (tmp_path / "rep" / "bd_tables.md").read_text()


# --- small-sample FID ----------------------------------------------------------------------------------------

def test_small_sample_fid_is_marked_and_kid_is_the_headline(tmp_path):
    from rdp_bench.reports.plots import perception_metric
    from rdp_bench.reports.report import make_report
    from rdp_bench.reports.runs import aggregate, load_run

    run = _run_with_features(tmp_path / "run")  # 4 images x 6 patches = 24 < 2,048
    make_report([run], tmp_path / "rep", anchor="bpg", grid_images=0, sizes=("screen",))
    md = (tmp_path / "rep" / "bd_tables.md").read_text()
    assert "| FID ⚠ |" in md and "| BD-FID ↓ ⚠ |" in md
    assert "⚠ FID: FID from 24 patches (fewer than 2,048) is biased upwards" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "FID from 24 patches (fewer than 2,048) is biased upwards" in html
    assert "compare codecs by KID" in html
    agg = aggregate([load_run(run)])
    assert perception_metric(agg)[0] == "kid"  # the distortion-perception plane
    from rdp_bench.reports.plots import figure_context
    assert "⚠ biased (< 2,048)" in figure_context(agg, "fid") and "⚠" not in figure_context(agg, "kid")


def test_fid_on_enough_patches_is_not_marked(tmp_path):
    from rdp_bench.reports.bdrate import bd_table, small_sample
    from rdp_bench.reports.plots import perception_metric
    from rdp_bench.reports.runs import aggregate, load_run

    run = _run_with_features(tmp_path / "run", partials=False)
    table = pd.read_csv(run / "dataset_metrics.csv")
    table["fid_patches"] = FID_MIN_PATCHES
    table.to_csv(run / "dataset_metrics.csv", index=False)
    agg = aggregate([load_run(run)])
    assert small_sample(agg) == {} and perception_metric(agg)[0] == "fid"
    assert "⚠" not in bd_table(agg, "bpg").header("fid")


def test_run_summary_table_marks_small_sample_fid():
    from rdp_bench.reports.summary import run_summary

    rows = pd.DataFrame([{"codec": "jpeg", "rate_label": "q5", "bpp": 0.2, "psnr": 30.0}])
    drows = pd.DataFrame([{"codec": "jpeg", "rate_label": "q5", "metric": "fid", "value": 50.0, "fid_patches": 60},
                          {"codec": "jpeg", "rate_label": "q5", "metric": "kid", "value": 0.01, "kid_patches": 60}])
    headers, _ = run_summary(rows, drows, ["psnr", "fid", "kid"])
    assert any(h.startswith("FID") and "⚠ 60 patches: biased, see KID" in h for h in headers)
    assert not any(h.startswith("KID") and "⚠" in h for h in headers)


# --- summary/*.json of a run ---------------------------------------------------------------------------------

def test_run_summary_json_has_bootstrap_intervals_without_rerunning_inception(tmp_path, monkeypatch, photo):
    from rdp_bench.bench.runner import RunConfig, run_benchmark

    monkeypatch.setenv("RDP_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RDP_BENCH_OFFLINE", "1")
    calls = []

    def fake_features(model, patches, batch_size=16):  # a feature vector per patch, seeded by its pixels
        calls.append(len(patches))
        return np.stack([np.random.default_rng(zlib.crc32(p.numpy().tobytes())).normal(size=2048) for p in patches])

    monkeypatch.setattr(fid_module, "inception_model", lambda source, device: None)
    monkeypatch.setattr(fid_module, "inception_features", fake_features)
    fid_module._FEATURE_MEMO.clear()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(photo(256, 512, seed=i).mul(255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    cfg = RunConfig(codecs=["jpeg"], dataset=f"folder:{folder}", out=tmp_path / "run", rates=["q10", "q75"],
                    metrics=["psnr", "fid", "kid"], progress=False, bootstrap=40, device="cpu")
    run_benchmark(cfg)
    passes = len(calls)
    summary = json.loads((tmp_path / "run" / "summary" / "jpeg.json").read_text())
    ci = summary["confidence_intervals"]
    assert ci["resamples"] == 40 and ci["level"] == 0.95
    res = summary["results"]
    for key in ("bpp", "psnr-rgb", "fid", "kid"):
        lows, highs = ci["results"][key]["low"], ci["results"][key]["high"]
        assert len(lows) == len(res["rate_label"]) == 2
        for lo, mid, hi in zip(lows, res[key], highs):
            assert lo is not None and lo <= mid + 1e-12 and mid <= hi + 1e-12, key
    assert len(ci["fid_bootstrap_bias"]) == 2
    assert passes == len(calls)  # nothing ran Inception after the run's own passes
    without = tmp_path / "run2"
    cfg.out, cfg.bootstrap = without, 0
    run_benchmark(cfg)
    assert "confidence_intervals" not in json.loads((without / "summary" / "jpeg.json").read_text())
    assert not math.isnan(summary["results"]["fid"][0])
