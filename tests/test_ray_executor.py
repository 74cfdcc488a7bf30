"""The Ray executor against a real local Ray cluster (one per module: startup is slow on 2 cores).

The cluster runs on 127.0.0.1 with 2 CPUs. The worker-death test runs ``ray_worker_hooks.KillingRayExecutor``:
when the marker file exists, the first worker to finish a task SIGKILLs itself before returning its
results, which is exactly the "worker died mid-run" case Ray must retry.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from rdp_bench.bench.executors import EXECUTORS  # noqa: E402
from rdp_bench.bench.runner import RunConfig, run_benchmark  # noqa: E402
from rdp_bench.cli import app  # noqa: E402
from rdp_bench.codecs import codec_availability, list_codecs  # noqa: E402
from rdp_bench.metrics import list_metrics, metric_availability  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ray_worker_hooks import KILL_MARKER_ENV  # noqa: E402

#: columns that legitimately differ between executors (wall-clock times, which device ran it)
VOLATILE = {"encoding_time", "decoding_time", "device"}
KEY = ["codec", "checkpoint", "rate_label", "image_sha256"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray-faults") / "kill-next-task"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", KILL_MARKER_ENV)}
    # workers inherit the environment of the processes ray.init starts
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), saved["PYTHONPATH"]) if p)
    os.environ[KILL_MARKER_ENV] = str(marker)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    try:
        yield marker
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> str:
    """Four small crops of the bundled photos, two shapes: one FID patch each, so FID/KID stay cheap."""
    from PIL import Image

    from rdp_bench.datasets import load_dataset

    folder = tmp_path_factory.mktemp("crops")
    for i, item in enumerate(load_dataset("samples", None, False, 4).items):
        with Image.open(item.path) as im:
            w, h = (256, 256) if i % 2 else (320, 256)
            im.convert("RGB").crop((0, 0, w, h)).save(folder / f"crop{i}.png")
    return f"folder:{folder}"


def _extra_metrics() -> list[str]:
    """FID/KID join the comparison when they are registered and usable here."""
    return [m for m in ("fid", "kid") if m in list_metrics() and metric_availability(m)]


def _extra_codecs() -> list[str]:
    """Codecs cheap enough on CPU to join the comparison, when they exist and can run here (the learned
    ones take minutes on 2 CPU cores; the done-check in the issue note compares them)."""
    return [c for c in ("bpg",) if c in list_codecs() and codec_availability(c)]


def assert_same_results(a: Path, b: Path) -> None:
    ta = pd.read_csv(a / "results.csv").sort_values(KEY).reset_index(drop=True)
    tb = pd.read_csv(b / "results.csv").sort_values(KEY).reset_index(drop=True)
    assert len(ta) == len(tb) > 0
    assert not tb.duplicated(KEY).any()
    assert set(ta.columns) == set(tb.columns)
    for col in sorted(set(ta.columns) - VOLATILE):
        if pd.api.types.is_float_dtype(ta[col]) and col != "bpp":
            # Ray workers run torch with 1 thread, this process with 2: float reductions sum in another
            # order (ulp-level for classical codecs; a float32 decoder may flip a few 8-bit pixel levels)
            pd.testing.assert_series_equal(ta[col], tb[col], check_exact=False, rtol=1e-4, atol=0)
        else:
            pd.testing.assert_series_equal(ta[col], tb[col])  # bytes, bpp, keys: exactly
    for rel in ta["bitstream"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    da, db = (pd.read_csv(p / "dataset_metrics.csv") if (p / "dataset_metrics.csv").stat().st_size > 1 else None
              for p in (a, b))
    if da is not None or db is not None:
        keys = ["codec", "rate_label", "metric"]
        da, db = da.sort_values(keys).reset_index(drop=True), db.sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(da[keys], db[keys])
        for x, y in zip(da["value"], db["value"]):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6)


def _run_both(crops: str, tmp_path: Path, codecs: list[str], metrics: list[str], rates: list[str],
              limit: int | None = None, batch_size: int = 1) -> None:
    """The same sweep locally (RunConfig) and on Ray (through the CLI, joining this process's cluster)."""
    run_benchmark(RunConfig(codecs=codecs, dataset=crops, out=tmp_path / "local", rates=rates, metrics=metrics,
                            limit=limit, batch_size=batch_size, progress=False))
    args = ["run", "--codec", ",".join(codecs), "--dataset", crops, "--rate", ",".join(rates),
            "--metrics", ",".join(metrics), "--batch-size", str(batch_size), "--executor", "ray",
            "--out", str(tmp_path / "ray"), "--quiet"]
    res = CliRunner().invoke(app, args + (["--limit", str(limit)] if limit else []))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ray" / "provenance.json").read_text())["runs"][-1]["executor"] == "ray"
    assert_same_results(tmp_path / "local", tmp_path / "ray")


def test_ray_run_equals_local_run(cluster, crops, tmp_path):
    _run_both(crops, tmp_path, ["jpeg", *_extra_codecs()], ["psnr", "ms-ssim"], ["0", "-1"], batch_size=2)


def test_fid_kid_from_shards_equal_local(cluster, crops, tmp_path):
    metrics = _extra_metrics()
    if not metrics:
        pytest.skip("FID/KID are not available here")
    # batch size 1: each image is its own task, so the partials come from different workers
    _run_both(crops, tmp_path, ["jpeg"], ["psnr", *metrics], ["q20"], limit=2)
    table = pd.read_csv(tmp_path / "ray" / "dataset_metrics.csv")
    assert set(table["metric"]) == set(metrics) and table["value"].notna().all()


def test_killed_worker_is_retried_without_loss_or_duplicates(cluster, crops, tmp_path, monkeypatch):
    monkeypatch.setitem(EXECUTORS, "ray-kill-once", "ray_worker_hooks:KillingRayExecutor")
    cluster.write_text("armed")
    cfg = RunConfig(codecs=["jpeg"], dataset=crops, out=tmp_path / "ray", rates=["q10", "q55"],
                    progress=False, executor="ray-kill-once", executor_options={"max_retries": 2})
    run_benchmark(cfg)
    killed = Path(str(cluster) + ".killed")
    assert not cluster.exists() and killed.exists(), "no worker was killed: the test proved nothing"
    assert len(killed.read_text().splitlines()) == 1
    rows = (tmp_path / "ray" / "rows.jsonl").read_text().splitlines()
    assert len(rows) == 8  # one row per (rate, image): the killed task's results were committed once
    run_benchmark(RunConfig(codecs=["jpeg"], dataset=crops, out=tmp_path / "local",
                            rates=["q10", "q55"], progress=False))
    assert_same_results(tmp_path / "local", tmp_path / "ray")


def test_resume_and_added_metric_reuse_stored_bitstreams(cluster, crops, tmp_path):
    out = tmp_path / "ray"
    base = dict(codecs=["jpeg"], dataset=crops, out=out, rates=["q35"], progress=False, executor="ray")
    run_benchmark(RunConfig(limit=2, metrics=["psnr"], **base))
    first = (out / "rows.jsonl").read_text()
    run_benchmark(RunConfig(limit=3, metrics=["psnr"], **base))
    grown = (out / "rows.jsonl").read_text()
    assert grown.startswith(first) and len(grown.splitlines()) == 3  # only the new image was run
    stored = {p: p.read_bytes() for p in (out / "bitstreams").rglob("*.rdpb")}
    # a new metric: workers get the stored bitstreams from the driver, decode them, never re-encode
    run_benchmark(RunConfig(limit=3, metrics=["psnr", "ms-ssim"], **base))
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 3 and table["ms-ssim"].notna().all()
    assert {p: p.read_bytes() for p in (out / "bitstreams").rglob("*.rdpb")} == stored
    run_benchmark(RunConfig(limit=3, metrics=["psnr", "ms-ssim"], **base, batch_size=2))
    assert len(pd.read_csv(out / "results.csv")) == 3


def test_corrupt_stored_bitstream_fails_clearly_and_keeps_the_rest(cluster, crops, tmp_path):
    from rdp_bench.bench.runner import Sweep

    out = tmp_path / "ray"
    base = dict(codecs=["jpeg"], dataset=crops, out=out, rates=["q35"], progress=False, executor="ray", limit=3)
    run_benchmark(RunConfig(metrics=["psnr"], **base))
    victim = sorted((out / "bitstreams").rglob("*.rdpb"))[0]
    victim.write_bytes(victim.read_bytes()[:-7])
    sweep = Sweep(RunConfig(metrics=["psnr", "ms-ssim"], **base))
    sweep.run()  # the image is recorded (errors.csv; the CLI exits 1), the others are measured
    assert len(sweep.errors) == 1 and "BitstreamError" in sweep.errors[0]["error"]
    assert "delete it to encode again" in sweep.errors[0]["error"] and (out / "errors.csv").is_file()
    table = [r for r in json.loads("[" + ",".join((out / "rows.jsonl").read_text().splitlines()) + "]")
             if "ms-ssim" in r]
    assert len(table) == 2  # the two healthy items were measured and committed
