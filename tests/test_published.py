"""Published anchors: the registry's numbers and provenance, matching rules, and their place in a report."""

import json
import re

import pandas as pd
import pytest

from rdp_bench.published import ENTRIES, FID256, PublishedMismatch, check_match, load_points
from rdp_bench.reports.runs import ReportError

# (bpp, PSNR) of two made-up codecs on the same range as the published CLIC 2020 curves
CURVES = {"bpg": [(0.10, 29.0), (0.20, 31.0), (0.35, 33.0), (0.55, 35.0)],
          "corrdiff": [(0.08, 28.5), (0.15, 30.5), (0.30, 32.8), (0.50, 34.8)]}


def _fake_run(folder, dataset="clic2020-test", images=3, fid=True, protocol=None):
    """A run folder as `rdp-bench run` writes it (rows, FID per rate point, provenance), without running codecs."""
    from rdp_bench.metrics.fid import PROTOCOL

    folder.mkdir(parents=True)
    rows, drows = [], []
    for codec, curve in CURVES.items():
        for rid, (bpp, psnr) in enumerate(curve):
            label = f"q{rid}"
            for i in range(images):
                rows.append({"codec": codec, "checkpoint": "none", "rate_label": label, "rate_id": rid,
                             "dataset": dataset, "image_id": f"img{i}.png", "image_sha256": f"{i:064x}",
                             "height": 512, "width": 768, "bytes": int(bpp * 512 * 768 / 8),
                             "container_bytes": int(bpp * 512 * 768 / 8) + 25, "bpp": bpp,
                             "psnr": psnr + 0.1 * i, "ms-ssim": 1 - 10 ** (-(psnr - 15) / 10)})
            if fid:
                drows.append({"codec": codec, "checkpoint": "none", "rate_label": label, "rate_id": rid,
                              "dataset": dataset, "metric": "fid", "value": 20.0 / (1 + 10 * bpp),
                              "images": images, "fid_patches": 8 * images, "reason": ""})
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    pd.DataFrame(drows).to_csv(folder / "dataset_metrics.csv", index=False)
    metrics = {"psnr": {"available": True}, "ms-ssim": {"available": True}}
    if fid:
        metrics["fid"] = {"available": True, "protocol": protocol or PROTOCOL}
    entry = {"dataset": {"name": dataset, "images": images},
             "codecs": {c: {"rate_points": {f"q{i}": {"checkpoint": "none"} for i in range(4)}} for c in CURVES},
             "metrics": metrics}
    (folder / "provenance.json").write_text(json.dumps({"runs": [entry]}))
    return folder


def test_registry_numbers_are_the_cited_files():
    assert {k: len(load_points(k)) for k in ENTRIES} == {"hific": 9, "msillm": 18, "msillm-nogan": 24,
                                                         "bpg444-compressai": 8, "mbt2018-mean-compressai": 8}
    first = load_points("hific", "clic2020-test")[0]  # data.csv row 0
    assert (first.bpp, first.values["fid"], first.values["kid"], first.values["psnr"]) == \
        (0.12902283, 4.19736528, 0.00108268, 30.86970338)
    assert first.checkpoint == "hific-lo" and "dists" not in first.values
    illm = load_points("msillm", "div2k-valid")[-1]  # results.csv: the one negative KID is kept as published
    assert illm.values["kid"] < 0 and illm.values["dists"] == pytest.approx(0.020193932577967644)
    assert "fid" not in load_points("msillm", "kodak")[0].values
    for e in ENTRIES.values():
        assert re.fullmatch(r"[0-9a-f]{40}", e.source.commit) and e.paper and e.datasets and e.protocol.bpp_detail
        assert set(p.dataset for p in load_points(e.key)) == set(e.datasets)
        has_fid = any("fid" in p.values for p in load_points(e.key))
        assert bool(e.protocol.patches) == has_fid


def test_mismatches_are_refused_naming_both_sides():
    with pytest.raises(PublishedMismatch, match=r"hific \(HiFiC\) has points on clic2020-test, div2k-valid, kodak; "
                                                r"the run is on samples"):
        check_match("hific", "samples", FID256)
    with pytest.raises(PublishedMismatch, match="msillm measured FID/KID on fid256 .*the run on center-crop-299"):
        check_match("msillm", "clic2020-test", "center-crop-299")
    with pytest.raises(PublishedMismatch, match="bpp as mean-per-image; the run as pooled"):
        check_match("hific", "kodak", None, "pooled")
    check_match("hific", "kodak", "center-crop-299")  # no FID/KID published on Kodak: nothing to disagree on
    check_match("bpg444-compressai", "kodak", FID256)


def test_report_draws_and_tables_published_anchors(tmp_path):
    from rdp_bench.reports.report import make_report

    run = _fake_run(tmp_path / "run")
    rep = make_report([run], tmp_path / "rep", anchor="bpg", grid_images=0, sizes=("screen",),
                      published=["hific", "msillm"])
    table = pd.read_csv(tmp_path / "rep" / "bd_tables.csv")
    assert {"HiFiC (published)", "MS-ILLM (published)", "corrdiff"} <= set(table["codec"])
    md = (tmp_path / "rep" / "bd_tables.md").read_text()
    assert "| HiFiC (published) |" in md
    assert "tensorflow/compression models/hific/data.csv @ ccf33ea49fac" in md
    assert "facebookresearch/NeuralCompression projects/illm/results.csv @ 5be7844fbeeb" in md
    assert "the run covers 3 of the 428 clic2020-test images" in md
    points = pd.read_csv(tmp_path / "rep" / "rate_points.csv")
    hific = points[points["codec"] == "HiFiC (published)"].sort_values("bpp")
    assert hific["bpp"].tolist() == [0.12902283, 0.24981422, 0.37383949]
    assert hific["fid"].tolist() == [4.19736528, 2.38322568, 1.66647744]
    # BD numbers against the anchor exist for the published rows (their curves overlap the anchor's)
    rate = rep.tables[0]
    assert rate.cells[("HiFiC (published)", "psnr")].ok and rate.cells[("MS-ILLM (published)", "fid")].ok


def test_published_curves_are_dashed(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rdp_bench.reports.plots import _plot_metric, codec_color
    from rdp_bench.reports.published import add_published
    from rdp_bench.reports.runs import aggregate, load_run

    agg = aggregate([load_run(_fake_run(tmp_path / "run"))])
    add_published(agg, ["msillm"])
    fig, ax = plt.subplots()
    _plot_metric(ax, agg, "psnr", "bpg", False)
    styles = {line.get_label(): (line.get_linestyle(), line.get_color()) for line in ax.get_lines()}
    plt.close(fig)
    assert styles["MS-ILLM (published)"] == ("--", codec_color("msillm"))  # dashed, in MS-ILLM's colour
    assert styles["corrdiff"][0] == "-" and styles["bpg (anchor)"][0] == "--"


def test_report_refuses_published_on_another_dataset(tmp_path):
    from rdp_bench.reports.report import make_report

    run = _fake_run(tmp_path / "run", dataset="samples")
    with pytest.raises(ReportError, match="published hific .*clic2020-test.*the run is on samples"):
        make_report([run], tmp_path / "rep", grid_images=0, sizes=("screen",), published=["hific"])
    with pytest.raises(ReportError, match="unknown published entry 'nope'"):
        make_report([run], tmp_path / "rep", grid_images=0, sizes=("screen",), published=["nope"])
    other = _fake_run(tmp_path / "run2", protocol="patches299-center")
    with pytest.raises(ReportError, match="fid256 .*the run on patches299-center"):
        make_report([other], tmp_path / "rep2", grid_images=0, sizes=("screen",), published=["msillm"])


def test_cli_report_published_and_lists(tmp_path):
    from typer.testing import CliRunner

    from rdp_bench.cli import app

    runner = CliRunner()
    wide = {"COLUMNS": "400"}
    run = _fake_run(tmp_path / "run")
    res = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "rep"), "--grid-images", "0",
                              "--published", "hific,msillm"], env=wide)
    assert res.exit_code == 0, res.output
    assert "| HiFiC (published) |" in res.output and "| MS-ILLM (published) |" in res.output
    samples = _fake_run(tmp_path / "samples", dataset="samples")
    res = runner.invoke(app, ["report", str(samples), "--out", str(tmp_path / "rep2"), "--published", "msillm"], env=wide)
    assert res.exit_code == 2 and "the run is on samples" in res.output and "clic2020-test" in res.output
    res = runner.invoke(app, ["list", "published"], env=wide)
    assert res.exit_code == 0 and all(key in res.output for key in ENTRIES)
    assert "models/hific/data.csv" in res.output
    res = runner.invoke(app, ["list", "datasets", "--data-root", str(tmp_path / "data")], env=wide)
    assert res.exit_code == 0
    line = next(ln for ln in res.output.splitlines() if "clic2020-test" in ln)
    assert "428" in line and "1.61 GB, sha256 pinned" in line and " no " in line


def test_bootstrap_intervals_cover_the_estimate_and_shrink_with_agreement(tmp_path):
    from rdp_bench.reports.report import make_report

    run = _fake_run(tmp_path / "run", images=6)
    rep = make_report([run], tmp_path / "rep", anchor="bpg", grid_images=0, sizes=("screen",), bootstrap=100)
    points = pd.read_csv(tmp_path / "rep" / "rate_points.csv")
    assert (points["psnr_ci_low"] <= points["psnr"]).all() and (points["psnr"] <= points["psnr_ci_high"]).all()
    assert (points["psnr_ci_high"] - points["psnr_ci_low"] > 0).all()  # images differ by up to 0.5 dB
    assert points["fid_ci_low"].isna().all() if "fid_ci_low" in points else True
    cell = rep.tables[0].cells[("corrdiff", "psnr")]
    # every image is shifted by the same amount for both codecs: the paired BD-rate hardly moves
    assert cell.ci is not None and cell.ci[0] <= cell.value <= cell.ci[1] and cell.ci[1] - cell.ci[0] < 1.0
    md = (tmp_path / "rep" / "bd_tables.md").read_text()
    assert "95% bootstrap intervals over the 6 images (100 resamples" in md
    assert re.search(r"\| corrdiff \| \*\*-\d+\.\d\d% \[-\d+\.\d\d, -\d+\.\d\d\]\*\*", md)


def test_cli_bootstrap_flag(tmp_path):
    from typer.testing import CliRunner

    from rdp_bench.cli import app

    run = _fake_run(tmp_path / "run", images=4)
    res = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "rep"), "--grid-images", "0",
                                   "--bootstrap", "50"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "95% bootstrap intervals over the 4 images (50 resamples" in res.output
    assert "psnr_ci_low" in pd.read_csv(tmp_path / "rep" / "rate_points.csv").columns
