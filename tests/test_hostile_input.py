"""Hostile or careless input never hurts a run: bad images, bounded decoders, downloads, CLI mistakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rdp_bench.atomic import atomic_path, atomic_write_text


# --- atomic outputs ---------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "table.csv"
    atomic_write_text(target, "a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("a,b\n1,")  # a writer dying half-way ...
            raise RuntimeError("killed")
    assert target.read_text() == "a,b\n1,2\n"  # ... leaves the old file whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_report_figures_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from rdp_bench.reports import plots

    seen = []
    real = plt.Figure.savefig

    def spy(self, fname, *args, **kwargs):
        seen.append(Path(fname))
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = plots._save(fig, tmp_path, "rd_psnr_screen")
    assert [p.name for p in paths] == ["rd_psnr_screen.png", "rd_psnr_screen.svg"]
    assert all(p.parent == tmp_path and p.name.startswith(".") and ".tmp" in p.name for p in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rd_psnr_screen.png", "rd_psnr_screen.svg"]
    assert (tmp_path / "rd_psnr_screen.png").read_bytes().startswith(b"\x89PNG")


# --- a sweep that survives bad images ---------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR declares width x height (a decompression bomb's header; no pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture
def hostile_folder(tmp_path):
    import shutil

    from PIL import Image

    from rdp_bench.datasets import SAMPLES_DIR

    root = tmp_path / "photos"
    root.mkdir()
    good = Image.open(SAMPLES_DIR / "skimage_chelsea.png").convert("RGB").crop((0, 0, 96, 64))
    good.save(root / "a_good.png")
    good.save(root / "b_same_pixels.png")  # identical pixels, another file: its own row
    shutil.copy(root / "a_good.png", root / "c_truncated.png")
    data = (root / "c_truncated.png").read_bytes()
    (root / "c_truncated.png").write_bytes(data[: len(data) // 2])
    (root / "d_empty.png").write_bytes(b"")
    (root / "e_text.png").write_text("this is not a picture\n")
    _png_header_only(root / "f_bomb.png", 20000, 20000)
    _png_header_only(root / "g_large.png", 12000, 10000)  # 120 MP: over the 100 MP default
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(root / "h_animated.gif", save_all=True, append_images=frames[1:])
    os.symlink("i_loop.png", root / "i_loop.png")
    return root


def test_bad_images_are_reported_and_the_rest_is_measured(hostile_folder, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from rdp_bench.cli import app

    out = tmp_path / "run"
    args = ["run", "--codec", "jpeg", "--rate", "q75", "--dataset", f"folder:{hostile_folder}", "--out", str(out),
            "--metrics", "psnr", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    bad = {"c_truncated.png", "d_empty.png", "e_text.png", "f_bomb.png", "g_large.png", "h_animated.gif",
           "i_loop.png"}
    errors = pd.read_csv(out / "errors.csv")
    assert set(errors["image_id"]) == bad
    for name in bad:
        assert name in result.output  # the final summary names every failed file
    reasons = dict(zip(errors["image_id"], errors["error"]))
    assert "f_bomb.png" in reasons["f_bomb.png"] and "--max-pixels" in reasons["f_bomb.png"]
    assert "--max-pixels" in reasons["g_large.png"]
    assert "animated (2 frames)" in reasons["h_animated.gif"]
    assert "symbolic link loop" in reasons["i_loop.png"]
    rows = pd.read_csv(out / "results.csv")
    assert sorted(rows["image_id"]) == ["a_good.png", "b_same_pixels.png"]  # both ids kept
    assert rows["image_sha256"].nunique() == 1

    # re-running resumes: nothing is encoded again, the same failures are reported again
    before = (out / "rows.jsonl").read_text()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1
    assert (out / "rows.jsonl").read_text() == before


def test_exif_orientation_is_applied_like_a_viewer(tmp_path):
    import numpy as np
    from PIL import Image

    from rdp_bench.imageio import image_shape, load_image_uint8

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image_uint8(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3) and image_shape(tmp_path / "r.jpg") == (40, 20)
    assert out[:18].mean() > 200 and out[22:].mean() < 50  # the white half is on top after rotating


def test_single_frame_gif_is_read(tmp_path):
    from PIL import Image

    from rdp_bench.imageio import load_image_uint8

    Image.new("RGB", (10, 8), "green").save(tmp_path / "g.gif")
    assert load_image_uint8(tmp_path / "g.gif").shape == (8, 10, 3)


def test_old_rows_without_image_id_in_the_key_are_still_read(tmp_path):
    import json

    from rdp_bench.bench.store import ResultsStore, row_key

    row = {"codec": "jpeg", "checkpoint": "none", "rate_label": "q75", "rate_id": 5, "image_id": "x.png",
           "image_sha256": "ab" * 32, "bpp": 1.0}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    store = ResultsStore(tmp_path)
    key = row_key(row)  # however many fields the key has (the decode seed defaults to 0)
    assert key[:5] == ("jpeg", "none", "q75", "ab" * 32, "x.png") and store.get(key)["bpp"] == 1.0


# --- verified downloads -----------------------------------------------------------------------------
@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server whose responses the test scripts: path -> (status, headers, body)."""
    import http.server
    import threading

    routes: dict[str, tuple[int, dict, bytes]] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, headers, body = routes.get(self.path, (404, {}, b"missing"))
            if status == 0:  # a broken status line
                self.wfile.write(b"HTTP/1.1 banana\r\n\r\n")
                return
            self.send_response(status)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or p.name.endswith(".download"))


def test_download_verifies_and_every_failure_is_a_download_error(http_server, tmp_path):
    import hashlib

    from rdp_bench.datasets.download import DownloadError, download

    base, routes = http_server
    body = b"x" * 5000
    good = hashlib.sha256(body).hexdigest()
    routes["/ok"] = (200, {}, body)
    routes["/short"] = (200, {"Content-Length": "9000"}, body)
    routes["/status"] = (0, {}, b"")
    dest = tmp_path / "dl" / "file.bin"
    assert download(f"{base}/ok", dest, good) == good
    assert dest.read_bytes() == body and oct(dest.stat().st_mode & 0o777) == oct(0o644)
    cases = [(f"{base}/ok", "0" * 64, "sha256 mismatch"), (f"{base}/ok", None, "pins no sha256"),
             (f"{base}/short", good, "ended after 5000 of 9000|IncompleteRead"), (f"{base}/status", good, "could not"),
             (f"{base}/nothing", good, "HTTP 404"), ("htp:/malformed url", good, "could not"),
             ("http://[::1", good, "could not")]
    for url, sha, words in cases:
        target = tmp_path / "dl" / "other.bin"
        with pytest.raises(DownloadError, match=words):
            download(url, target, sha)
        assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_dataset_fetch_verifies_cached_archives_and_cleans_up(http_server, tmp_path):
    import hashlib
    import io
    import zipfile

    from PIL import Image

    from rdp_bench.datasets import DatasetUnavailable
    from rdp_bench.datasets.remote import Archive, RemoteDataset

    base, routes = http_server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(2):
            png = io.BytesIO()
            Image.new("RGB", (8, 8), (i, 0, 0)).save(png, format="PNG")
            zf.writestr(f"set/{i}.png", png.getvalue())
    archive = buf.getvalue()
    url = f"{base}/set.zip"
    routes["/set.zip"] = (200, {}, archive)
    ds = RemoteDataset("toy", "toy/set", 2, "a toy set",
                       archives=(Archive(url, "set.zip", hashlib.sha256(archive).hexdigest()),))
    root = tmp_path / "data"
    # a stale or tampered cached archive is not used: it is replaced by a verified download
    (root / ".archives").mkdir(parents=True)
    (root / ".archives" / "set.zip").write_bytes(b"tampered")
    assert len(ds.load(root)) == 2
    assert (root / ".archives" / "set.zip").read_bytes() == archive
    # unpinned: refused with a message that says where to put the files
    unpinned = RemoteDataset("toy2", "toy2", 2, "another set", archives=(Archive(url, "set2.zip"),))
    with pytest.raises(DatasetUnavailable, match="pins no sha256.*toy2"):
        unpinned.load(root)
    # an archive whose file entry collides with a folder: a clean error, no staging folder left
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/b.png", b"x")
        zf.writestr("a", b"y")
    bad = buf.getvalue()
    routes["/bad.zip"] = (200, {}, bad)
    clash = RemoteDataset("toy3", "toy3", 1, "a broken set",
                          archives=(Archive(f"{base}/bad.zip", "bad.zip", hashlib.sha256(bad).hexdigest()),))
    with pytest.raises(DatasetUnavailable, match="cannot extract"):
        clash.load(root)
    assert _leftovers(tmp_path) == [] and not (root / "toy3").exists()


def test_cdc_official_never_takes_a_sum_from_the_server(monkeypatch, tmp_path):
    from rdp_bench.codecs import CodecUnavailable, cdc

    monkeypatch.delenv(cdc.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(cdc, "_hub_sha256", lambda *a, **k: pytest.fail("asked the server for a checksum"))
    codec = cdc.CDCOfficial(device="cpu", weights_dir=tmp_path)
    with pytest.raises(CodecUnavailable, match="no sha256 is pinned"):
        codec._path(codec.rate_points()[0])
    assert not cdc.CDCOfficial.availability()


# --- KID in float64 ---------------------------------------------------------------------------------
def _mmd2_unbiased_float64(x: "np.ndarray", y: "np.ndarray") -> float:
    import numpy as np

    x, y = x.astype(np.float64), y.astype(np.float64)
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    m = len(x)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2)


def test_kid_is_computed_in_float64():
    import numpy as np
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric

    from rdp_bench.metrics.fid import kid_from_features

    rng = np.random.default_rng(3)
    ref = rng.gamma(0.5, 0.6, (120, 2048)).astype(np.float32)  # pool3-like: non-negative, heavy-tailed
    rec = (ref + rng.normal(0, 0.05, ref.shape)).clip(0).astype(np.float32)
    exact = _mmd2_unbiased_float64(rec, ref)
    ours = kid_from_features(rec, ref)["kid"]
    assert abs(ours - exact) <= 1e-9 * abs(exact)
    # the same call on float32 tensors is measurably off, so this test would catch a float32 path
    f32 = kid_features_to_metric(torch.from_numpy(rec), torch.from_numpy(ref), kid_subsets=2, kid_subset_size=120,
                                 kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                 kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False)["kernel_inception_distance_mean"]
    assert abs(f32 - exact) > 1e-7 * abs(exact)


def test_hific_training_loss_uses_only_a_verified_alexnet(tmp_path, monkeypatch):
    """The perceptual term of `train hific`: a cached file under AlexNet's name that fails its sha256 is never
    loaded (1 - MS-SSIM instead), and nothing is downloaded; a file that passes the check gives LPIPS."""
    import math

    import torch
    import torchvision

    from rdp_bench.metrics import weights
    from rdp_bench.training.hific import perceptual_loss

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "download", lambda *a, **k: pytest.fail("the training loss downloaded weights"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    assert perceptual_loss()[0].startswith("1-ms-ssim")  # nothing there
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.alexnet(weights=None).state_dict().items()}
    torch.manual_seed(0)
    state = {k: torch.randn(s) * math.sqrt(2 / max(1, math.prod(s[1:]))) if k.startswith("features.")
             else torch.zeros(()).expand(s) for k, s in shapes.items()}
    torch.save(state, hub / weights.ALEXNET.filename)  # right name, not the published file
    assert perceptual_loss()[0].startswith("1-ms-ssim")
    monkeypatch.setattr(weights, "VERIFY_SHA256", False)  # as if it were the verified file
    name, loss = perceptual_loss()
    x = torch.rand(1, 3, 64, 64)
    assert name == "lpips-alex" and float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)


# --- bounded decoding -------------------------------------------------------------------------------
CLASSICAL_CODECS = ("jpeg", "webp", "avif", "avif420", "jxl", "jpeg2000", "bpg", "bpg444")


@pytest.mark.parametrize("name", CLASSICAL_CODECS)
def test_classical_decoders_refuse_a_bigger_stream_and_the_pixel_limit_before_decoding(name, photo):
    """The issue's decode bombs in small form: a real stream of a 256x384 picture inside a 48x64 container
    (the decoder reads its own stream's size first), and a header over ``max_pixels`` (--max-pixels)."""
    import time

    import torch

    from rdp_bench.codecs import codec_availability, get_codec
    from rdp_bench.container import BitstreamError, Container

    if not codec_availability(name):
        pytest.skip(codec_availability(name).reason)
    codec = get_codec(name, device="cpu")
    point = codec.rate_points()[len(codec.rate_points()) // 2]
    small = Container.unpack(codec.encode([photo(48, 64, seed=3)], point)[0])
    big = Container.unpack(codec.encode([torch.full((3, 256, 384), 0.5)], point)[0])
    codec.decode([small.pack()])  # warm: libraries loaded
    bomb = Container(small.codec, small.rate_id, 48, 64, big.payload).pack()
    t0 = time.perf_counter()
    with pytest.raises(BitstreamError, match="384x256|256x384|declares|differs"):
        codec.decode([bomb])
    assert time.perf_counter() - t0 < 0.5
    codec.max_pixels = 48 * 64 - 1
    t0 = time.perf_counter()
    with pytest.raises(BitstreamError, match="--max-pixels"):
        codec.decode([small.pack()])
    assert time.perf_counter() - t0 < 0.05


def test_learned_decoder_refuses_a_small_stream_under_a_big_header(photo):
    """The issue's hific case: a small stream with a 2048x2048 header decoded to a 2048x2048 image. The
    hyper-latent string must fit the header's grid, so it is refused at once."""
    import time

    from rdp_bench.codecs import get_codec
    from rdp_bench.container import BitstreamError, Container

    codec = get_codec("hific", device="cpu")
    rec = Container.unpack(codec.encode([photo(64, 64, seed=4)], codec.rate_points()[0])[0])
    for h, w in ((2048, 2048), (128, 64), (65536, 65536)):
        t0 = time.perf_counter()
        with pytest.raises(BitstreamError):
            codec.decode([Container(rec.codec, rec.rate_id, h, w, rec.payload).pack()])
        assert time.perf_counter() - t0 < 0.5, (h, w)


# --- clean CLI errors -------------------------------------------------------------------------------
def _one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    return lines[0]


def test_cli_mistakes_are_one_line_exit_2_and_leave_no_run_folder(tmp_path):
    import pathlib

    import torch
    from typer.testing import CliRunner

    from rdp_bench.cli import app

    run = ["run", "--dataset", "samples", "--limit", "1", "--metrics", "psnr", "--quiet"]
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    line = _one_error_line(CliRunner().invoke(app, [*run, "--codec", "jpeg", "--out", str(a_file)]))
    assert "is a file" in line and a_file.read_text() == "keep me"
    if not torch.cuda.is_available():
        out = tmp_path / "gpu"
        line = _one_error_line(CliRunner().invoke(app, [*run, "--codec", "jpeg", "--device", "cuda", "--out", str(out)]))
        assert "no CUDA GPU" in line and "--device cpu" in line and not out.exists()
    # a checkpoint with code in its pickle: refused by the weights-only loader, the code never runs
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    torch.save({"encoder.blocks.0.0.weight": Payload()}, evil)
    out = tmp_path / "evil_run"
    line = _one_error_line(CliRunner().invoke(app, [*run, "--codec", "hific", "--checkpoint", str(evil),
                                                    "--out", str(out)]))
    assert "refused" in line and str(evil) in line
    assert not marker.exists() and not out.exists()  # nothing executed; the folder this run made is gone


@pytest.mark.parametrize("command, option", [("cdc", "--lambdas"), ("hific", "--targets"),
                                             ("autoencoder", "--add-lambdas")])
def test_training_number_lists_that_are_not_numbers_are_one_line_and_start_no_job(tmp_path, command, option):
    from typer.testing import CliRunner

    from rdp_bench.cli import app

    jobs = tmp_path / "jobs"
    line = _one_error_line(CliRunner().invoke(app, ["train", command, "--jobs-dir", str(jobs), option, "0.1,abc"]))
    assert option in line and "'0.1,abc'" in line and not jobs.exists()


def test_add_lambdas_without_init_or_at_an_existing_level_is_one_line_and_starts_no_job(tmp_path):
    from typer.testing import CliRunner

    from rdp_bench.cli import app
    from rdp_bench.codecs.checkpoints import save_checkpoint
    from rdp_bench.codecs.gained_hyperprior import GainedHyperpriorConfig, GainedMeanScaleHyperprior

    config = GainedHyperpriorConfig(N=8, M=12, lambdas=(0.005, 0.05))
    parent = save_checkpoint(GainedMeanScaleHyperprior(config).state_dict(), tmp_path / "hp.safetensors",
                             {"codec": "gained-hyperprior", "config": config.to_dict()})
    jobs = tmp_path / "jobs"
    train = ["train", "autoencoder", "--jobs-dir", str(jobs), "--N", "8", "--M", "12", "--add-lambdas"]
    assert "--init" in _one_error_line(CliRunner().invoke(app, [*train, "0.001"]))
    line = _one_error_line(CliRunner().invoke(app, [*train, "0.001,0.05", "--init", str(parent)]))
    assert "0.05 is already a rate level" in line
    assert not jobs.exists()


def test_adopt_compressor_of_another_file_is_one_line_and_changes_no_manifest(tmp_path):
    from typer.testing import CliRunner

    from rdp_bench.cli import app
    from rdp_bench.codecs.corrdiff import DEFAULT_CHECKPOINT, WEIGHTS_DIR

    manifest = (WEIGHTS_DIR / f"{DEFAULT_CHECKPOINT}.json").read_bytes()
    stranger = tmp_path / "stranger.safetensors"
    stranger.write_bytes(b"not the compressor")
    line = _one_error_line(CliRunner().invoke(app, ["train", "corrdiff", "--adopt-compressor", str(stranger)]))
    # before the bundled compressor is grown it is the score net's own; after, the stranger is refused by its sha256
    assert "already uses" in line or ("not the compressor" in line and "stranger" in line)
    assert (WEIGHTS_DIR / f"{DEFAULT_CHECKPOINT}.json").read_bytes() == manifest


# --- runtime errors mid-run -------------------------------------------------------------------------
@pytest.fixture
def three_photos(tmp_path, photo):
    from PIL import Image

    root = tmp_path / "three"
    root.mkdir()
    for seed, name in enumerate(("a.png", "b.png", "c.png")):  # one size: --batch-size 3 decodes them together
        arr = photo(32, 48, seed=seed).mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(arr * (name != "b.png")).save(root / name)  # b.png is black
    return root


def _failing_on_b(monkeypatch, exc):
    """jpeg's decoder raises ``exc`` for any batch holding b.png (the black image) only."""
    from rdp_bench.codecs.jpeg import JPEG

    real = JPEG.decode_payloads

    def decode_payloads(self, records):
        images = real(self, records)
        if any(float(img.mean()) < 0.05 for img in images):
            raise exc
        return images

    monkeypatch.setattr(JPEG, "decode_payloads", decode_payloads)


@pytest.mark.parametrize("batch", ["1", "3"])
def test_a_codec_failing_on_one_image_mid_run_is_recorded_and_the_rest_measured(three_photos, tmp_path,
                                                                                  monkeypatch, batch):
    import pandas as pd
    from typer.testing import CliRunner

    from rdp_bench.cli import app
    from rdp_bench.metrics import metric_availability

    _failing_on_b(monkeypatch, RuntimeError("boom in the entropy decoder"))
    out = tmp_path / "run"
    args = ["run", "--codec", "jpeg", "--rate", "q55,q75", "--dataset", f"folder:{three_photos}", "--out", str(out),
            "--metrics", "psnr,fid", "--batch-size", batch, "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # at the end, after everything else was measured
    assert result.exception is None or isinstance(result.exception, SystemExit)
    rows = pd.read_csv(out / "results.csv")
    assert sorted(zip(rows["image_id"], rows["rate_label"])) == [(i, q) for i in ("a.png", "c.png") for q in ("q55", "q75")]
    errors = pd.read_csv(out / "errors.csv")
    assert sorted(errors["rate_label"]) == ["q55", "q75"] and set(errors["image_id"]) == {"b.png"}
    assert set(errors["codec"]) == {"jpeg"} and all("boom in the entropy decoder" in e for e in errors["error"])
    assert "b.png" in result.output and "boom" in result.output
    if metric_availability("fid"):  # FID over part of the set is not given: NaN, and why
        fid = pd.read_csv(out / "dataset_metrics.csv")
        assert len(fid) == 2 and fid["value"].isna().all()
        assert fid["reason"].str.contains("1 of 3 images failed").all()
    # the next run tries the failed image again (and only it); once it decodes, the run is complete
    before = len((out / "rows.jsonl").read_text().splitlines())
    monkeypatch.undo()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len((out / "rows.jsonl").read_text().splitlines()) == before + 2 and not (out / "errors.csv").exists()


@pytest.mark.parametrize("exc", [MemoryError(), "oom", "unavailable"])
def test_memory_and_setup_errors_mid_run_stay_loud(three_photos, tmp_path, monkeypatch, exc):
    import torch

    from rdp_bench.bench.runner import RunConfig, Sweep
    from rdp_bench.codecs import CodecUnavailable

    if exc == "oom":
        exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    elif exc == "unavailable":
        exc = CodecUnavailable("jpeg: the weights went away")
    _failing_on_b(monkeypatch, exc)
    cfg = RunConfig(codecs=["jpeg"], dataset=f"folder:{three_photos}", out=tmp_path / "run", rates=["q75"],
                    metrics=["psnr"], progress=False)
    with pytest.raises(type(exc)):
        Sweep(cfg).run()


def test_fatal_errors_are_found_behind_the_decoders_wrapper():
    from rdp_bench.bench.tasks import is_fatal
    from rdp_bench.container import BitstreamError

    try:
        try:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        except RuntimeError as inner:
            raise BitstreamError("jpeg: payload could not be decoded") from inner
    except BitstreamError as wrapped:
        assert is_fatal(wrapped)
    assert not is_fatal(BitstreamError("jpeg: truncated")) and not is_fatal(ValueError("odd shape"))
