"""The bookkeeping every training job shares (``rdp_bench/training/job.py``), apart from any model."""

from __future__ import annotations

import math

import pytest

from rdp_bench.training.job import CsvLog, StepRecorder


def test_step_recorder_writes_windowed_means_and_logs_every_nth_row(tmp_path):
    log_lines: list[str] = []
    recorder = StepRecorder(CsvLog(tmp_path / "train.csv"), "job", log_lines.append, row_every=2, print_every=4)
    for step in range(1, 5):
        recorder.record(step, {"loss": float(step), "bpp": 0.5}, cpu_s=3600.0 * step, lr=1e-3, phase="ft")
    rows = CsvLog(tmp_path / "train.csv").rows()
    assert [r["step"] for r in rows] == ["2", "4"]
    assert list(rows[0]) == ["step", "cpu_hours", "phase", "lr", "loss", "bpp"]
    assert [float(r["loss"]) for r in rows] == [1.5, 3.5]  # the mean over each window, not the last step
    assert float(rows[1]["cpu_hours"]) == 4.0
    assert len(log_lines) == 1 and log_lines[0].startswith("[job] step 4 ft: ") and "loss 3.5" in log_lines[0]


def test_step_recorder_leaves_out_a_column_whose_window_is_not_finite(tmp_path):
    recorder = StepRecorder(CsvLog(tmp_path / "train.csv"), "job", lambda _: None, row_every=2)
    recorder.record(1, {"loss": math.nan, "bpp": 0.2}, cpu_s=0.0, lr=1e-3)
    recorder.record(2, {"loss": 1.0, "bpp": 0.4}, cpu_s=0.0, lr=1e-3)
    (row,) = CsvLog(tmp_path / "train.csv").rows()
    assert "phase" not in row and "loss" not in row and float(row["bpp"]) == pytest.approx(0.3)


def test_step_recorder_stops_after_too_many_non_finite_steps_in_one_phase(tmp_path):
    recorder = StepRecorder(CsvLog(tmp_path / "train.csv"), "job", lambda _: None)
    for _ in range(StepRecorder.max_skipped):
        recorder.skip()
    recorder.start_phase()  # a new phase starts counting again
    for _ in range(StepRecorder.max_skipped):
        recorder.skip()
    with pytest.raises(FloatingPointError, match="non-finite steps"):
        recorder.skip()


def test_training_defaults_are_the_rate_tables_points():
    from rdp_bench.codecs.zoo.cdc import TABLE as CDC_TABLE
    from rdp_bench.codecs.zoo.hific import TABLE as HIFIC_TABLE
    from rdp_bench.training.cdc import CDCJobConfig
    from rdp_bench.training.hific import HiFiCJobConfig

    assert sorted(CDCJobConfig().lambdas) == sorted(e.params["lambda"] for e in CDC_TABLE)
    assert CDCJobConfig().lambdas[0] == max(CDCJobConfig().lambdas)  # lowest rate first
    assert list(HiFiCJobConfig().targets) == sorted(e.params["target_bpp"] for e in HIFIC_TABLE)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["autoencoder", "corrdiff", "hific", "cdc"])
def test_training_on_cuda_without_a_gpu_is_one_line_and_starts_no_job(tmp_path, command):
    from typer.testing import CliRunner

    from rdp_bench.cli import app

    jobs = tmp_path / "jobs"
    result = CliRunner().invoke(app, ["train", command, "--jobs-dir", str(jobs), "--device", "cuda"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "no CUDA GPU" in lines[0], result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert not jobs.exists()
