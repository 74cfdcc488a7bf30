"""--amp bookkeeping and the local executor's prefetching (the Ray executor: test_ray_executor.py)."""

import json

import pytest

from rdp_bench.bench.executors import LocalExecutor
from rdp_bench.bench.runner import RunConfig, Sweep, run_benchmark
from rdp_bench.bench.tasks import InstanceCache, run_task


def test_amp_is_recorded_and_ignored_by_codecs_without_it(tmp_path):
    cfg = RunConfig(codecs=["jpeg"], dataset="samples", out=tmp_path, limit=1, rates=["q20"], amp="bf16",
                    progress=False)
    run_benchmark(cfg)
    run = json.loads((tmp_path / "provenance.json").read_text())["runs"][-1]
    assert run["amp"] == "bf16"
    assert run["codecs"]["jpeg"]["amp"].startswith("ignored")
    # rows are keyed by checkpoint, not precision: a full-precision run must not land in this folder
    with pytest.raises(ValueError, match="another --out"):
        run_benchmark(RunConfig(codecs=["jpeg"], dataset="samples", out=tmp_path, limit=1, rates=["q20"],
                                progress=False))
    with pytest.raises(ValueError, match="--amp"):
        run_benchmark(RunConfig(codecs=["jpeg"], dataset="samples", out=tmp_path / "x", amp="fp8", progress=False))


def test_prefetching_local_executor_matches_plain_run_task(tmp_path):
    sweep = Sweep(RunConfig(codecs=["jpeg"], dataset="samples", out=tmp_path / "a", limit=3, rates=["q20", "q75"],
                            batch_size=2, progress=False))
    tasks = sweep.plan()
    streamed = list(LocalExecutor().run(tasks, tmp_path / "a"))
    assert [t for t, _ in streamed] == tasks  # in order, every task once
    cache = InstanceCache()
    for task, results in streamed:
        plain = run_task(task, tmp_path / "b", cache)
        assert [r.bitstream for r in results] == [r.bitstream for r in plain]
        assert [r.row["psnr"] for r in results] == [r.row["psnr"] for r in plain]
