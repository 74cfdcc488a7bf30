"""The GPU decode benchmark (rdp_bench/bench/gpu_decode.py) end to end on the CPU, with its tiny settings."""

from __future__ import annotations

import json

import pytest

from rdp_bench.bench.gpu_decode import main
from rdp_bench.codecs import codec_availability

pytestmark = pytest.mark.skipif(not (codec_availability("cdc") and codec_availability("corrdiff")),
                                reason="needs the bundled cdc and corrdiff checkpoints")


@pytest.mark.slow
def test_prepared_streams_decode_identically_on_the_same_device_and_every_row_is_filled(tmp_path):
    prepared = tmp_path / "prepared"
    assert main(["--prepare", str(prepared), "--size", "64x48", "--images", "2"]) is None
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert set(manifest["codecs"]) == {"cdc", "corrdiff"} and manifest["device"].startswith("cpu")
    for codec, entry in manifest["codecs"].items():
        assert len(entry["images"]) == 2
        assert all((prepared / codec / f"{stem}.{ext}").is_file() for stem in entry["images"] for ext in ("rdpb", "png"))

    out = tmp_path / "gpu_decode.json"
    main(["--device", "cpu", "--batches", "1,2", "--size", "64x48", "--precisions", "fp32,bf16", "--warmup", "0",
          "--repeats", "1", "--prepared", str(prepared), "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["settings"]["batches"] == [1, 2] and (result["settings"]["height"], result["settings"]["width"]) == (48, 64)
    assert result["provenance"]["device"].startswith("cpu")
    rows = result["decode"]
    assert {(r["codec"], r["precision"], r["batch"]) for r in rows} == {
        (c, p, b) for c in ("cdc", "corrdiff") for p in ("fp32", "bf16") for b in (1, 2)}
    for r in rows:
        assert r["seconds_per_image"] > 0 and r["images_per_s"] > 0 and len(r["seconds"]) == 1
        assert r["seconds_per_image"] == pytest.approx(r["seconds_per_batch"] / r["batch"])
        assert r["peak_gpu_memory_mib"] is None and r["amp_applied"] is False and r["stream_bytes"] > 0
    # the same device decodes a prepared stream to the very image it decoded when preparing (amp is GPU-only)
    compared = result["cpu_streams"]
    assert {(r["codec"], r["precision"]) for r in compared} == {(c, p) for c in ("cdc", "corrdiff") for p in ("fp32", "bf16")}
    for r in compared:
        assert r["images"] == 2 and r["identical"]
        assert r["max_abs_diff_levels"] == 0 and r["mean_abs_diff_levels"] == 0 and r["psnr_db"] is None


def test_bad_options_are_refused_before_any_work(capsys):
    for argv in (["--batches", "1,0"], ["--precisions", "fp16"], ["--batches", "a"]):
        with pytest.raises(SystemExit):
            main(argv)
    assert "precisions are fp32, bf16" in capsys.readouterr().err
