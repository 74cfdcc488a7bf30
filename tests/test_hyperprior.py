"""The shared hyperprior coder, the variable-rate hyperprior codec and its resumable training job."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from rdp_bench.codecs.checkpoints import save_checkpoint
from rdp_bench.codecs.gained_hyperprior import GainedHyperpriorConfig, GainedMeanScaleHyperprior, GainedParts
from rdp_bench.codecs.hyperprior import Hyperprior
from rdp_bench.codecs.hyperprior_coder import HyperpriorCoder, HyperpriorParts
from rdp_bench.container import BitstreamError

SMALL = GainedHyperpriorConfig(N=16, M=24, lambdas=(0.002, 0.01, 0.05))


def _image(h: int = 96, w: int = 130, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, h // 8 + 1, w // 8 + 1, generator=g)
    return torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear", align_corners=False)[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = GainedMeanScaleHyperprior(SMALL).eval()
    out = tmp_path_factory.mktemp("hp") / "hp-small.safetensors"
    return save_checkpoint(model.state_dict(), out, {"codec": "gained-hyperprior", "config": SMALL.to_dict()})


def test_codec_round_trip_is_exact_and_batch_invariant(checkpoint):
    codec = Hyperprior(device="cpu", checkpoint=checkpoint)
    images = [_image(seed=0), _image(seed=1), _image(64, 64, seed=2)]
    streams = codec.encode(images, "q2")
    assert [codec.encode([im], "q2")[0] for im in images] == streams  # batch of 3 == one at a time
    decoded = codec.decode(streams)
    assert [tuple(d.shape) for d in decoded] == [tuple(im.shape) for im in images]
    # the decoder sees exactly the encoder's ŷ
    coder = codec.coder(1)
    enc = coder.encode(torch.stack(images[:2]))
    y_hat = coder.decode_latents(enc.payloads, (96, 130))
    assert torch.equal(y_hat, enc.y_hat)
    assert torch.equal(torch.stack(coder.synthesize(y_hat, (96, 130))), torch.stack(decoded[:2]))


def test_rate_levels_are_stable_and_named_by_the_checkpoint(checkpoint):
    codec = Hyperprior(device="cpu", checkpoint=checkpoint)
    assert [(p.label, p.params["level"]) for p in codec.rate_points()] == [("q1", 0), ("q2", 1), ("q3", 2)]
    with pytest.raises(ValueError):
        GainedParts(codec.model(), 3)


def test_corrupt_truncated_and_oversized_streams_are_refused(checkpoint):
    from rdp_bench.container import Container

    codec = Hyperprior(device="cpu", checkpoint=checkpoint)
    stream = codec.encode([_image()], "q1")[0]
    rec = Container.unpack(stream, expected_codec="hyperprior")
    payload = bytearray(rec.payload)
    payload[len(payload) // 2] ^= 0x55
    for bad in (bytes(payload), rec.payload[:-3]):
        with pytest.raises(BitstreamError):
            codec.decode([Container("hyperprior", rec.rate_id, rec.height, rec.width, bad).pack()])
    # crafted sizes: over the pixel limit, or far more latents than the strings can carry
    big = Container("hyperprior", rec.rate_id, 60000, 60000, rec.payload).pack()
    with pytest.raises(BitstreamError):
        codec.decode([big])
    from rdp_bench.codecs.entropy import pack_strings

    with pytest.raises(BitstreamError, match="cannot describe"):
        codec.coder(0).decode_latents([pack_strings([b"\0" * 4, b"\0" * 4])], (9000, 9000))


def test_coder_equals_compressai_own_compress_and_decompress():
    """Our strings and reconstructions for CompressAI's mbt2018-mean are CompressAI's own."""
    from compressai.models import MeanScaleHyperprior

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MeanScaleHyperprior(N=16, M=24).eval()
        model.update(force=True)
    x = _image(128, 128)[None]
    coder = HyperpriorCoder(HyperpriorParts(model))
    ours = coder.encode(x)
    theirs = model.compress(x)
    from rdp_bench.codecs.entropy import unpack_strings

    z_str, y_str = unpack_strings(ours.payloads[0], expected_count=2)
    assert y_str == theirs["strings"][0][0] and z_str == theirs["strings"][1][0]
    x_hat = model.decompress(theirs["strings"], theirs["shape"])["x_hat"].clamp(0, 1)
    ours_img = coder.synthesize(coder.decode_latents(ours.payloads, (128, 128)), (128, 128))[0]
    assert torch.allclose(ours_img, x_hat[0], atol=1e-6)


# --- the resumable training job ---------------------------------------------------------------

def _tiny_job(**kw):
    from rdp_bench.training.hyperprior import AutoencoderJobConfig

    return AutoencoderJobConfig(**{"N": 8, "M": 12, "lambdas": (0.005, 0.05), "crop": 64, "batch": 2, "max_steps": 6,
                                   "val_every": 3, "kid_every": 0, "threads": 1, **kw})


def test_training_job_resumes_to_the_same_weights(job_photos, tmp_path):
    from rdp_bench.training.hyperprior import train_autoencoder

    quiet = lambda msg: None  # noqa: E731
    straight = train_autoencoder(_tiny_job(), "straight", tmp_path, photos_dir=job_photos, log=quiet)
    train_autoencoder(_tiny_job(), "resumed", tmp_path, photos_dir=job_photos, until_step=3, log=quiet)
    resumed = train_autoencoder(_tiny_job(), "resumed", tmp_path, photos_dir=job_photos, log=quiet)
    a = torch.load(straight / "state.pt", weights_only=True)
    b = torch.load(resumed / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    val = (resumed / "val.csv").read_text().splitlines()
    assert len(val) == 1 + 2 * 2  # header + 2 validations x 2 levels, none duplicated by the resume
    assert (resumed / "curves.png").stat().st_size > 0


def test_training_job_refuses_other_settings_and_exports(job_photos, tmp_path):
    from rdp_bench.training.hyperprior import export_autoencoder, train_autoencoder
    from rdp_bench.training.job import JobMismatch

    quiet = lambda msg: None  # noqa: E731
    folder = train_autoencoder(_tiny_job(), "job", tmp_path, photos_dir=job_photos, log=quiet)
    with pytest.raises(JobMismatch, match="lr"):
        train_autoencoder(_tiny_job(lr=1e-3), "job", tmp_path, photos_dir=job_photos, log=quiet)
    path = export_autoencoder(folder, tmp_path / "w", "hp-test")
    codec = Hyperprior(device="cpu", checkpoint=path)
    assert len(codec.rate_points()) == 2
    img = _image(64, 64)
    assert codec.decode(codec.encode([img], "q2"))[0].shape == img.shape
    from rdp_bench.codecs.checkpoints import read_manifest

    training = read_manifest(path)["training"]
    assert training["steps"] == 6 and "skimage_astronaut.png" in training["validation_photos"]
    assert "skimage_astronaut.png" not in training["train_photos"]
    # a warm-started job's manifest counts its parent's training too
    child = train_autoencoder(_tiny_job(max_steps=3, init=str(path)), "child", tmp_path, photos_dir=job_photos, log=quiet)
    import json

    overwritten = json.loads(path.with_suffix(".json").read_text())  # an export may reuse the parent's name
    path.with_suffix(".json").write_text(json.dumps({**overwritten, "sha256": "0" * 64, "training": {"steps": 999}}))
    child_training = read_manifest(export_autoencoder(child, tmp_path / "w2", "hp-child"))["training"]
    assert child_training["warm_start"]["sha256"] == overwritten["sha256"]
    assert child_training["steps"] == 3 and child_training["total_steps"] == 9
    assert child_training["total_cpu_hours"] >= training["cpu_hours"]


def _coding_model(config: GainedHyperpriorConfig) -> GainedMeanScaleHyperprior:
    """A random model whose latents span quantisation bins at every level (at init nearly all of them round to
    their means, and every level costs the same)."""
    torch.manual_seed(0)
    model = GainedMeanScaleHyperprior(config).eval()
    with torch.no_grad():
        model.gain.mul_(10)
        model.inv_gain.div_(10)
    return model


def test_with_levels_places_new_levels_by_rate_and_keeps_the_old_ones():
    from rdp_bench.codecs.gained_hyperprior import with_levels

    model = _coding_model(SMALL)
    grown = with_levels(model, [0.02, 0.0005])
    assert grown.config.lambdas == (0.0005, 0.002, 0.01, 0.02, 0.05)
    new = grown.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(new[key][[1, 2, 4]] if key in ("gain", "inv_gain") else new[key], value), key
    # geometric in λ: 0.02 lies log(2)/log(5) of the way from 0.01 to 0.05
    t = math.log(2) / math.log(5)
    assert torch.allclose(grown.gain[3].abs(), model.gain[1].abs() ** (1 - t) * model.gain[2].abs() ** t)
    x = _image(128, 128)[None]
    with torch.no_grad():
        bits = [sum(-torch.log2(lk).sum() for lk in grown(x, torch.tensor([lv]))["likelihoods"].values()).item()
                for lv in range(5)]
    assert all(low < high for low, high in zip(bits, bits[1:]))  # the extrapolated level too
    with pytest.raises(ValueError, match="already a rate level"):
        with_levels(model, [0.01])
    with pytest.raises(ValueError, match="positive"):
        with_levels(model, [0.0])


def test_gains_only_job_adds_a_level_and_leaves_every_old_one_bit_identical(job_photos, tmp_path):
    import json

    from rdp_bench.codecs.checkpoints import load_state_dict, read_manifest
    from rdp_bench.codecs.gained_hyperprior import with_levels
    from rdp_bench.training.hyperprior import export_autoencoder, job_lambdas, train_autoencoder
    from rdp_bench.training.job import CsvLog, JobMismatch

    quiet = lambda msg: None  # noqa: E731
    config = GainedHyperpriorConfig(N=8, M=12, lambdas=(0.005, 0.05))
    parent = save_checkpoint(_coding_model(config).state_dict(), tmp_path / "parent.safetensors",
                             {"codec": "gained-hyperprior", "config": config.to_dict()})
    reference = GainedMeanScaleHyperprior(config)
    reference.load_state_dict(load_state_dict(parent))
    grow = _tiny_job(init=str(parent), add_lambdas=(0.001,))
    straight = train_autoencoder(grow, "straight", tmp_path, photos_dir=job_photos, log=quiet)
    train_autoencoder(grow, "resumed", tmp_path, photos_dir=job_photos, until_step=3, log=quiet)
    resumed = train_autoencoder(grow, "resumed", tmp_path, photos_dir=job_photos, log=quiet)
    a = torch.load(straight / "state.pt", weights_only=True)
    b = torch.load(resumed / "state.pt", weights_only=True)
    assert all(torch.equal(a[part][k], b[part][k]) for part in ("model", "ema") for k in a[part])
    assert json.loads((straight / "config.json").read_text())["add_lambdas"] == [0.001]
    with pytest.raises(JobMismatch, match="add_lambdas"):
        train_autoencoder(_tiny_job(init=str(parent), add_lambdas=(0.002,)), "straight", tmp_path, log=quiet)
    assert {r["level"] for r in CsvLog(straight / "val.csv").rows()} == {"0", "1"}  # the new level and its neighbour

    def old_part(key: str, value: torch.Tensor) -> torch.Tensor:
        return value[1:] if key in ("gain", "inv_gain") else value

    for key, value in reference.state_dict().items():  # float32, in the job's weights and its EMA
        assert torch.equal(old_part(key, a["model"][key]), value) and torch.equal(old_part(key, a["ema"][key]), value)
    assert not torch.equal(a["model"]["gain"][0], with_levels(reference, [0.001]).gain[0])  # the new row trained
    child = export_autoencoder(straight, tmp_path / "w", "hp-grown")
    exported = load_state_dict(child)
    for key, value in load_state_dict(parent).items():  # as stored: fp16
        assert torch.equal(old_part(key, exported[key]), value), key
    training = read_manifest(child)["training"]
    assert read_manifest(child)["config"]["lambdas"] == [0.001, 0.005, 0.05]
    assert training["added_levels"]["lambdas"] == [0.001] and training["added_levels"]["levels"] == [0]
    assert training["steps"] == 6 and training["warm_start"]["sha256"] == read_manifest(parent)["sha256"]
    # the CLI's levels: a new job's are its init's, a resumed job's those it recorded
    assert job_lambdas(tmp_path / "next", str(child)) == (0.001, 0.005, 0.05)
    assert job_lambdas(straight, str(child)) == (0.005, 0.05)
    # the old levels' streams, now one rate point up, carry the same coded bits and decode to the same image
    img = _image(128, 192)
    old_codec, new_codec = Hyperprior(device="cpu", checkpoint=parent), Hyperprior(device="cpu", checkpoint=child)
    old_streams = [old_codec.encode([img], q)[0] for q in ("q1", "q2")]
    for old_stream, q in zip(old_streams, ("q2", "q3")):
        new_stream = new_codec.encode([img], q)[0]
        assert new_codec.own_payload(new_stream) == old_codec.own_payload(old_stream)
        assert torch.equal(new_codec.decode([new_stream])[0], old_codec.decode([old_stream])[0])
    low = new_codec.encode([img], "q1")[0]
    assert len(new_codec.own_payload(low)) < len(old_codec.own_payload(old_streams[0]))


def test_fp16_checkpoints_keep_the_architecture_constants(tmp_path):
    """fp16 flushes the 1e-9 likelihood bound to 0; loading must keep the module's own value, else a
    far-off latent costs -log2(0) = inf bits (a warm-started job went NaN and validated at inf bpp)."""
    config = GainedHyperpriorConfig(N=8, M=8, lambdas=(0.01, 0.02))
    torch.manual_seed(0)
    path = save_checkpoint(GainedMeanScaleHyperprior(config).state_dict(), tmp_path / "tiny.safetensors", {})
    from rdp_bench.codecs.checkpoints import load_state_dict

    stored = load_state_dict(path)
    assert stored["gaussian_conditional.likelihood_lower_bound.bound"].item() == 0.0  # what fp16 keeps
    model = GainedMeanScaleHyperprior(config)
    model.load_state_dict(stored)
    assert model.gaussian_conditional.likelihood_lower_bound.bound.item() == pytest.approx(1e-9)
    assert model.entropy_bottleneck.likelihood_lower_bound.bound.item() == pytest.approx(1e-9)
    model.eval()
    x = torch.zeros(1, 3, 64, 64)
    x[..., :8, :8] = 1.0  # a hard edge puts some latents far from their predicted mean
    with torch.no_grad():
        likelihoods = model(x, torch.tensor([1]))["likelihoods"]
    assert all(torch.isfinite(-torch.log2(lk)).all() for lk in likelihoods.values())


def test_payload_starts_with_the_weights_fingerprint_and_other_weights_are_refused(checkpoint, tmp_path):
    from rdp_bench.codecs.base import FINGERPRINT_BYTES, WeightsMismatch
    from rdp_bench.codecs.checkpoints import read_manifest
    from rdp_bench.container import Container, rate_of

    codec = Hyperprior(device="cpu", checkpoint=checkpoint)
    image = _image()
    stream = codec.encode([image], "q2")[0]
    rec = Container.unpack(stream)
    sha = read_manifest(checkpoint)["sha256"]
    assert rec.payload[:FINGERPRINT_BYTES] == bytes.fromhex(sha)[:FINGERPRINT_BYTES]
    # bpp counts the fingerprint: it is part of what the decoder needs
    assert rate_of(stream).payload_bytes == len(codec.own_payload(stream)) + FINGERPRINT_BYTES
    # a fresh codec with the same checkpoint decodes it; one with other weights refuses, naming both
    assert torch.equal(Hyperprior(device="cpu", checkpoint=checkpoint).decode([stream])[0], codec.decode([stream])[0])
    torch.manual_seed(1)
    other = save_checkpoint(GainedMeanScaleHyperprior(SMALL).eval().state_dict(), tmp_path / "hp-other.safetensors",
                            {"codec": "gained-hyperprior", "config": SMALL.to_dict()})
    other_sha = read_manifest(other)["sha256"]
    with pytest.raises(WeightsMismatch, match=rf"made with weights {sha[:16]}, this decoder has {other_sha[:16]}"):
        Hyperprior(device="cpu", checkpoint=other).decode([stream])
    # a payload too short to carry one is a bad stream, not a crash
    with pytest.raises(BitstreamError, match="fingerprint"):
        codec.decode([Container("hyperprior", rec.rate_id, rec.height, rec.width, rec.payload[:5]).pack()])
