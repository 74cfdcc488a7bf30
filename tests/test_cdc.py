"""CDC: official state-dict layout, loading of official-style files, real bitstreams, batched and
deterministic DDIM decoding. Uses a micro config (random weights) so everything runs in seconds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rdp_bench.codecs.cdc import CDC, CDCOfficial, official_filename
from rdp_bench.codecs.checkpoints import save_checkpoint
from rdp_bench.codecs.zoo import WeightsEntry, check_table
from rdp_bench.codecs.diffusion.compressor import CompressorConfig, LatentCoder
from rdp_bench.codecs.diffusion.model import CDCConfig, CDCModel, extract_ema_state_dict, load_cdc_weights
from rdp_bench.codecs.diffusion.sampler import DDIMSampler
from rdp_bench.codecs.diffusion.unet import UNetConfig
from rdp_bench.container import BitstreamError, Container

FIXTURE = Path(__file__).parent / "fixtures" / "cdc_state_dict_shapes.json"

MICRO = CDCConfig(
    UNetConfig(dim=4, dim_mults=(1, 1, 1, 1, 1), context_channels=4, context_dim_mults=(1, 1, 1, 1)),
    CompressorConfig(dim=4, dim_mults=(1, 1, 1, 1), reverse_dim_mults=(1, 1, 1, 1), hyper_dims_mults=(1, 1, 1),
                     out_channels=4),
)


#: the fixture's micro checkpoints as a weights table (unpinned: random weights made per test session)
MICRO_TABLE = check_table("cdc", [WeightsEntry(0, "lambda0.02", "cdc-tiny-l0p02.safetensors", {"lambda": 0.02}),
                                  WeightsEntry(1, "lambda0.005", "cdc-tiny-l0p005.safetensors", {"lambda": 0.005})])


class MicroCDC(CDC):
    weights_table = MICRO_TABLE


def micro_model(seed: int = 0) -> CDCModel:
    torch.manual_seed(seed)
    model = CDCModel(MICRO).eval()
    with torch.no_grad():  # make the prior and hyper-decoder non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cdc_weights")
    for lam, seed in ((0.02, 0), (0.005, 1)):
        model = micro_model(seed)
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith("train_")}
        name = f"cdc-tiny-l{lam:g}".replace(".", "p")
        save_checkpoint(sd, d / name, {"codec": "cdc", "lambda": lam, "phase": "finetune", "config": MICRO.to_dict()})
    return d


@pytest.fixture(scope="module")
def codec(weights_dir) -> CDC:
    return MicroCDC(device="cpu", weights_dir=weights_dir, steps=2)


def test_full_size_state_dict_matches_official_layout():
    expected = json.loads(FIXTURE.read_text())
    with torch.device("meta"):
        model = CDCModel(CDCConfig.official())
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(got) == sorted(expected)
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    assert sum(math.prod(s) for s in got.values()) == sum(math.prod(s) for s in expected.values())


def test_official_style_ema_file_loads_ema_weights_and_skips_lpips(tmp_path):
    ema, online = micro_model(0), micro_model(1)
    raw = {f"ema_model.{k}": v for k, v in ema.state_dict().items()}
    raw.update({f"online_model.{k}": v for k, v in online.state_dict().items()})
    raw.update({"initted": torch.tensor(True), "step": torch.tensor(1000),
                "ema_model.loss_fn_vgg.net.slice1.0.weight": torch.zeros(64, 3, 3, 3),
                "online_model.loss_fn_vgg.lin0.model.1.weight": torch.zeros(1, 64, 1, 1)})
    path = tmp_path / "ckpt.pt"
    torch.save({"ema": raw}, path)
    loaded = load_cdc_weights(CDCModel(MICRO), torch.load(path, map_location="cpu", weights_only=True))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ema.state_dict()[k]), k
    assert not any("loss_fn_vgg" in k for k in extract_ema_state_dict(raw))
    with pytest.raises(ValueError, match="does not fit"):
        load_cdc_weights(CDCModel(CDCConfig.tiny()), raw)


def test_official_codec_path_offline(tmp_path, monkeypatch, photo):
    """cdc-official reads an unchanged {"ema": ...} file from weights_dir (micro config stands in)."""
    monkeypatch.setattr(CDCConfig, "official", classmethod(lambda cls: MICRO))
    ema = micro_model(3)
    raw = {f"ema_model.{k}": v for k, v in ema.state_dict().items()}
    raw["ema_model.loss_fn_vgg.net.slice1.0.weight"] = torch.zeros(2)
    torch.save({"ema": raw}, tmp_path / official_filename(0.0032, 0.0))
    official = CDCOfficial(device="cpu", weights_dir=tmp_path, steps=2)
    img = photo(40, 56)
    bs = official.encode([img], "b0.0032")
    out = official.decode(bs)[0]
    assert out.shape == img.shape
    assert len(official.checkpoint_id(official.rate_point("b0.0032"))) == 64


def test_official_missing_offline_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("RDP_BENCH_OFFLINE", "1")
    monkeypatch.setenv("RDP_BENCH_CDC_DIR", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    status = CDCOfficial.availability()
    assert not status and official_filename(0.0032, 0.0) in status.reason and str(tmp_path / "hub") in status.reason


def test_round_trip_via_files_odd_size_and_real_bpp(codec, tmp_path, photo):
    img = photo(37, 53, seed=1)
    for point in codec.rate_points():
        enc = codec.encode_detailed([img], point)[0]
        path = tmp_path / f"{point.label}.rdpb"
        path.write_bytes(enc.bitstream)
        out = codec.decode([path.read_bytes()])[0]
        assert out.shape == (3, 37, 53) and 0 <= float(out.min()) and float(out.max()) <= 1
        rec = Container.unpack(path.read_bytes(), "cdc")
        payload_bits = 8 * len(rec.payload)
        est_bits = enc.extras["bpp_estimated"] * 37 * 53
        assert est_bits > 0
        # the range coder is within a few bytes of the model's estimate (plus framing overhead)
        assert payload_bits < 1.1 * est_bits + 8 * 48
        assert payload_bits > 0.8 * est_bits


def test_batch_of_8_decodes_like_batch_of_1_and_is_deterministic(codec, photo):
    images = [photo(32, 48, seed=s) for s in range(8)]
    bitstreams = codec.encode(images, 0)
    together = codec.decode(bitstreams)
    alone = [codec.decode([b])[0] for b in bitstreams]
    for a, b in zip(together, alone):
        # identical noise, ŷ and trajectory; only the conv kernels' float rounding depends on the batch size
        # (a random micro model amplifies them more than a trained one; the bound is ~2.5 levels of 8 bits)
        assert float((a - b).abs().max()) < 1e-2
        assert float((a - b).abs().mean()) < 2e-4
    again = codec.decode(bitstreams)
    assert all(torch.equal(a, b) for a, b in zip(together, again))
    # per-image noise: two different images do not share an initial noise draw
    assert not torch.equal(together[0], together[1])


def test_memory_bound_splits_batches(weights_dir, photo):
    small = MicroCDC(device="cpu", weights_dir=weights_dir, steps=1, max_batch_pixels=64 * 64)
    images = [photo(64, 64, seed=s) for s in range(3)]
    bs = small.encode(images, 0)
    split = small.decode(bs)
    joint = MicroCDC(device="cpu", weights_dir=weights_dir, steps=1).decode(bs)
    for a, b in zip(split, joint):
        assert float((a - b).abs().max()) < 1e-2


def test_corrupt_payloads_are_rejected(codec, photo):
    good = codec.encode([photo(32, 32)], 0)[0]
    rec = Container.unpack(good, "cdc")
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    bad_payload = bytearray(rec.payload)
    bad_payload[3] ^= 0x01
    cases = [
        bytes(flipped),
        good[:-7],
        Container("cdc", rec.rate_id, rec.height, rec.width, bytes(bad_payload)).pack(),
        Container("cdc", rec.rate_id, rec.height, rec.width, rec.payload[:5]).pack(),
        Container("cdc", rec.rate_id, rec.height, rec.width, b"").pack(),
        Container("cdc", 99, rec.height, rec.width, rec.payload).pack(),
        Container("jpeg", rec.rate_id, rec.height, rec.width, rec.payload).pack(),
    ]
    for data in cases:
        with pytest.raises(BitstreamError):
            codec.decode([data])


def test_one_step_is_a_single_x0_prediction(weights_dir, photo):
    one = MicroCDC(device="cpu", weights_dir=weights_dir, steps=1)
    point = one.rate_points()[0]
    loaded = one.model(point)
    model = loaded.model
    y_hat = torch.randn(1, model.context_fn.latent_channels, 4, 4).round()
    got = one.sample(model, y_hat, [7], (64, 64), steps=1, gamma=0.8)
    noise = DDIMSampler.initial_noise((1, 3, 64, 64), [7], 0.8)
    t = torch.full((1, 1), (model.num_timesteps - 1) / model.num_timesteps)
    with torch.no_grad():
        want = model.denoise(noise, t, model.context_fn.synthesis(y_hat)).clamp(-1, 1)
    assert torch.allclose(got, want, atol=1e-6)


def test_ddim_step_recovers_the_trajectory_of_a_known_x0():
    ac = CDCModel(MICRO).train_alphas_cumprod
    sampler = DDIMSampler(ac, steps=5)
    assert sampler.timesteps[0][0] == len(ac) - 1 and sampler.timesteps[-1] == (0, -1)
    x0, eps = torch.rand(2, 3, 8, 8) * 2 - 1, torch.randn(2, 3, 8, 8)
    for t, t_prev in sampler.timesteps:
        a, ap = float(ac[t]), (1.0 if t_prev < 0 else float(ac[t_prev]))
        x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
        want = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
        assert torch.allclose(sampler.step(x_t, x0, t, t_prev), want, atol=1e-3)
    n1 = DDIMSampler.initial_noise((3, 3, 4, 4), [1, 2, 1], 0.8)
    assert torch.equal(n1[0], n1[2]) and not torch.equal(n1[0], n1[1])


def test_hyper_latent_coding_matches_its_estimate():
    model = micro_model(5)
    coder = LatentCoder(model.context_fn)
    z = torch.randn(2, model.context_fn.hyper_channels, 3, 5) * 3
    strings = coder.z_coder.compress(z)
    z_hat = coder.z_coder.decompress(strings, (3, 5))
    assert torch.equal(z_hat, coder.z_coder.quantize(z))
    with torch.no_grad():
        est = -torch.log2(coder.prior_cpu.likelihood(z_hat)).sum(dim=(1, 2, 3))
    for s, e in zip(strings, est):
        assert 8 * len(s) <= 1.05 * float(e) + 64


def _micro_job(monkeypatch, init_dir: Path | str, **kw):
    from rdp_bench.training import cdc as training

    monkeypatch.setitem(training.ARCHITECTURES, "micro", lambda: MICRO)
    return training.CDCJobConfig(**{"lambdas": (0.02, 0.005), "steps": 2, "crop": 64, "batch": 2, "val_every": 1,
                                    "val_steps": 1, "arch": "micro", "init_dir": str(init_dir)} | kw)


def test_training_job_resumes_to_the_same_weights_and_keeps_the_rate_path(monkeypatch, job_photos, weights_dir,
                                                                          tmp_path):
    from rdp_bench.codecs.checkpoints import load_state_dict
    from rdp_bench.training.cdc import RATE_PATH, train_cdc

    quiet = lambda msg: None  # noqa: E731
    cfg = _micro_job(monkeypatch, weights_dir)
    straight = train_cdc(cfg, "straight", tmp_path, photos_dir=job_photos, log=quiet)
    for until in (1, 2, 3, None):  # mid-phase, phase done, mid-phase, the end
        resumed = train_cdc(cfg, "resumed", tmp_path, photos_dir=job_photos, until_step=until, log=quiet)
    a = torch.load(straight / "state.pt", weights_only=True)
    b = torch.load(resumed / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 4 and list(a["finished"]) == list(b["finished"]) == ["0.02", "0.005"]
    for lam in a["finished"]:
        for key in a["finished"][lam]:
            assert torch.equal(a["finished"][lam][key], b["finished"][lam][key]), (lam, key)
    # the decoder recipe leaves what sets the rate as it was, and trains the rest
    init = load_state_dict(weights_dir / "cdc-tiny-l0p02.safetensors")
    done = b["finished"]["0.02"]
    frozen = [k for k in init if k.startswith(RATE_PATH)]
    assert frozen and all(torch.allclose(done[k], init[k].float(), rtol=1e-6, atol=1e-8) for k in frozen)  # EMA rounding
    assert any((done[k] - init[k].float()).abs().max() > 1e-5 for k in init if k.startswith("denoise_fn."))
    series = [line.split(",")[2] for line in (resumed / "val.csv").read_text().splitlines()[1:]]
    assert series == ["ft@0.02"] * 3 + ["ft@0.005"] * 3  # the start, each step (val_every 1)
    assert sum(p["cpu_seconds"] for p in b["phase_logs"]) == pytest.approx(b["cpu_s"], rel=0.2)
    assert (resumed / "curves.png").stat().st_size > 0


def test_training_job_exports_checkpoints_that_code(monkeypatch, job_photos, weights_dir, tmp_path, photo):
    from rdp_bench.codecs.checkpoints import read_manifest
    from rdp_bench.training.cdc import export_cdc, train_cdc
    from rdp_bench.training.job import JobMismatch

    quiet = lambda msg: None  # noqa: E731
    with pytest.raises(ValueError, match="give init_dir"):
        train_cdc(_micro_job(monkeypatch, ""), "scratch", tmp_path, photos_dir=job_photos, log=quiet)
    assert not (tmp_path / "scratch").exists()
    folder = train_cdc(_micro_job(monkeypatch, weights_dir), "job", tmp_path, photos_dir=job_photos, until_step=1,
                       log=quiet)
    with pytest.raises(ValueError, match="no finished"):
        export_cdc(folder, tmp_path / "w")
    with pytest.raises(JobMismatch, match="lr"):
        train_cdc(_micro_job(monkeypatch, weights_dir, lr=1.0), "job", tmp_path, photos_dir=job_photos, log=quiet)
    train_cdc(_micro_job(monkeypatch, weights_dir), "job", tmp_path, photos_dir=job_photos, until_step=2, log=quiet)
    paths = export_cdc(folder, tmp_path / "w")
    assert [p.name for p in paths] == ["cdc-tiny-l0p02.safetensors"]  # only the finished λ
    training = read_manifest(paths[0])["training"]
    assert training["steps"] == 2 and training["total_steps"] == 2  # the fixture's parent has no steps
    assert training["warm_start"]["file"] == "cdc-tiny-l0p02.safetensors"
    assert "skimage_astronaut.png" in training["validation_photos"]
    assert "skimage_astronaut.png" not in training["train_photos"]
    assert [training["validation"][k][0]["step"] for k in ("first", "last")] == [0, 2]
    # joint training from scratch is the other recipe
    scratch = train_cdc(_micro_job(monkeypatch, "", joint=True, lambdas=(0.02,), val_every=5), "joint",
                        tmp_path, photos_dir=job_photos, log=quiet)
    assert read_manifest(export_cdc(scratch, tmp_path / "w3")[0])["training"]["steps"] == 2

    class Trained(CDC):  # a new checkpoint runs once its table lists it
        weights_table = (WeightsEntry(0, "lambda0.02", "cdc-tiny-l0p02.safetensors", {"lambda": 0.02}),)

    trained = Trained(device="cpu", weights_dir=tmp_path / "w", steps=1)
    assert [p.label for p in trained.rate_points()] == ["lambda0.02"]
    assert trained.decode(trained.encode([photo(16, 24)], 0))[0].shape == (3, 16, 24)


def test_stream_carries_its_sampler_settings_and_decodes_the_same_under_default_options(weights_dir, photo):
    from rdp_bench.codecs.cdc import pack_settings
    from rdp_bench.codecs.entropy import pack_strings, unpack_strings

    encoder = MicroCDC(device="cpu", weights_dir=weights_dir, steps=2, gamma=0.5)
    stream = encoder.encode([photo(32, 48, seed=4)], 0)[0]
    settings, _, _ = unpack_strings(encoder.own_payload(stream), expected_count=3)
    assert settings == pack_settings(2, 0.5)
    own = encoder.decode([stream])[0]
    # freshly built at default options (8 steps, γ 0.8) or other ones: the stream's settings decide
    for decoder in (MicroCDC(device="cpu", weights_dir=weights_dir),
                    MicroCDC(device="cpu", weights_dir=weights_dir, steps=5, gamma=1.0)):
        assert torch.equal(decoder.decode([stream])[0], own)
    assert not torch.equal(MicroCDC(device="cpu", weights_dir=weights_dir).decode(
        MicroCDC(device="cpu", weights_dir=weights_dir).encode([photo(32, 48, seed=4)], 0))[0], own)
    # settings this build cannot use are refused before any network pass (CRC-valid payloads)
    rec = Container.unpack(stream)
    fingerprint = rec.payload[:8]
    _, z, y = unpack_strings(rec.payload[8:])
    for bad, why in [(b"\x02" + settings[1:], "version"), (pack_settings(0, 0.5), "steps"),
                     (pack_settings(5000, 0.5), "steps"), (pack_settings(2, float("nan")), "noise scale"),
                     (pack_settings(2, 1e6), "noise scale"), (settings[:-1], "settings have")]:
        data = Container("cdc", rec.rate_id, rec.height, rec.width, fingerprint + pack_strings([bad, z, y])).pack()
        with pytest.raises(BitstreamError, match=why):
            encoder.decode([data])


def test_a_stream_under_another_rate_points_weights_is_refused_naming_both(codec, photo):
    from rdp_bench.codecs.base import WeightsMismatch

    rec = Container.unpack(codec.encode([photo(32, 32)], 0)[0])
    mine, theirs = (codec.weights_fingerprint(codec.rate_point(i)).hex() for i in (0, 1))
    assert mine != theirs
    relabelled = Container("cdc", 1, rec.height, rec.width, rec.payload).pack()
    with pytest.raises(WeightsMismatch, match=f"made with weights {mine}, this decoder has {theirs}"):
        codec.decode([relabelled])
