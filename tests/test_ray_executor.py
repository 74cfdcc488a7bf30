"""The Ray executor against a real local Ray cluster (one per module: startup is slow on 2 cores).

The cluster runs on 127.0.0.1 with 2 CPUs. Every worker installs ``arm_worker_kill`` at start-up
(Ray's worker_process_setup_hook): when the marker file exists, the first worker to finish a task
removes it and SIGKILLs itself before returning its results, which is exactly the "worker died
mid-run" case Ray must retry.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from rdp_bench.bench.runner import RunConfig, run_benchmark  # noqa: E402
from rdp_bench.cli import app  # noqa: E402
from rdp_bench.codecs import codec_availability, list_codecs  # noqa: E402
from rdp_bench.metrics import list_metrics, metric_availability  # noqa: E402

KILL_MARKER_ENV = "RDP_BENCH_TEST_KILL_MARKER"
#: columns that legitimately differ between executors (wall-clock times, which device ran it)
VOLATILE = {"encoding_time", "decoding_time", "device"}
KEY = ["codec", "checkpoint", "rate_label", "image_sha256"]


def arm_worker_kill() -> None:
    """Runs in each Ray worker process at start-up (see the module docstring)."""
    import rdp_bench.bench.ray_executor as ray_executor

    original = ray_executor.run_task

    def run_task_then_maybe_die(task, bitstream_root, cache=None):
        results = original(task, bitstream_root, cache)
        marker = os.environ.get(KILL_MARKER_ENV)
        if marker:
            try:
                os.unlink(marker)  # only one worker can win this
            except FileNotFoundError:
                pass
            else:
                with open(marker + ".killed", "a") as f:
                    f.write(f"{os.getpid()} {task.codec} {task.rate_label} {len(task.items)}\n")
                os.kill(os.getpid(), signal.SIGKILL)
        return results

    ray_executor.run_task = run_task_then_maybe_die


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray-faults") / "kill-next-task"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", KILL_MARKER_ENV)}
    # workers inherit the environment of the processes ray.init starts
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), saved["PYTHONPATH"]) if p)
    os.environ[KILL_MARKER_ENV] = str(marker)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
             runtime_env={"worker_process_setup_hook": "test_ray_executor.arm_worker_kill"})
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
    """Codecs cheap enough on CPU to join the comparison, when they exist and can run here."""
    return [c for c in ("bpg", "cdc") if c in list_codecs() and codec_availability(c)]


def assert_same_results(a: Path, b: Path) -> None:
    ta = pd.read_csv(a / "results.csv").sort_values(KEY).reset_index(drop=True)
    tb = pd.read_csv(b / "results.csv").sort_values(KEY).reset_index(drop=True)
    assert len(ta) == len(tb) > 0
    assert not tb.duplicated(KEY).any()
    assert set(ta.columns) == set(tb.columns)
    for col in sorted(set(ta.columns) - VOLATILE):
        if pd.api.types.is_float_dtype(ta[col]):
            # float64 reductions may sum in another order with another thread count: ulp-level only
            pd.testing.assert_series_equal(ta[col], tb[col], check_exact=False, rtol=1e-9, atol=0)
        else:
            pd.testing.assert_series_equal(ta[col], tb[col])
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


def test_ray_run_equals_local_run(cluster, crops, tmp_path):
    codecs = ["jpeg", *_extra_codecs()]
    metrics = ["psnr", "ms-ssim", *_extra_metrics()]
    local = RunConfig(codecs=codecs, dataset=crops, out=tmp_path / "local", rates=["0", "-1"],
                      metrics=metrics, batch_size=2, progress=False)
    run_benchmark(local)
    # the Ray side goes through the CLI, joining the cluster this process is connected to
    res = CliRunner().invoke(app, ["run", "--codec", ",".join(codecs), "--dataset", crops,
                                   "--rate", "0,-1", "--metrics", ",".join(metrics), "--batch-size", "2",
                                   "--executor", "ray", "--out", str(tmp_path / "ray"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert_same_results(tmp_path / "local", tmp_path / "ray")
    prov = __import__("json").loads((tmp_path / "ray" / "provenance.json").read_text())["runs"][-1]
    assert prov["executor"] == "ray"


def test_killed_worker_is_retried_without_loss_or_duplicates(cluster, crops, tmp_path):
    cluster.write_text("armed")
    cfg = RunConfig(codecs=["jpeg"], dataset=crops, out=tmp_path / "ray", rates=["q10", "q55"],
                    progress=False, executor="ray", executor_options={"max_retries": 2})
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
    from rdp_bench.container import BitstreamError

    out = tmp_path / "ray"
    base = dict(codecs=["jpeg"], dataset=crops, out=out, rates=["q35"], progress=False, executor="ray", limit=3)
    run_benchmark(RunConfig(metrics=["psnr"], **base))
    victim = sorted((out / "bitstreams").rglob("*.rdpb"))[0]
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(BitstreamError):
        run_benchmark(RunConfig(metrics=["psnr", "ms-ssim"], **base))
    table = [r for r in __import__("json").loads("[" + ",".join((out / "rows.jsonl").read_text().splitlines()) + "]")
             if "ms-ssim" in r]
    assert len(table) == 2  # the two healthy items were measured and committed
