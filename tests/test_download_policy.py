"""One download policy (rdp_bench.offline): RDP_BENCH_OFFLINE=1 and --no-download stop every download --
codec weights (cdc-official, msillm), metric weights and datasets -- with one line naming the file and
where it goes. Nothing here touches the network: every downloader is replaced by one that fails the test."""

import dataclasses
import os
from contextlib import contextmanager

import pytest
import torch
from typer.testing import CliRunner

import rdp_bench.datasets.download as download_module
from rdp_bench.cli import app
from rdp_bench.codecs import CodecUnavailable
from rdp_bench.datasets import DatasetUnavailable, load_dataset
from rdp_bench.datasets import remote
from rdp_bench.metrics import weights
from rdp_bench.offline import OFF_REASON, OFFLINE_ENV, downloads_allowed, no_downloads

FAKE_SHA = "ab" * 32


@pytest.fixture(autouse=True)
def online(monkeypatch, tmp_path):
    """Downloads on by default; the torch hub cache in an empty folder."""
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.delenv("RDP_BENCH_CDC_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("a download was attempted while downloads are off")

    for module in (download_module, remote, weights):
        monkeypatch.setattr(module, "download", refuse)


@pytest.fixture(params=["env", "no-download"])
def switched_off(request, monkeypatch):  # a context manager: downloads are off inside it
    """Either switch: the environment variable, or the context --no-download runs the sweep in."""
    if request.param == "no-download":
        return no_downloads

    @contextmanager
    def env():
        with monkeypatch.context() as m:
            m.setenv(OFFLINE_ENV, "1")
            yield
    return env


def test_downloads_are_on_by_default_and_any_switch_turns_them_off(monkeypatch):
    assert downloads_allowed() and downloads_allowed(True)
    assert not downloads_allowed(False)
    with no_downloads():
        assert not downloads_allowed() and not downloads_allowed(True)  # True never overrides a switch
        assert os.environ[OFFLINE_ENV] == "1"  # processes started meanwhile (Ray workers) inherit it
    assert downloads_allowed() and OFFLINE_ENV not in os.environ
    for value in ("1", "true", "yes"):
        monkeypatch.setenv(OFFLINE_ENV, value)
        assert not downloads_allowed() and not downloads_allowed(True)
    monkeypatch.setenv(OFFLINE_ENV, "0")
    assert downloads_allowed()
    with no_downloads():
        assert not downloads_allowed()
    assert os.environ[OFFLINE_ENV] == "0"  # restored, not removed


def test_metric_weights(switched_off, no_network, tmp_path):
    with switched_off():
        with pytest.raises(weights.WeightsMissing) as err:
            weights.resolve_weights(weights.ALEXNET)
    message = str(err.value)
    assert "\n" not in message and OFF_REASON in message
    assert f"put {weights.ALEXNET.filename}" in message and str(tmp_path / "hub" / "checkpoints") in message


def test_dataset(switched_off, no_network, tmp_path):
    with switched_off():
        with pytest.raises(DatasetUnavailable) as err:
            load_dataset("clic2020-valid", data_root=tmp_path / "data")
    message = str(err.value)
    assert "\n" not in message and OFF_REASON in message
    assert f"professional_valid_2020.zip (134,834,429 bytes) in {tmp_path / 'data' / '.archives'}/" in message


def _pin_cdc(monkeypatch):
    from rdp_bench.codecs import cdc

    monkeypatch.setattr(cdc, "OFFICIAL_SHA256", {f: FAKE_SHA for f in cdc.CDCOfficial.files()})
    monkeypatch.setattr(cdc, "_HUB_PROBES", {f: "" for f in cdc.CDCOfficial.files()})  # the Hub "answers"
    return cdc


def test_cdc_official(switched_off, no_network, monkeypatch, tmp_path):
    cdc = _pin_cdc(monkeypatch)  # pinned sums: only the policy stands between it and a download
    assert cdc.CDCOfficial.availability()
    with switched_off():
        status = cdc.CDCOfficial.availability()
        codec = cdc.CDCOfficial(device="cpu")
        point = codec.rate_points()[0]
        with pytest.raises(CodecUnavailable) as err:
            codec._path(point)
    assert not status and OFF_REASON in status.reason and cdc.CDCOfficial.files()[0] in status.reason
    message = str(err.value)
    assert OFF_REASON in message and point.params["file"] in message
    assert f"put it in {tmp_path / 'hub' / 'checkpoints' / 'cdc'}" in message


def test_cdc_official_downloads_when_allowed(monkeypatch, tmp_path):
    cdc = _pin_cdc(monkeypatch)
    calls = []

    def fake(url, dest, expected_sha256, expected_size=None, timeout=30.0):
        calls.append((url, dest, expected_sha256))
        raise download_module.DownloadError(f"could not download {url}: no network in tests")

    monkeypatch.setattr(download_module, "download", fake)
    codec = cdc.CDCOfficial(device="cpu")
    with pytest.raises(CodecUnavailable, match="could not download"):
        codec._path(codec.rate_points()[0])
    assert len(calls) == 1 and calls[0][2] == FAKE_SHA  # verified against the pinned sum


def _pin_msillm(monkeypatch):
    from rdp_bench.codecs import msillm

    monkeypatch.setattr(msillm, "TABLE", tuple(dataclasses.replace(e, sha256=FAKE_SHA) for e in msillm.TABLE))
    return msillm


def test_msillm(switched_off, no_network, monkeypatch, tmp_path):
    msillm = _pin_msillm(monkeypatch)
    assert msillm.MSILLM.availability()
    hub = tmp_path / "hub" / "checkpoints"
    with switched_off():
        status = msillm.MSILLM.availability()
        codec = msillm.MSILLM(device="cpu")
        problem = codec.rate_point_problem(codec.rate_table()[0])
        assert codec.rate_points() == []
        with pytest.raises(CodecUnavailable) as err:
            codec.rate_point("quality_1")
    assert not status and OFF_REASON in status.reason and "msillm_target_0.035bpp.ckpt" in status.reason
    assert str(hub) in status.reason
    assert OFF_REASON in problem and f"needs msillm_target_0.035bpp.ckpt; put it in {hub}" in problem
    assert str(err.value) == problem


def test_msillm_downloads_only_verified_files(monkeypatch, tmp_path):
    from rdp_bench.codecs import msillm

    calls = []

    def fake(url, dest, expected_sha256, expected_size=None, timeout=30.0):
        calls.append((url, expected_sha256))
        raise download_module.DownloadError("no network in tests")

    monkeypatch.setattr(download_module, "download", fake)
    status = msillm.MSILLM.availability()  # upstream publishes no sums: not downloaded, and said why
    assert not status and "publishes no sha256" in status.reason and "msillm_target_0.035bpp.ckpt" in status.reason
    monkeypatch.setenv("RDP_BENCH_MSILLM_DOWNLOAD", "1")  # the former opt-in is named, not obeyed
    assert "RDP_BENCH_MSILLM_DOWNLOAD no longer downloads" in msillm.MSILLM.availability().reason
    assert calls == []

    _pin_msillm(monkeypatch)
    codec = msillm.MSILLM(device="cpu")
    with pytest.raises(CodecUnavailable, match="no network in tests; put msillm_target_0.035bpp.ckpt in"):
        codec.weights_for(codec.rate_point("quality_1"))
    assert calls == [(f"{msillm.RELEASE_URL}msillm_target_0.035bpp.ckpt", FAKE_SHA)]


@pytest.mark.parametrize("switch", ["--no-download", "env"])
def test_cli_no_download_reaches_codecs_and_datasets(switch, no_network, monkeypatch, tmp_path):
    cdc = _pin_cdc(monkeypatch)
    extra = ["--no-download"] if switch == "--no-download" else []
    if switch == "env":
        monkeypatch.setenv(OFFLINE_ENV, "1")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--codec", "cdc-official", "--dataset", "samples", "--out", str(out),
                                   "--quiet", *extra])
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())  # the console may wrap long lines
    assert line.startswith("error:") and OFF_REASON in line and cdc.CDCOfficial.files()[0] in line
    assert not out.exists()
    res = CliRunner().invoke(app, ["run", "--codec", "jpeg", "--dataset", "clic2020-valid", "--data-root",
                                   str(tmp_path / "data"), "--out", str(out), "--quiet", *extra])
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert OFF_REASON in line and "professional_valid_2020.zip" in line
    if switch == "--no-download":
        assert OFFLINE_ENV not in os.environ  # the switch ended with the run
