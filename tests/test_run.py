import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from rdp_bench.bench.runner import RunConfig, run_benchmark
from rdp_bench.cli import app
from rdp_bench.container import FRAMING_BYTES, Container


def test_cli_run_writes_everything(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--codec", "jpeg", "--dataset", "samples", "--out", str(out),
                                   "--limit", "3", "--rate", "q10,q75", "--quiet"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 6
    assert set(table["rate_label"]) == {"q10", "q75"}
    for _, row in table.iterrows():
        size = (out / row["bitstream"]).stat().st_size
        payload = len(Container.unpack((out / row["bitstream"]).read_bytes()).payload)
        # bpp counts the payload (the field's convention); the file, framing included, is beside it
        assert row["bytes"] == payload == size - FRAMING_BYTES and row["container_bytes"] == size
        assert row["bpp"] == pytest.approx(8 * payload / (row["height"] * row["width"]))
        assert row["bpp_container"] == pytest.approx(8 * size / (row["height"] * row["width"]))
        assert row["psnr"] > 20
    summary = json.loads((out / "summary" / "jpeg.json").read_text())
    assert summary["name"] == "jpeg"
    assert len(summary["results"]["bpp"]) == 2 and len(summary["results"]["psnr-rgb"]) == 2
    assert summary["results"]["bpp"][0] < summary["results"]["bpp"][1]
    assert all(c > b for b, c in zip(summary["results"]["bpp"], summary["results"]["bpp_container"]))
    prov = json.loads((out / "provenance.json").read_text())["runs"][-1]
    for key in ("command", "packages", "git_revision", "device", "seed", "codecs", "bitstream_format"):
        assert key in prov
    assert prov["packages"]["torch"]


def test_cli_summary_shows_this_runs_rate_points_and_notes_older_rows(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--codec", "jpeg", "--dataset", "samples", "--out", str(out), "--limit", "1", "--quiet"]
    assert CliRunner().invoke(app, [*args, "--rate", "q10"]).exit_code == 0
    res = CliRunner().invoke(app, [*args, "--rate", "q75"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "q75" in text and "q10" not in text
    assert "also holds 1 jpeg rows of other rate points or checkpoints" in text
    assert set(pd.read_csv(out / "results.csv")["rate_label"]) == {"q10", "q75"}  # nothing is deleted


def test_rerun_skips_and_never_duplicates(tmp_path):
    cfg = RunConfig(codecs=["jpeg"], dataset="samples", out=tmp_path, limit=2, rates=["q20"], progress=False)
    run_benchmark(cfg)
    first = (tmp_path / "rows.jsonl").read_text()
    run_benchmark(cfg)
    assert (tmp_path / "rows.jsonl").read_text() == first  # nothing redone
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2


def test_batch_size_groups_shapes(tmp_path):
    cfg = RunConfig(codecs=["jpeg"], dataset="samples", out=tmp_path, rates=["q20"], batch_size=4, progress=False)
    table = run_benchmark(cfg).table()
    assert len(table) == 10


def test_kill_9_then_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rdp_bench.cli", "run", "--codec", "jpeg", "--dataset", "samples",
           "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = out / "rows.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if rows.exists() and rows.read_text().count("\n") >= 5:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = rows.read_text().count("\n")
    assert 5 <= done_before < 70, "the run must have been interrupted mid-way"
    # simulate a torn write at the kill point
    with open(rows, "a") as f:
        f.write('{"codec": "jpeg", "trunc')
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 70
    assert not table.duplicated(["codec", "checkpoint", "rate_label", "image_sha256"]).any()
    assert rows.read_text().count("\n") == 70  # only the missing items were redone


def test_list_commands():
    runner = CliRunner()
    for what in ("codecs", "datasets", "metrics"):
        res = runner.invoke(app, ["list", what])
        assert res.exit_code == 0, res.output
    assert "jpeg" in runner.invoke(app, ["list", "codecs"]).output


def test_unknown_codec_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["run", "--codec", "nope", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 2 and "unknown codec" in res.output


def test_stored_bitstream_keeps_its_rate_point_when_checkpoints_are_added(tmp_path):
    """Rate ids come from the codec's weights table: a file added later renumbers nothing, so a stored
    stream is decoded as it is (no re-encode) and still means the same rate point."""
    import json
    import shutil

    from rdp_bench.codecs.hific import WEIGHTS_DIR
    from rdp_bench.container import Container

    weights = tmp_path / "weights"
    weights.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(WEIGHTS_DIR / f"hific_tiny_0p40bpp{suffix}", weights)
    cfg = RunConfig(codecs=["hific"], dataset="samples", out=tmp_path / "run", limit=1, rates=["0.4bpp"],
                    metrics=["psnr"], progress=False, device="cpu", codec_options={"weights_dir": str(weights)})
    first = run_benchmark(cfg).rows()[0]
    path = tmp_path / "run" / first["bitstream"]
    assert Container.unpack(path.read_bytes()).rate_id == first["rate_id"] == 2
    for suffix in (".safetensors", ".json"):  # a lower-rate checkpoint appears
        shutil.copy(WEIGHTS_DIR / f"hific_tiny_0p10bpp{suffix}", weights)
    cfg.metrics = ["psnr", "ms-ssim"]  # a new metric makes the harness reuse the stored bitstream
    rows = run_benchmark(cfg).rows()
    again = [r for r in rows if r["rate_label"] == "0.4bpp"][-1]
    assert again["rate_id"] == 2 and again["psnr"] == first["psnr"] and "ms-ssim" in again
    assert (tmp_path / "run" / "rows.jsonl").read_text().count('"encoding_time"') == 1
    assert json.loads(again["rate_params"])["target_bpp"] == 0.4


def test_a_run_folder_written_in_format_v1_resumes_in_todays_convention(tmp_path):
    """Old folders hold v1 streams (codec name in the header) and rows whose bytes/bpp counted that whole
    container: the rows are converted exactly, and a new metric decodes the stored v1 streams."""
    from conftest import v1_stream

    out = tmp_path / "run"
    cfg = RunConfig(codecs=["jpeg"], dataset="samples", out=out, limit=2, rates=["q10"], metrics=["psnr"],
                    progress=False, device="cpu")
    today = {r["image_id"]: r for r in run_benchmark(cfg).rows()}
    legacy_lines = []
    for row in today.values():  # rewrite the folder as the v1 code left it
        rec = Container.unpack((out / row["bitstream"]).read_bytes())
        old = v1_stream("jpeg", rec.rate_id, rec.height, rec.width, rec.payload)
        (out / row["bitstream"]).write_bytes(old)
        v1_row = {k: v for k, v in row.items() if k not in ("container_bytes", "bpp_container")}
        legacy_lines.append(json.dumps({**v1_row, "bytes": len(old), "bpp": 8 * len(old) / (rec.height * rec.width)}))
    (out / "rows.jsonl").write_text("\n".join(legacy_lines) + "\n")
    cfg.metrics = ["psnr", "ms-ssim"]  # the stored (v1) bitstreams are decoded, not re-encoded
    rows = run_benchmark(cfg).rows()
    assert (out / "rows.jsonl").read_text().count('"encoding_time"') == 2
    for row in rows:
        was = today[row["image_id"]]
        assert row["bytes"] == was["bytes"] and row["bpp"] == was["bpp"] and row["psnr"] == was["psnr"]
        assert row["container_bytes"] == was["bytes"] + 24 + len("jpeg") and "ms-ssim" in row
    table = pd.read_csv(out / "results.csv")
    assert (table["bpp"] == table["bytes"] * 8 / (table["height"] * table["width"])).all()
