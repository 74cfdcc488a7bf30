"""Reports: BD numbers, the report folder, the HTML page in a real browser, and the `check` gate."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import bjontegaard
import numpy as np
import pandas as pd
import pytest
import scipy.interpolate
from PIL import Image
from typer.testing import CliRunner

from rdp_bench.cli import app
from rdp_bench.reports.bdrate import bd

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "samples"

# The bjontegaard package's README example (libx265 presets measured with ffmpeg). The README prints
# no numbers, so the expected values are the package 1.3.0's outputs, cross-checked below by an
# independent integration of the same interpolants with scipy/numpy.
RATE_ANCHOR = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR_ANCHOR = [40.037, 38.615, 36.845, 34.851]
RATE_TEST = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR_TEST = [40.121, 38.651, 36.970, 34.987]
EXPECTED_BD_RATE = {"akima": -4.425245, "pchip": -4.417485, "cubic": -4.420463}
EXPECTED_BD_PSNR = {"akima": 0.119409, "pchip": 0.119693, "cubic": 0.120409}


def _independent_bd_rate(method: str) -> float:
    """BD-rate written from the definition: mean log-rate gap over the shared PSNR interval."""
    def fit(q, r):
        q, lr = np.asarray(q)[::-1], np.log10(np.asarray(r))[::-1]
        if method == "cubic":
            poly = np.polyint(np.polyfit(q, lr, 3))
            return lambda a, b: np.polyval(poly, b) - np.polyval(poly, a)
        f = scipy.interpolate.PchipInterpolator(q, lr) if method == "pchip" else scipy.interpolate.Akima1DInterpolator(q, lr)
        return lambda a, b: float(f.integrate(a, b))
    lo, hi = max(min(PSNR_ANCHOR), min(PSNR_TEST)), min(max(PSNR_ANCHOR), max(PSNR_TEST))
    gap = (fit(PSNR_TEST, RATE_TEST)(lo, hi) - fit(PSNR_ANCHOR, RATE_ANCHOR)(lo, hi)) / (hi - lo)
    return (10 ** gap - 1) * 100


@pytest.mark.parametrize("method", ["akima", "pchip", "cubic"])
def test_bd_rate_matches_the_bjontegaard_readme_example(method):
    ours = bd(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST, method=method)
    assert ours.ok and not ours.notes
    assert ours.value == pytest.approx(EXPECTED_BD_RATE[method], abs=1e-5)
    assert ours.value == pytest.approx(bjontegaard.bd_rate(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST, method=method), abs=1e-9)
    assert ours.value == pytest.approx(_independent_bd_rate(method), abs=1e-6)
    quality = bd(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST, method=method, kind="quality")
    assert quality.value == pytest.approx(EXPECTED_BD_PSNR[method], abs=1e-5)


@pytest.mark.parametrize("method", ["akima", "pchip", "cubic"])
def test_identical_curves_give_zero_and_half_rate_gives_minus_fifty(method):
    rate = np.array([0.12, 0.25, 0.5, 1.0, 1.9])
    psnr = np.array([26.0, 28.4, 31.0, 34.2, 37.5])
    assert bd(rate, psnr, rate, psnr, method=method).value == pytest.approx(0.0, abs=1e-9)
    assert bd(rate, psnr, rate, psnr, method=method, kind="quality").value == pytest.approx(0.0, abs=1e-9)
    assert bd(rate, psnr, rate / 2, psnr, method=method).value == pytest.approx(-50.0, abs=1e-6)
    assert bd(rate, psnr, rate * 2, psnr, method=method).value == pytest.approx(100.0, abs=1e-6)


def test_lower_is_better_metrics_are_negated_before_interpolation():
    rate = np.array([0.1, 0.2, 0.4, 0.8])
    lpips = np.array([0.40, 0.28, 0.18, 0.10])  # falls as rate rises
    better = lpips - 0.03  # lower LPIPS at every rate
    res = bd(rate, lpips, rate, better, higher_is_better=False)
    assert res.ok and res.value < -5
    assert bd(rate, lpips, rate, lpips + 0.03, higher_is_better=False).value > 5
    assert bd(rate, lpips, rate * 0.7, lpips, higher_is_better=False).value == pytest.approx(-30.0, abs=1e-6)
    # BD-quality comes back in LPIPS units and sign: 0.03 lower
    assert bd(rate, lpips, rate, better, higher_is_better=False, kind="quality").value == pytest.approx(-0.03, abs=1e-9)
    # un-negated, the package would see quality falling with rate: the sign would be meaningless
    with pytest.raises(Exception):
        bjontegaard.bd_rate(rate, lpips, rate, better, method="akima")


def test_na_reasons_and_dropped_points():
    rate = np.array([0.1, 0.2, 0.4, 0.8])
    psnr = np.array([27.0, 29.0, 31.0, 33.0])
    far = bd(rate, psnr, rate * 40, psnr + 20)
    assert not far.ok and "do not overlap" in far.reason
    cubic = bd(rate[:3], psnr[:3], rate[:3], psnr[:3], method="cubic")
    assert not cubic.ok and "cubic needs 4" in cubic.reason
    bumpy = bd(rate, psnr, rate, np.array([27.0, 29.0, 28.5, 33.0]))  # third point worse than the second
    assert bumpy.ok and bumpy.dropped == 1
    low = bd(rate, psnr, rate, psnr - 3.0)
    assert low.ok and low.notes  # overlap under 75%: the package's warning is kept as a note


# ------------------------------------------------------------------------------------------
# real runs
# ------------------------------------------------------------------------------------------

def _run(args: list[str]):
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def jpeg_runs(tmp_path_factory):
    """A real jpeg run on 2 sample images at 3 rate points, and a copy standing in for a second codec run."""
    base = tmp_path_factory.mktemp("reports")
    run_a = base / "run_a"
    res = _run(["run", "--codec", "jpeg", "--dataset", "samples", "--limit", "2", "--rate", "q10,q35,q75",
                "--metrics", "psnr,ms-ssim", "--device", "cpu", "--out", str(run_a), "--quiet"])
    assert res.exit_code == 0, res.output
    run_b = base / "run_b"
    shutil.copytree(run_a, run_b)
    return run_a, run_b


@pytest.fixture(scope="module")
def report_dir(jpeg_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    res = _run(["report", str(jpeg_runs[0]), str(jpeg_runs[1]), "--anchor", "jpeg", "--out", str(out), "--latex",
                "--method", "pchip", "--grid-images", "2"])
    assert res.exit_code == 0, res.output
    return out


def test_report_writes_tables_plots_and_html(report_dir):
    md = (report_dir / "bd_tables.md").read_text()
    assert "interpolation: pchip" in md and "anchor: jpeg" in md
    # an identical run is 0 against itself, and 0 is not better than the anchor: not bold
    assert "| jpeg (run_b) | +0.00% | +0.00% |" in md
    assert "# BD tables: samples, 2 images" in md and "run_a" not in md.splitlines()[0]
    table = pd.read_csv(report_dir / "bd_tables.csv")
    assert set(table["kind"]) == {"bd-rate", "bd-quality"} and set(table["method"]) == {"pchip"}
    assert np.allclose(table["value"], 0.0, atol=1e-9)
    assert r"\begin{tabular}" in (report_dir / "bd_rate.tex").read_text()
    points = pd.read_csv(report_dir / "rate_points.csv")
    assert len(points) == 6 and (points["images"] == 2).all()
    for stem in ("rd_psnr", "rd_ms-ssim", "rd_overview"):
        for size in ("paper", "screen"):
            png = report_dir / "figures" / f"{stem}_{size}.png"
            assert png.stat().st_size > 5000 and (png.with_suffix(".svg")).stat().st_size > 5000
    with Image.open(report_dir / "figures" / "rd_psnr_paper.png") as im:
        assert im.size[0] >= 3.0 * 300  # a paper column at 300 dpi
    html = (report_dir / "report.html").read_text()
    assert "src='data:image/png;base64," in html and "src=\"http" not in html and "src='http" not in html
    assert html.count("<img") == 1 + 2 * 3  # overview plot (no FID: no D-P plane) + 2 images x (original + 2 runs)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(page: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", *extra, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (.ci/run installs Debian's chromium)")
def test_html_report_renders_in_headless_chromium(report_dir, tmp_path):
    # the console check must be able to fail: a page with an error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('broken'); undefinedFunction();</script></body></html>")
    assert _console_messages(_headless(bad, "--dump-dom").stderr)

    page = report_dir / "report.html"
    dom = _headless(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == []
    images = int(re.search(r'data-images="(\d+)"', dom.stdout).group(1))
    broken = int(re.search(r'data-images-broken="(\d+)"', dom.stdout).group(1))
    assert images == 7 and broken == 0
    assert re.search(r'id="iplot"[^>]*data-curves="2"', dom.stdout)  # the interactive plot drew both runs
    # the plot responds to a codec toggle (the page's #selftest unticks the first codec)
    toggled = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                              page.as_uri() + "#selftest"], capture_output=True, text=True, timeout=90)
    # the DOM dump escapes '>' in attribute values
    assert re.search(r'data-toggle="2-(>|&gt;)1"', toggled.stdout), toggled.stdout[-500:]
    # and a click on a crop opens it zoomed, with the original under the A/B wipe
    assert 'data-lightbox="open"' in toggled.stdout and re.search(r'<div id="lightbox">.*?<img[^>]+class="a"', toggled.stdout, re.S)
    shot = tmp_path / "report.png"
    res = _headless(page, f"--screenshot={shot}", "--window-size=1200,2400")
    assert res.returncode == 0 and shot.exists()
    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        assert np.asarray(im.convert("L")).std() > 10  # not a blank page


# ------------------------------------------------------------------------------------------
# the regression gate
# ------------------------------------------------------------------------------------------

def test_check_passes_on_an_identical_run(jpeg_runs):
    res = _run(["check", str(jpeg_runs[1]), "--baseline", str(jpeg_runs[0])])
    assert res.exit_code == 0, res.output
    assert "passed" in res.output and "FAIL" not in res.output


def _inject(run: Path, **changes) -> None:
    table = pd.read_csv(run / "results.csv")
    at = table["rate_label"] == "q35"
    if "bpp_factor" in changes:
        table.loc[at, "bytes"] = (table.loc[at, "bytes"] * changes["bpp_factor"]).round().astype(int)
        table.loc[at, "bpp"] = table.loc[at, "bpp"] * changes["bpp_factor"]
    if "psnr_delta" in changes:
        table.loc[at, "psnr"] = table.loc[at, "psnr"] + changes["psnr_delta"]
    table.to_csv(run / "results.csv", index=False)


@pytest.mark.parametrize("change,check_name", [({"bpp_factor": 1.05}, "bpp"), ({"psnr_delta": -0.3}, "PSNR")])
def test_check_fails_on_an_injected_regression(jpeg_runs, tmp_path, change, check_name):
    new = tmp_path / "new"
    shutil.copytree(jpeg_runs[0], new)
    _inject(new, **change)
    res = _run(["check", str(new), "--baseline", str(jpeg_runs[0]), "--markdown", str(tmp_path / "summary.md")])
    assert res.exit_code == 1, res.output
    assert re.search(rf"│ jpeg\s+│ q35\s+│ {check_name}\s.*FAIL", res.output), res.output
    assert re.search(r"BD-rate \(PSNR\).*FAIL", res.output)
    assert "**FAILED**" in (tmp_path / "summary.md").read_text()
    # within a looser tolerance the same run passes
    loose = _run(["check", str(new), "--baseline", str(jpeg_runs[0]), "--max-bpp-rise", "10", "--max-psnr-drop", "1",
                  "--max-bdrate-worsening", "20"])
    assert loose.exit_code == 0, loose.output


def test_check_reports_a_changed_checkpoint(jpeg_runs, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(jpeg_runs[0], base)
    prov = json.loads((base / "provenance.json").read_text())
    prov["runs"][-1]["codecs"]["jpeg"]["rate_points"]["q10"]["checkpoint"] = "ab" * 32
    (base / "provenance.json").write_text(json.dumps(prov))
    res = _run(["check", str(jpeg_runs[0]), "--baseline", str(base)])
    assert res.exit_code == 0 and "checkpoint sha256" in res.output and "changed" in res.output, res.output
    strict = _run(["check", str(jpeg_runs[0]), "--baseline", str(base), "--fail-on-checkpoint-change"])
    assert strict.exit_code == 1


def test_ci_regression_check_against_the_committed_reference(tmp_path):
    """The project's own gate: cheap codecs on 2 sample images, checked against results/reference/samples."""
    if not (REFERENCE / "results.csv").exists():
        pytest.fail("results/reference/samples is missing: run scripts/make_reference.sh")
    from rdp_bench.codecs import codec_availability, get_codec

    reference = pd.read_csv(REFERENCE / "results.csv")
    codecs = [c for c in ("jpeg", "bpg") if c in set(reference["codec"]) and codec_availability(c)]
    assert "jpeg" in codecs
    rates = []
    for c in codecs:
        labels = [p.label for p in get_codec(c, device="cpu").rate_points()]
        rates += [f"{c}:{labels[1]}", f"{c}:{labels[-2]}"]
    out = tmp_path / "ci_run"
    res = _run(["run", "--codec", ",".join(codecs), "--dataset", "samples", "--limit", "2", "--rate", ",".join(rates),
                "--metrics", "psnr,ms-ssim", "--device", "cpu", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    res = _run(["check", str(out), "--baseline", str(REFERENCE), "--codec", ",".join(codecs)])
    assert res.exit_code == 0, res.output
    assert "2 images" in res.output and "FAIL" not in res.output


def _synthetic_run(path: Path) -> Path:
    """A run folder with hand-made numbers (2 codecs, 3 images, 4 rate points, LPIPS and FID) for the code
    paths a jpeg-only run cannot reach; `beta` spends 20% fewer bits for the same quality."""
    rows, drows = [], []
    for codec, factor in (("alpha", 1.0), ("beta", 0.8)):
        for rid, (bpp, psnr, lpips, fid) in enumerate([(0.1, 26.0, 0.40, 80.0), (0.2, 28.5, 0.28, 50.0),
                                                       (0.4, 31.0, 0.18, 30.0), (0.8, 34.0, 0.10, 15.0)]):
            for i in range(3):
                row = {"codec": codec, "checkpoint": f"{codec}-ckpt", "rate_label": f"r{rid}", "rate_id": rid,
                       "dataset": "synthetic", "image_id": f"img{i}.png", "image_sha256": f"sha{i}", "height": 100,
                       "width": 100, "bpp": bpp * factor * (1 + 0.01 * i), "psnr": psnr + 0.1 * i, "ms-ssim": 0.9,
                       "lpips": lpips if codec == "beta" else math.nan}
                row["bytes"] = int(row["bpp"] * 100 * 100 / 8)
                row["container_bytes"] = row["bytes"] + 25  # a current row (format v2): not converted from v1
                if codec == "alpha":
                    row["unavailable"] = json.dumps({"lpips": "weights missing (test)"})
                rows.append(row)
            drows.append({"codec": codec, "checkpoint": f"{codec}-ckpt", "rate_label": f"r{rid}", "metric": "fid",
                          "value": fid, "reason": "", "images": 3, "dataset_fingerprint": "x"})
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    pd.DataFrame(drows).to_csv(path / "dataset_metrics.csv", index=False)
    (path / "provenance.json").write_text(json.dumps({"runs": []}))
    return path


def test_report_metric_directions_na_reasons_and_dp_plane(tmp_path):
    from rdp_bench.reports.report import make_report

    run = _synthetic_run(tmp_path / "synthetic")
    rep = make_report([run], tmp_path / "report", anchor="alpha", grid_images=0, sizes=("screen",))
    rate = {t.kind: t for t in rep.tables}["rate"]
    assert rate.cells[("beta", "psnr")].value == pytest.approx(-20.0, abs=0.5)
    assert rate.cells[("beta", "fid")].value == pytest.approx(-20.0, abs=1e-6)  # lower FID, negated correctly
    assert not rate.cells[("beta", "lpips")].ok and "weights missing (test)" in rate.cells[("beta", "lpips")].reason
    md = (tmp_path / "report" / "bd_tables.md").read_text()
    assert "n/a (missing for alpha)" in md and "**-20.00%**" in md
    assert "no LPIPS for alpha; needs torchvision's alexnet-owt-7be5be79.pth" in md  # what to do, under the table
    quality = {t.kind: t for t in rep.tables}["quality"]
    assert quality.cells[("beta", "fid")].value < 0 and quality.cells[("beta", "psnr")].value > 0
    assert (tmp_path / "report" / "figures" / "dp_plane_screen.png").stat().st_size > 5000
    assert "LPIPS ↓" in (tmp_path / "report" / "figures" / "rd_lpips_screen.svg").read_text()


def _bd_run(path: Path, codecs: dict[str, tuple[float, float]], images: int = 2, dists_reason: str | None = None) -> Path:
    """A run folder whose codecs are the same PSNR curve scaled in rate by ``factor`` and shifted by ``dq`` dB."""
    rows = []
    for codec, (factor, dq) in codecs.items():
        for rid, (bpp, psnr) in enumerate([(0.1, 26.0), (0.2, 28.5), (0.4, 31.0), (0.8, 34.0)]):
            for i in range(images):
                row = {"codec": codec, "checkpoint": f"{codec}-ckpt", "rate_label": f"r{rid}", "rate_id": rid,
                       "dataset": "synthetic", "image_id": f"img{i}.png", "image_sha256": f"sha{i}", "height": 100,
                       "width": 100, "bpp": bpp * factor, "psnr": psnr + dq, "dists": math.nan,
                       "unavailable": json.dumps({"dists": dists_reason or "not computed"})}
                row["bytes"] = int(row["bpp"] * 100 * 100 / 8)
                row["container_bytes"] = row["bytes"] + 25  # a current row (format v2): not converted from v1
                rows.append(row)
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    (path / "provenance.json").write_text(json.dumps({"runs": []}))
    return path


def test_bd_table_reads_like_a_review_table(tmp_path):
    """Columns nobody has go, best is only ever better than the anchor, weak overlaps are bracketed, never bold."""
    from rdp_bench.reports.report import make_report

    leak = ("vgg16-397923af.pth not found: put vgg16-397923af.pth (from https://download.pytorch.org/models/"
            "vgg16-397923af.pth) in /home/someone/.cache/torch/hub/checkpoints, or pass --weights-dir DIR (download "
            "failed (could not download https://x/vgg16.pth: <urlopen error [Errno -2] Name or service not known>))")
    run = _bd_run(tmp_path / "run", {"anchor": (1.0, 0.0), "good": (0.8, 0.0), "shifted": (0.5, 4.0),
                                     "worse": (1.5, 0.0)}, dists_reason=leak)
    rep = make_report([run], tmp_path / "rep", anchor="anchor", grid_images=0, sizes=("screen",), latex=True)
    rate = {t.kind: t for t in rep.tables}["rate"]
    assert rate.metrics == ["psnr"] and "dists" in rate.hidden  # DISTS: no codec has it
    assert rate.best["psnr"] == "good"
    shifted = rate.cells[("shifted", "psnr")]
    assert shifted.ok and shifted.low_overlap and shifted.value < rate.cells[("good", "psnr")].value  # "better", but weak
    md = (tmp_path / "rep" / "bd_tables.md").read_text()
    assert "| good | **-20.00%** |" in md
    assert re.search(r"\| shifted \| \(-\d+\.\d\d%\) \| PSNR \d+% \|", md), md
    assert "| worse | +50.00% |" in md
    assert "DISTS" not in md.split("\n\n")[2]  # no DISTS column header in the first table
    assert "Not shown, no codec has them: DISTS (needs torchvision's vgg16-397923af.pth" in md
    assert "/home/someone" not in md and "urlopen" not in md and "Errno" not in md
    assert max(len(line) for line in md.splitlines()) < 300
    assert "# BD tables: synthetic, 2 images" in md
    # every title names the dataset and image count; the quote of a warning does not swallow it
    assert md.count("synthetic, 2 images") == 3
    tex = (tmp_path / "rep" / "bd_rate.tex").read_text()
    assert r"\textbf{-20.00\%}" in tex and r"(-" in tex and "textbf{(" not in tex and "/home/someone" not in tex
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<td class='best'" in html and "class='weak'" in html and "/home/someone" not in html
    frame = pd.read_csv(tmp_path / "rep" / "bd_tables.csv")
    assert frame.loc[(frame["codec"] == "shifted") & (frame["kind"] == "bd-rate"), "low_overlap"].item()


def test_nothing_is_bold_when_every_codec_is_worse_than_the_anchor(tmp_path):
    from rdp_bench.reports.report import make_report

    run = _bd_run(tmp_path / "run", {"anchor": (1.0, 0.0), "worse": (1.5, 0.0), "much-worse": (2.0, 0.0)})
    rep = make_report([run], tmp_path / "rep", anchor="anchor", grid_images=0, sizes=("screen",))
    assert all(best is None for t in rep.tables for best in t.best.values())
    md = (tmp_path / "rep" / "bd_tables.md").read_text()
    assert "**" not in "\n".join(line for line in md.splitlines() if line.startswith("|"))
    assert "nothing is bold" in md


def test_markdown_quote_does_not_swallow_the_next_title(tmp_path):
    from rdp_bench.reports.report import make_report

    run = _bd_run(tmp_path / "run", {"anchor": (1.0, 0.0), "good": (0.8, 0.0)}, images=3)
    table = pd.read_csv(run / "results.csv")
    table = table[~((table["codec"] == "good") & (table["image_id"] == "img2.png"))]  # images differ: a warning
    table.to_csv(run / "results.csv", index=False)
    rep = make_report([run], tmp_path / "rep", anchor="anchor", grid_images=0, sizes=("screen",))
    lines = rep.markdown.splitlines()
    quotes = [i for i, line in enumerate(lines) if line.startswith(">")]
    assert quotes and lines[quotes[-1] + 1] == ""  # a blank line ends the quote before the table title
    assert "synthetic, 2 images" in lines[0]


def test_clean_reason_keeps_urls_and_drops_machine_paths():
    from rdp_bench.reports.bdrate import clean_reason

    text = clean_reason("x.pth not found: put x.pth (from https://a.org/m/x.pth) in /root/.cache/torch/hub/checkpoints "
                        "(download failed (could not download https://a.org/m/x.pth: <urlopen error>))")
    assert text == "x.pth not found: put x.pth (from https://a.org/m/x.pth) in …/checkpoints"


# ------------------------------------------------------------------------------------------
# the gate's output: failures first, a line per codec, details behind a flag
# ------------------------------------------------------------------------------------------

def test_check_puts_failures_first_and_names_them_last(jpeg_runs, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(jpeg_runs[0], new)
    _inject(new, psnr_delta=-0.3)
    res = _run(["check", str(new), "--baseline", str(jpeg_runs[0]), "--markdown", str(tmp_path / "s.md")])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    first_fail = next(i for i, line in enumerate(lines) if "FAIL" in line)
    codec_line = next(i for i, line in enumerate(lines) if line.startswith("jpeg: FAIL"))
    assert first_fail < codec_line  # the failures table comes before the per-codec summary
    assert "worst: PSNR [dB] at q35 -0.3000 (drop ≤ 0.05 dB), over by 0.25 dB" in lines[codec_line]
    assert lines[-1].startswith("FAILED: 2 regression(s): jpeg PSNR [dB] at q35 -0.3000") and "BD-rate (PSNR)" in lines[-1]
    assert res.output.count(" ok ") == 0 and "every check: --details" in res.output  # no wall of ok rows
    detailed = _run(["check", str(new), "--baseline", str(jpeg_runs[0]), "--details"])
    assert detailed.output.count("│ ok ") >= 5 and "every check" in detailed.output
    md = (tmp_path / "s.md").read_text()
    assert md.index("**Failures**") < md.index("- jpeg: FAIL") < md.index("<details>")
    assert md.rstrip().splitlines()[-1].startswith("FAILED: 2 regression(s)")


def test_check_says_which_baseline_images_the_new_run_lacks(jpeg_runs, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(jpeg_runs[0], new)
    table = pd.read_csv(new / "results.csv")
    dropped = sorted(table["image_id"].unique())[-1]
    table[table["image_id"] != dropped].to_csv(new / "results.csv", index=False)
    res = _run(["check", str(new), "--baseline", str(jpeg_runs[0])])
    assert res.exit_code == 0, res.output
    assert "covers 1 of the baseline's 2 images" in res.output and dropped in res.output


def _synthetic_pair(tmp_path: Path) -> tuple[Path, Path]:
    base = _synthetic_run(tmp_path / "base")
    new = tmp_path / "new"
    shutil.copytree(base, new)
    return base, new


def test_check_compares_fid_and_kid_when_both_runs_have_them(tmp_path):
    base, new = _synthetic_pair(tmp_path)
    same = _run(["check", str(new), "--baseline", str(base), "--details"])
    assert same.exit_code == 0 and re.search(r"│ alpha\s+│ r1\s+│ FID\s.*ok", same.output), same.output
    d = pd.read_csv(new / "dataset_metrics.csv")
    d.loc[(d["codec"] == "beta") & (d["rate_label"] == "r2"), "value"] += 5.0  # FID 5 worse at one rate point
    d.to_csv(new / "dataset_metrics.csv", index=False)
    res = _run(["check", str(new), "--baseline", str(base)])
    assert res.exit_code == 1 and re.search(r"│ beta\s+│ r2\s+│ FID\s.*FAIL", res.output), res.output
    # computed on other image sets, they are not compared, and the gate says so
    d["images"] = 2
    d.to_csv(new / "dataset_metrics.csv", index=False)
    other = _run(["check", str(new), "--baseline", str(base)])
    assert "FID: not compared, the runs computed it on different image sets (baseline: 3 images, new run: 2)" in other.output
    # a baseline metric the new run did not measure is named
    (new / "dataset_metrics.csv").write_text("")
    lacking = _run(["check", str(new), "--baseline", str(base)])
    assert "FID: in the baseline, not measured in the new run" in lacking.output, lacking.output


def _noisy_copy(src: Path, dst: Path, psnr_noise: list[float]) -> Path:
    """A re-run of ``src`` whose PSNR differs per rate point by ``psnr_noise`` dB (float noise of a decoder)."""
    shutil.copytree(src, dst)
    t = pd.read_csv(dst / "results.csv")
    for rid, noise in enumerate(psnr_noise):
        t.loc[t["rate_id"] == rid, "psnr"] += noise
    t.to_csv(dst / "results.csv", index=False)
    return dst


def test_check_tolerance_from_a_measured_spread(tmp_path):
    base = _synthetic_run(tmp_path / "base")
    rerun = _noisy_copy(base, tmp_path / "rerun", [0.08, -0.1, 0.06, -0.09])  # same weights, another machine
    unchanged = _noisy_copy(base, tmp_path / "unchanged", [-0.1, 0.1, -0.1, 0.05])  # this machine, same weights
    plain = _run(["check", str(unchanged), "--baseline", str(base), "--codec", "alpha"])
    assert plain.exit_code == 1, plain.output  # fixed 0.05 dB: float noise fails the gate
    spread = _run(["check", str(unchanged), "--baseline", str(base), "--codec", "alpha", "--spread", str(rerun),
                   "--details"])
    assert spread.exit_code == 0, spread.output
    assert "measured spread" in spread.output
    regressed = _noisy_copy(base, tmp_path / "regressed", [-0.6, -0.5, -0.7, -0.6])  # a real regression
    res = _run(["check", str(regressed), "--baseline", str(base), "--codec", "alpha", "--spread", str(rerun)])
    assert res.exit_code == 1 and "PSNR" in res.output.splitlines()[-1], res.output


# ------------------------------------------------------------------------------------------
# the first ten minutes
# ------------------------------------------------------------------------------------------

def test_run_prints_a_bpp_sorted_table_in_db_and_the_next_command(tmp_path):
    out = tmp_path / "first"
    res = _run(["run", "--codec", "jpeg", "--dataset", "samples", "--limit", "1", "--rate", "q75,q10,q35",
                "--device", "cpu", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("│ jpeg")]
    assert [r.split("│")[2].strip() for r in rows] == ["q10", "q35", "q75"]  # by bpp, not by label
    assert "MS-SSIM [dB]" in res.output
    msssim_db = float(rows[0].split("│")[-2])
    linear = pd.read_csv(out / "results.csv").sort_values("bpp")["ms-ssim"].iloc[0]
    assert msssim_db == pytest.approx(-10 * math.log10(1 - linear), abs=1e-3)
    lines = res.output.strip().splitlines()
    step = next(line for line in lines if line.startswith("next: "))
    assert f"rdp-bench report {out} --out {out / 'report'}" in step
    # the command it prints works on that run as it is (jpeg only: no bpg to anchor on)
    report = _run(step.removeprefix("next: ").split()[1:])
    assert report.exit_code == 0, report.output
    assert "anchor: jpeg (bpg is not in the run(s))" in report.output
    assert (out / "report" / "report.html").exists()


def test_report_defaults_to_bpg_and_says_when_it_picks_another(tmp_path):
    from rdp_bench.reports.report import pick_anchor

    assert pick_anchor(["jpeg", "bpg", "hific"]) == ("bpg", "")
    anchor, note = pick_anchor(["hific", "jpeg"])
    assert anchor == "hific" and "bpg is not in the run(s)" in note and "--anchor jpeg" in note
    assert pick_anchor(["hific", "jpeg"], "jpeg") == ("jpeg", "")
    from rdp_bench.reports.runs import ReportError

    with pytest.raises(ReportError, match="codecs present: hific, jpeg"):
        pick_anchor(["hific", "jpeg"], "bpg")


def test_list_codecs_never_touches_the_network_and_never_truncates(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("list codecs opened a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("RDP_BENCH_OFFLINE", raising=False)
    from rdp_bench.codecs import cdc

    monkeypatch.setattr(cdc, "_HUB_PROBES", {})
    res = CliRunner().invoke(app, ["list", "codecs"], catch_exceptions=False, terminal_width=100)
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    reasons = [line for line in res.output.splitlines() if line.startswith("[")]
    official = next(line for line in reasons if "cdc-official:" in line)
    assert "not downloaded yet" in official and "https://huggingface.co/rhyang/CDC_params/resolve/main/x_param/" in official


def test_no_library_warnings_on_import():
    code = "import rdp_bench.cli, rdp_bench.codecs.hific, rdp_bench.reports.report"
    res = subprocess.run([__import__("sys").executable, "-W", "default", "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr


# ------------------------------------------------------------------------------------------
# figures with context
# ------------------------------------------------------------------------------------------

def test_figures_name_dataset_images_patches_and_draw_dropped_points_hollow(tmp_path):
    import matplotlib.pyplot as plt

    from rdp_bench.reports.plots import DROPPED_NOTE, _plot_metric, plot_metrics
    from rdp_bench.reports.runs import aggregate, load_run

    run = _synthetic_run(tmp_path / "synthetic")
    t = pd.read_csv(run / "results.csv")
    t.loc[(t["codec"] == "beta") & (t["rate_label"] == "r2"), "psnr"] = 20.0  # more bits, worse: dropped by BD
    t.to_csv(run / "results.csv", index=False)
    d = pd.read_csv(run / "dataset_metrics.csv")
    d["fid_patches"] = 12
    d.to_csv(run / "dataset_metrics.csv", index=False)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        agg = aggregate([load_run(run)])
    figures = plot_metrics(agg, tmp_path / "figs", anchor="alpha", sizes=("screen",))
    psnr_svg = (tmp_path / "figs" / "rd_psnr_screen.svg").read_text()
    assert "synthetic, 3 images" in psnr_svg and DROPPED_NOTE in psnr_svg
    fid_svg = (tmp_path / "figs" / "rd_fid_screen.svg").read_text()
    assert "synthetic, 3 images, 12 patches" in fid_svg and DROPPED_NOTE not in fid_svg  # FID is monotone
    assert "synthetic, 3 images" in (tmp_path / "figs" / "rd_overview_screen.svg").read_text()
    assert "dp_plane_screen" in figures
    fig, ax = plt.subplots()
    assert _plot_metric(ax, agg, "psnr", "alpha", False)
    hollow = [line for line in ax.lines if line.get_linestyle() == "None" and line.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == pytest.approx([0.4 * 0.8 * 1.01])  # beta's r2
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# the HTML report
# ------------------------------------------------------------------------------------------

def test_html_report_serves_a_study(report_dir):
    page = (report_dir / "report.html").read_text()
    # everything bundled: nothing fetched (the SVG namespace URI in the script is a name, not a request)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//|<script[^>]+src=|<link[^>]+stylesheet|url\(['\"]?https?:|@import", page)
    assert "<table class='sortable' id='per-image'>" in page and page.count("<tr>") > 12  # 2 images x 2 runs x 3
    assert "href='figures/rd_psnr_screen.svg'" in page and "href='figures/rd_overview_paper.png'" in page
    assert "@media print" in page and "break-inside:avoid" in page
    assert "id='plot-data'" in page and "id='iplot'" in page
    data = json.loads(re.search(r"<script type='application/json' id='plot-data'>(.*?)</script>", page, re.S).group(1))
    assert {m["name"] for m in data["metrics"]} == {"psnr", "ms-ssim"} and len(data["codecs"]) == 2
    crops = re.findall(r"<img alt='jpeg[^']*' src='data:image/png;base64,[^']+' width='(\d+)' height='(\d+)' data-alt=", page)
    assert crops and all(w == h and int(w) <= 256 for w, h in crops)  # native size, A/B against the original
    # A/B names the original's element (one copy of it per image, not one per crop)
    assert set(re.findall(r"data-alt='([^']+)'", page)) == {"orig-0", "orig-1"} and page.count("id='orig-") == 2
    assert "`" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)  # backticks became <code>


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_html_report_script_parses(report_dir, tmp_path):
    page = (report_dir / "report.html").read_text()
    script = re.findall(r"<script>(.*?)</script>", page, re.S)[-1]
    (tmp_path / "page.js").write_text(script)
    res = subprocess.run(["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_visual_grid_is_at_equal_rate_per_image(jpeg_runs):
    from rdp_bench.reports.html import build_grid
    from rdp_bench.reports.runs import aggregate, load_run

    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        agg = aggregate([load_run(jpeg_runs[0])])
    target = 0.4
    _, grid, _ = build_grid(agg, n_images=2, target_bpp=target)
    assert len(grid) == 2
    for image_id, original, cells in grid:
        rows = agg.rows[(agg.rows["image_id"] == image_id) & (agg.rows["codec"] == "jpeg")]
        nearest = rows.iloc[int(np.argmin(np.abs(np.log(rows["bpp"]) - math.log(target))))]
        (cell,) = cells
        assert cell.rate_label == nearest["rate_label"] and cell.bpp == pytest.approx(nearest["bpp"])
        assert cell.crop is not None and original is not None and cell.crop.shape == original.shape
        assert cell.crop.shape[0] == min(256, *rows[["height", "width"]].min())


def test_figures_draw_error_bars_when_the_points_carry_intervals(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from rdp_bench.reports.plots import _plot_metric
    from rdp_bench.reports.runs import aggregate, load_run

    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        agg = aggregate([load_run(_synthetic_run(tmp_path / "synthetic"))])
    fig, ax = plt.subplots()
    _plot_metric(ax, agg, "psnr", "alpha", False)
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]  # no intervals, no bars
    plt.close(fig)
    agg.points["psnr_ci_low"], agg.points["psnr_ci_high"] = agg.points["psnr"] - 0.2, agg.points["psnr"] + 0.3
    fig, ax = plt.subplots()
    _plot_metric(ax, agg, "psnr", "alpha", False)
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(agg.codecs)
    (segments,) = bars[0].lines[2]
    spans = [seg[1][1] - seg[0][1] for seg in segments.get_segments()]
    assert spans == pytest.approx([0.5] * len(spans))
    plt.close(fig)
