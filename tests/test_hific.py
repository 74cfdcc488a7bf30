import json
import os
from pathlib import Path

import pytest
import torch

from rdp_bench.codecs import CodecUnavailable, get_codec
from rdp_bench.codecs.checkpoints import file_sha256, load_state_dict, read_manifest
from rdp_bench.codecs.entropy import unpack_strings
from rdp_bench.codecs.hific import WEIGHTS_DIR, HiFiC, bundled_checkpoints
from rdp_bench.codecs.hific_arch import ChannelNorm2D, HiFiCAutoencoder, HiFiCConfig, config_from_state_dict
from rdp_bench.container import BitstreamError, Container
from rdp_bench.datasets import SAMPLES_DIR
from rdp_bench.imageio import load_image


def _training_photos_missing() -> bool:
    from rdp_bench.training.data import DEFAULT_PHOTOS

    return not DEFAULT_PHOTOS.is_dir() or not any(DEFAULT_PHOTOS.iterdir())


# training smoke runs crop the shared photos; a fresh clone has no ../shared beside it
needs_photos = pytest.mark.skipif(_training_photos_missing(), reason="training photos not found under ../shared/photos "
                                  "(a fresh clone has none; set RDP_BENCH_PHOTOS to a folder of photos)")

FIXTURE = Path(__file__).parent / "fixtures" / "hific_state_dict_shapes.json"
WEIGHTS = Path(os.environ.get("RDP_BENCH_HIFIC_TEST_WEIGHTS", WEIGHTS_DIR))


@pytest.fixture(scope="module")
def codec():
    return HiFiC(device="cpu", weights_dir=WEIGHTS)


@pytest.fixture(scope="module")
def photo_crop():
    img = load_image(SAMPLES_DIR / "skimage_coffee.png")  # 3 x 400 x 600
    return img[:, 37:37 + 301, 11:11 + 355].contiguous()  # odd size, not a multiple of 64


def _psnr(a, b):
    return float(10 * torch.log10(1 / torch.mean((a - b) ** 2)))


def test_full_size_state_dict_matches_neuralcompression():
    expected = json.loads(FIXTURE.read_text())["shapes"]
    with torch.device("meta"):  # 181 M parameters: shapes only
        model = HiFiCAutoencoder()
    actual = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(actual) == set(expected)
    mismatched = {k: (actual[k], v) for k, v in expected.items() if v is not None and actual[k] != v}
    assert not mismatched


def test_tiny_has_the_same_topology():
    with torch.device("meta"):
        full, tiny = HiFiCAutoencoder(), HiFiCAutoencoder(HiFiCConfig.tiny())
    assert set(full.state_dict()) == set(tiny.state_dict())
    assert config_from_state_dict(tiny.state_dict(), norm="affine") == HiFiCConfig.tiny()
    assert config_from_state_dict(full.state_dict()) == HiFiCConfig()


def test_channel_norm_is_hifics():
    torch.manual_seed(0)
    norm = ChannelNorm2D(6)
    with torch.no_grad():
        norm.gamma.uniform_(0.5, 2)
        norm.beta.normal_()
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    mean, var = x.mean(1, keepdim=True), x.var(1, keepdim=True, unbiased=True)
    assert torch.allclose(norm(x), norm.gamma * (x - mean) / torch.sqrt(var + 1e-3) + norm.beta, atol=1e-5)
    affine = ChannelNorm2D(6, normalize=False)
    assert torch.equal(affine(x), x)


def test_legacy_compressai_keys_load():
    """Upstream checkpoints made with older CompressAI name the bottleneck weights ``_matrix0`` ..."""
    torch.manual_seed(0)
    src = HiFiCAutoencoder(HiFiCConfig.tiny())
    legacy = {}
    for k, v in src.state_dict().items():
        for new, old in (("matrices.", "_matrix"), ("biases.", "_bias"), ("factors.", "_factor")):
            if k.startswith(f"hyper_bottleneck.{new}"):
                k = f"hyper_bottleneck.{old}{k.rsplit('.', 1)[1]}"
        legacy[k] = v
    dst = HiFiCAutoencoder(HiFiCConfig.tiny())
    dst.load_state_dict(legacy)
    assert torch.equal(dst.hyper_bottleneck.matrices[2], src.hyper_bottleneck.matrices[2])


def test_bundled_checkpoints_and_manifests():
    found = bundled_checkpoints(WEIGHTS)
    assert len(found) >= 4
    assert sum(p.stat().st_size for p, _ in found) < 8e6
    for path, manifest in found:
        assert manifest["sha256"] == file_sha256(path)
        training = manifest["training"]
        assert training["cpu_hours"] > 0 and training["steps"] > 0 and "perceptual_term" in manifest["loss"]
        assert not set(training["validation_photos"]) & set(training["train_photos"])
        assert HiFiCConfig.from_dict(manifest["architecture"]["config"]) == HiFiCConfig.tiny()


def test_round_trip_through_a_file_on_odd_sizes(codec, photo_crop, tmp_path):
    point = codec.rate_points()[-1]
    images = [photo_crop, photo_crop[:, :77, :131].contiguous()]
    streams = codec.encode(images, point)
    for i, s in enumerate(streams):
        (tmp_path / f"{i}.rdpb").write_bytes(s)
    decoded = codec.decode([(tmp_path / f"{i}.rdpb").read_bytes() for i in range(2)])
    for img, rec in zip(images, decoded):
        assert rec.shape == img.shape
    # carries the image, not just its mean colour (only on the larger crop: the minutes-trained tiny
    # models reproduce colours of small dark crops poorly)
    flat = images[0].mean(dim=(1, 2), keepdim=True).expand_as(images[0])
    assert _psnr(images[0], decoded[0]) > _psnr(images[0], flat) + 2
    again = codec.decode(streams[:1])
    assert torch.equal(again[0], decoded[0])


def test_real_bpp_close_to_estimate(codec):
    img = load_image(SAMPLES_DIR / "skimage_coffee.png")
    for point in (codec.rate_points()[0], codec.rate_points()[-1]):
        enc = codec.encode_detailed([img], point)[0]
        h, w = img.shape[1:]
        real = 8 * len(enc.bitstream) / (h * w)
        est = enc.extras["bpp_estimated"]
        coded = sum(len(s) for s in unpack_strings(codec.own_payload(enc.bitstream))) * 8 / (h * w)
        # the range coder codes with the nearest larger table scale, a few percent off the model's estimate
        assert abs(coded - est) / est < 0.04, (coded, est)
        assert abs(real - est) / est < 0.06, (real, est)  # plus container and framing overhead


def test_rates_span_the_intended_range(codec, photo_crop):
    bpps = []
    for point in codec.rate_points():
        enc = codec.encode_detailed([photo_crop], point)[0]
        bpps.append(8 * len(enc.bitstream) / (photo_crop.shape[1] * photo_crop.shape[2]))
    assert bpps == sorted(bpps) and bpps[-1] > 2 * bpps[0]


def test_corrupt_payloads_raise_bitstream_error(codec, photo_crop):
    point = codec.rate_points()[1]
    stream = codec.encode([photo_crop[:, :64, :96].contiguous()], point)[0]
    rec = Container.unpack(stream)
    bad_payloads = [rec.payload[: len(rec.payload) // 2], rec.payload[:-1] + bytes([rec.payload[-1] ^ 1]),
                    bytes(len(rec.payload)), b""]
    for payload in bad_payloads:
        forged = Container(rec.codec, rec.rate_id, rec.height, rec.width, payload).pack()  # valid container CRC
        with pytest.raises(BitstreamError):
            codec.decode([forged])
    with pytest.raises(BitstreamError):
        codec.decode([stream[:-5]])


def test_batch_size_invariance(codec, photo_crop):
    point = codec.rate_points()[-1]
    images = [photo_crop[:, i * 20 : i * 20 + 120, :150].contiguous() for i in range(3)]
    batched = codec.encode(images, point)
    single = [codec.encode([img], point)[0] for img in images]
    assert batched == single
    together = codec.decode(batched)
    for s, img in zip(single, together):
        assert torch.equal(codec.decode([s])[0], img)


def test_msillm_unavailable_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("RDP_BENCH_MSILLM_DOWNLOAD", raising=False)
    from rdp_bench.codecs.msillm import MSILLM

    status = MSILLM.availability()
    assert not status
    assert "official weights not found" in status.reason and "msillm_target_0.035bpp.ckpt" in status.reason
    assert str(tmp_path / "hub" / "checkpoints") in status.reason
    with pytest.raises(CodecUnavailable, match="official weights not found"):
        get_codec("msillm", device="cpu")


def test_msillm_loads_an_upstream_style_checkpoint(monkeypatch, tmp_path, capsys, photo_crop):
    """A torch.save'd HiFiCAutoencoder state dict (as NeuralCompression ships) loads with weights_only."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    path, _ = bundled_checkpoints(WEIGHTS)[0]
    ckpt = tmp_path / "hub" / "checkpoints" / "msillm_target_0.14bpp.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(load_state_dict(path), ckpt)
    codec = get_codec("msillm", device="cpu")
    assert [p.label for p in codec.rate_points()] == ["quality_3"]
    img = photo_crop[:, :70, :90].contiguous()
    out = codec.decode(codec.encode([img], "quality_3"))[0]
    assert out.shape == img.shape
    assert "CC-BY-NC 4.0" in capsys.readouterr().err


def _tiny_job(**kw):
    from rdp_bench.training.hific import HiFiCJobConfig

    return HiFiCJobConfig(**{"targets": (0.3,), "crop": 128, "batch": 1, "base_steps": 2, "rate_steps": 2,
                             "gan_steps": 2, "val_every": 1, "threads": 1, **kw})


def test_training_job_resumes_to_the_same_weights(job_photos, tmp_path):
    """Stopped inside and at the end of phases, the job continues to the weights of a straight run."""
    from rdp_bench.training.hific import train_hific

    quiet = lambda msg: None  # noqa: E731
    straight = train_hific(_tiny_job(), "straight", tmp_path, photos_dir=job_photos, log=quiet)
    for until in (1, 2, 3, 4, 5, None):  # mid-base, base done, mid-rate, rate done, mid-gan, the end
        resumed = train_hific(_tiny_job(), "resumed", tmp_path, photos_dir=job_photos, until_step=until, log=quiet)
    a = torch.load(straight / "state.pt", weights_only=True)
    b = torch.load(resumed / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 6 and list(a["finished"]) == list(b["finished"]) == ["0.3"]
    # a phase's CPU time counts the runs before its resume too
    assert sum(p["cpu_seconds"] for p in b["phase_logs"]) == pytest.approx(b["cpu_s"], rel=0.1)
    for key in a["finished"]["0.3"]:
        assert torch.equal(a["finished"]["0.3"][key], b["finished"]["0.3"][key]), key
    series = [line.split(",")[2] for line in (resumed / "val.csv").read_text().splitlines()[1:]]
    assert series == ["base", "base", "rate@0.3", "gan@0.3"]  # per base step, then at each phase's end
    assert (resumed / "curves.png").stat().st_size > 0


def test_training_job_exports_checkpoints_that_code(job_photos, tmp_path):
    from rdp_bench.training.hific import export_hific, export_hific_base, train_hific
    from rdp_bench.training.job import JobMismatch

    quiet = lambda msg: None  # noqa: E731
    folder = train_hific(_tiny_job(), "job", tmp_path, photos_dir=job_photos, until_step=3, log=quiet)
    with pytest.raises(ValueError, match="no finished target"):
        export_hific(folder, tmp_path / "w")
    with pytest.raises(JobMismatch, match="base_lambda"):
        train_hific(_tiny_job(base_lambda=1.0), "job", tmp_path, photos_dir=job_photos, log=quiet)
    train_hific(_tiny_job(), "job", tmp_path, photos_dir=job_photos, log=quiet)
    paths = export_hific(folder, tmp_path / "w")
    manifest = read_manifest(paths[0])
    assert manifest["target_bpp"] == 0.3
    assert [p["name"] for p in manifest["training"]["phases"]] == ["base", "rate@0.3", "gan@0.3"]
    assert "skimage_astronaut.png" in manifest["training"]["validation_photos"]
    assert "skimage_astronaut.png" not in manifest["training"]["train_photos"]
    assert "ms-ssim" in manifest["loss"]["perceptual_term"] or "lpips" in manifest["loss"]["perceptual_term"]
    # the base warm-starts another job, whose manifests count the parent's steps too
    base = export_hific_base(folder, tmp_path / "base.safetensors")
    child = train_hific(_tiny_job(init=str(base)), "child", tmp_path, photos_dir=job_photos, log=quiet)
    child_training = read_manifest(export_hific(child, tmp_path / "w2")[0])["training"]
    assert child_training["steps"] == 6 and child_training["total_steps"] == 6 + 2
    from rdp_bench.codecs.zoo import WeightsEntry

    class Trained(HiFiC):  # a new checkpoint runs once its table lists it
        weights_table = (WeightsEntry(0, "0.3bpp", paths[0].name, {"target_bpp": 0.3}),)

    trained = Trained(device="cpu", weights_dir=tmp_path / "w")
    assert [p.label for p in trained.rate_points()] == ["0.3bpp"]
    img = load_image(sorted(SAMPLES_DIR.glob("*.png"))[0])[:, :64, :80].contiguous()
    assert trained.decode(trained.encode([img], "0.3bpp"))[0].shape == img.shape


def test_gan_fine_tuning_continues_from_finished_checkpoints(job_photos, tmp_path):
    """--init-targets with no base and no rate phase: each target's GAN phase starts from its own checkpoint
    (validated before the first step), resumes to the same weights, and its manifest counts the parent."""
    from rdp_bench.training.hific import export_hific, export_hific_base, train_hific
    from rdp_bench.training.job import CsvLog

    quiet = lambda msg: None  # noqa: E731
    parent = export_hific(train_hific(_tiny_job(), "parent", tmp_path, photos_dir=job_photos, log=quiet), tmp_path / "w")[0]
    more_gan = _tiny_job(base_steps=0, rate_steps=0, gan_steps=3, init_targets=str(tmp_path / "w"))
    assert more_gan.phases() == [("gan@0.3", 0.3, 3)]
    assert "init_targets" not in _tiny_job().to_dict()  # so jobs begun before the option resume unchanged
    straight = train_hific(more_gan, "straight", tmp_path, photos_dir=job_photos, log=quiet)
    for until in (1, None):
        resumed = train_hific(more_gan, "resumed", tmp_path, photos_dir=job_photos, until_step=until, log=quiet)
    a = torch.load(straight / "state.pt", weights_only=True)
    b = torch.load(resumed / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 3 and [p["name"] for p in b["phase_logs"]] == ["gan@0.3"]
    for key in a["finished"]["0.3"]:
        assert torch.equal(a["finished"]["0.3"][key], b["finished"]["0.3"][key]), key
    rows = CsvLog(resumed / "val.csv").rows()
    assert [r["series"] for r in rows] == ["start@0.3", "gan@0.3"]
    # the start point is the parent's exported model (fp16 on disk), not fresh weights
    parent_end = CsvLog(tmp_path / "parent" / "val.csv").rows()[-1]
    assert parent_end["series"] == "gan@0.3"
    assert float(rows[0]["psnr"]) == pytest.approx(float(parent_end["psnr"]), abs=0.05)
    training = read_manifest(export_hific(resumed, tmp_path / "w2")[0])["training"]
    assert [p["name"] for p in training["phases"]] == ["gan@0.3"]
    assert training["warm_start"]["file"] == parent.name
    assert training["warm_start"]["sha256"] == file_sha256(parent)
    assert training["total_steps"] == 6 + 3
    with pytest.raises(ValueError, match="no base phase"):
        export_hific_base(resumed, tmp_path / "base.safetensors")


@pytest.mark.parametrize("options, message", [
    (["--init-targets", "w"], "use it with --base-steps 0"),
    (["--base-steps", "0"], "needs --init-targets"),
    (["--base-steps", "0", "--rate-steps", "0", "--gan-steps", "0", "--init-targets", "w"], "nothing to train"),
    (["--base-steps", "0", "--init-targets", "empty"], "no checkpoint to start the 0.3 bpp target from"),
])
def test_a_continuation_that_cannot_run_is_one_line(tmp_path, options, message):
    from typer.testing import CliRunner

    from rdp_bench.cli import app

    (tmp_path / "empty").mkdir()
    options = [str(tmp_path / o) if o in ("w", "empty") else o for o in options]
    jobs = tmp_path / "jobs"
    result = CliRunner().invoke(app, ["train", "hific", "--jobs-dir", str(jobs), "--targets", "0.3", *options])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert not jobs.exists()  # refused before a job folder is made
