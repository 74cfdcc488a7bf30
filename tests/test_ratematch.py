"""Issue 17 item 4: rate matching (``--target-bpp``) on real encoded bytes."""

import json

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from rdp_bench.bench.ratematch import encode_at_target, nearest_rate_id, search
from rdp_bench.bench.runner import RunConfig, run_benchmark
from rdp_bench.codecs import codec_availability, get_codec
from rdp_bench.container import FRAMING_BYTES, Container, rate_of


def _bpp(codec, img, value):
    """bpp (the payload's) of one encode at this knob setting, made here independently of the search."""
    out = codec.encode_payloads([img], codec.rate_control.point(value))[0]
    payload = out[0] if isinstance(out, tuple) else out
    h, w = img.shape[-2:]
    return rate_of(Container(codec.name, 0, h, w, payload).pack()).bpp


@pytest.mark.parametrize("target", [0.35, 0.9])
def test_jpeg_search_finds_the_nearest_quality(photo, target):
    codec = get_codec("jpeg", device="cpu")
    img = photo(64, 96, seed=3)
    every = {q: _bpp(codec, img, q) for q in range(1, 101)}
    value, trials = search(codec, img, target)
    assert abs(every[value] - target) == min(abs(b - target) for b in every.values())
    assert trials.results[value][2] == pytest.approx(every[value])  # the trial's bpp is the real payload's
    assert len(trials.results) <= 9  # a bisection, not a sweep of 100 qualities


def test_decreasing_and_continuous_knobs(photo):
    img = photo(64, 96, seed=4)
    j2k = get_codec("jpeg2000", device="cpu")  # ratio: continuous, log scale, more bits when lower
    value, trials = search(j2k, img, 0.5)
    assert abs(trials.results[value][2] - 0.5) < 0.05 and j2k.rate_control.low <= value <= j2k.rate_control.high
    if codec_availability("bpg"):
        bpg = get_codec("bpg", device="cpu")  # q: integer, more bits when lower
        value, trials = search(bpg, img, 0.6)
        every = {q: _bpp(bpg, img, q) for q in range(20, 45)}
        assert abs(every[value] - 0.6) == min(abs(b - 0.6) for b in every.values())


def test_unreachable_target_gives_the_nearest_end(photo):
    codec = get_codec("jpeg", device="cpu")
    img = photo(64, 96, seed=3)
    low, trials = search(codec, img, 0.001)
    assert low <= 3 and trials.results[low][2] == min(_bpp(codec, img, q) for q in range(1, 6))
    high, trials = search(codec, img, 80.0)
    assert high >= 98 and trials.results[high][2] == max(_bpp(codec, img, q) for q in range(95, 101))


def test_encoded_stream_records_the_setting_and_decodes(photo):
    codec = get_codec("webp", device="cpu")
    img = photo(64, 96, seed=5)
    enc = encode_at_target(codec, img, 0.5)
    params = json.loads(enc.extras["rate_params"])
    assert params["target_bpp"] == 0.5 and 0 <= params["quality"] <= 100
    rec = Container.unpack(enc.bitstream)
    assert rec.rate_id == nearest_rate_id(codec, params["quality"])
    assert codec.decode([enc.bitstream])[0].shape == img.shape
    assert enc.extras["search_encodes"] >= 2


def _folder(tmp_path, photo, n=3):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        arr = photo(64 + 16 * i, 96, seed=10 + i).mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    return folder


def test_run_target_bpp_rows_per_image_at_equal_rate(tmp_path, photo):
    folder = _folder(tmp_path, photo)
    out = tmp_path / "run"
    cfg = RunConfig(codecs=["jpeg", "webp"], dataset=f"folder:{folder}", out=out, metrics=["psnr"],
                    target_bpp=[0.4, 1.0], progress=False, device="cpu")
    run_benchmark(cfg)
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 * 2 * 3 and set(table["rate_label"]) == {"bpp0.4", "bpp1"}
    for _, row in table.iterrows():
        size = (out / row["bitstream"]).stat().st_size
        assert row["container_bytes"] == size and row["bytes"] == size - FRAMING_BYTES
        assert row["bpp"] == pytest.approx(8 * row["bytes"] / (row["height"] * row["width"]))
        assert abs(row["bpp"] - row["target_bpp"]) < 0.25 * row["target_bpp"]
        assert json.loads(row["rate_params"])["target_bpp"] == row["target_bpp"] and row["psnr"] > 20
        assert row["rate_id"] == -1
    # rows are the matched settings, found per image
    jpeg = table[(table["codec"] == "jpeg") & (table["rate_label"] == "bpp1")]
    assert len({json.loads(p)["quality"] for p in jpeg["rate_params"]}) > 1
    summary = json.loads((out / "summary" / "webp.json").read_text())
    assert summary["results"]["rate_label"] == ["bpp0.4", "bpp1"]
    assert summary["results"]["bpp"][0] == pytest.approx(0.4, rel=0.15)
    prov = json.loads((out / "provenance.json").read_text())["runs"][-1]
    assert prov["codecs"]["jpeg"]["rate_points"]["bpp0.4"]["params"] == {"target_bpp": 0.4}

    # a re-run skips everything; another metric reuses the matched streams instead of searching again
    first = (out / "rows.jsonl").read_text()
    run_benchmark(cfg)
    assert (out / "rows.jsonl").read_text() == first
    streams = {p: (out / p).read_bytes() for p in table["bitstream"]}
    cfg.metrics = ["psnr", "ms-ssim"]
    run_benchmark(cfg)
    again = pd.read_csv(out / "results.csv")
    assert "ms-ssim" in again.columns and len(again) == len(table)
    assert all((out / p).read_bytes() == b for p, b in streams.items())
    assert (again.sort_values("bitstream")["rate_params"].to_numpy() ==
            table.sort_values("bitstream")["rate_params"].to_numpy()).all()


def test_cli_target_bpp_and_the_refusal_of_fixed_rate_codecs(tmp_path, photo):
    from rdp_bench.cli import app

    folder = _folder(tmp_path, photo, n=1)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--codec", "jpeg", "--dataset", f"folder:{folder}", "--out", str(out),
                                   "--target-bpp", "0.5", "--metrics", "psnr", "--quiet", "--device", "cpu"],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "bpp0.5" in res.output
    for codec in ("hyperprior", "jpeg,hyperprior"):
        bad = tmp_path / f"bad-{codec}"
        res = CliRunner().invoke(app, ["run", "--codec", codec, "--dataset", f"folder:{folder}", "--out", str(bad),
                                       "--target-bpp", "0.5", "--quiet"], env={"COLUMNS": "300"})
        assert res.exit_code == 2
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: --target-bpp: hyperprior has fixed rate points")
        assert not bad.exists()
    res = CliRunner().invoke(app, ["run", "--codec", "jpeg", "--dataset", f"folder:{folder}", "--out",
                                   str(tmp_path / "x"), "--target-bpp", "0.1,low"])
    assert res.exit_code == 2 and "--target-bpp takes comma-separated bpp values" in res.output
