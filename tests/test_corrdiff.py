"""CorrDiff: γ solvers, γ quantizers, the corrected sampling loop, and the codec round trip."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from rdp_bench.codecs.corrdiff_parts import (
    GAMMA_CLIP, QUANTIZERS, Float16Gamma, GammaLayout, Uniform8Gamma, corrected_sample, get_quantizer,
    mix, mse_plus_msssim, solve_gamma_gradient, solve_gamma_mse,
)
from rdp_bench.codecs.base import FINGERPRINT_BYTES
from rdp_bench.container import BitstreamError


def _training_photos_missing() -> bool:
    from rdp_bench.training.data import DEFAULT_PHOTOS

    return not DEFAULT_PHOTOS.is_dir() or not any(DEFAULT_PHOTOS.iterdir())


# training smoke runs crop the shared photos; a fresh clone has no ../shared beside it
needs_photos = pytest.mark.skipif(_training_photos_missing(), reason="training photos not found under ../shared/photos "
                                  "(a fresh clone has none; set RDP_BENCH_PHOTOS to a folder of photos)")


def _triplet(seed: int, shape=(2, 3, 37, 45)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 1.6 - 0.8
    x0_hat = (x + 0.4 * torch.randn(shape, generator=g)).clamp(-1, 1)
    x0_e = (x + 0.25 * torch.randn(shape, generator=g)).clamp(-1, 1)
    return x, x0_hat, x0_e


def _group_mse(layout, x, x0_hat, x0_e, gamma, h, w):
    """Per-group squared error of the *unclamped* mix (what the closed form minimises)."""
    x, x0_hat, x0_e, gamma = x.double(), x0_hat.double(), x0_e.double(), gamma.double()
    mixed = x0_hat + layout.expand(gamma, x.shape[-2], x.shape[-1], h, w) * (x0_e - x0_hat)
    return layout.group_sum((mixed - x) ** 2, h, w)


@pytest.mark.parametrize("granularity", ["scalar", "channel", "tile"])
def test_closed_form_gamma_equals_brute_force(granularity):
    layout = GammaLayout(granularity, tile=16)
    x, x0_hat, x0_e = _triplet(1)
    h, w = 33, 40  # a valid area smaller than the (padded) tensors
    gamma = solve_gamma_mse(x, x0_hat, x0_e, layout, h=h, w=w)
    assert gamma.shape == (2, layout.count(h, w))
    # brute force: every group independently over a grid, then two finer grids around the best
    grid = torch.linspace(-2, 3, 201, dtype=torch.float64)
    losses = torch.stack([_group_mse(layout, x, x0_hat, x0_e, torch.full_like(gamma, float(g)), h, w) for g in grid])
    brute = grid[losses.argmin(0)]
    for half_width in (0.025, 5e-4):
        offsets = torch.linspace(-half_width, half_width, 101, dtype=torch.float64)
        fine = torch.stack([_group_mse(layout, x, x0_hat, x0_e, brute + d, h, w) for d in offsets])
        brute = brute + offsets[fine.argmin(0)]
    assert torch.allclose(gamma.double(), brute, atol=2e-5)
    # and no perturbation does better
    base = _group_mse(layout, x, x0_hat, x0_e, gamma, h, w)
    for d in (-1e-2, 1e-2):
        assert (_group_mse(layout, x, x0_hat, x0_e, gamma + d, h, w) > base).all()


def test_closed_form_zero_denominator_gives_zero():
    x, x0_hat, _ = _triplet(2)
    gamma = solve_gamma_mse(x, x0_hat, x0_hat.clone(), GammaLayout("channel"))
    assert torch.equal(gamma, torch.zeros(2, 3))
    # a huge ratio is clipped, never inf/nan
    tiny = x0_hat + 1e-3
    assert torch.isfinite(solve_gamma_mse(x, x0_hat, tiny, GammaLayout())).all()
    assert solve_gamma_mse(x, x0_hat, tiny, GammaLayout()).abs().max() <= GAMMA_CLIP


def test_gradient_solver_never_worse_than_closed_form():
    x, x0_hat, x0_e = _triplet(3, shape=(2, 3, 48, 48))
    layout = GammaLayout()
    loss = mse_plus_msssim(0.5)
    g_cf = solve_gamma_mse(x, x0_hat, x0_e, layout)
    g_gd = solve_gamma_gradient(x, x0_hat, x0_e, layout, loss, steps=6)
    for i in range(2):
        l_cf = loss(mix(x0_hat[i : i + 1], x0_e[i : i + 1], g_cf[i].reshape(1, 1, 1, 1)), x[i : i + 1])
        l_gd = loss(mix(x0_hat[i : i + 1], x0_e[i : i + 1], g_gd[i].reshape(1, 1, 1, 1)), x[i : i + 1])
        assert l_gd <= l_cf + 1e-7


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_gamma_quantizer_round_trips(name):
    q = get_quantizer(name)
    g = torch.Generator().manual_seed(4)
    values = torch.cat([torch.rand(200, generator=g) * 2.2 - 0.6, torch.tensor([0.0, 1.0, 0.5, -0.25])])
    quantized = q.quantize(values)
    data = q.to_bytes(quantized)
    assert len(data) == values.numel() * q.bits // 8
    back = q.from_bytes(data, values.numel())
    assert torch.equal(back, quantized)
    assert torch.equal(q.quantize(quantized), quantized)  # idempotent: the grid is exact
    assert torch.equal(q.quantize(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 1.0]))
    inside = (values > -0.5) & (values < 1.49)
    tol = {"float16": 1e-3, "bfloat16": 4e-3, "uint8": 1 / 256 + 1e-6}[name]
    assert (quantized[inside] - values[inside]).abs().max() <= tol
    with pytest.raises(BitstreamError):
        q.from_bytes(data[:-1], values.numel())


def test_gamma_quantizer_rejects_non_finite():
    nan16 = np.array([0x7E00], dtype=">u2").tobytes()
    with pytest.raises(BitstreamError):
        Float16Gamma().from_bytes(nan16, 1)
    assert Uniform8Gamma().from_bytes(bytes([255]), 1).item() == pytest.approx(1.4921875)


class _ToySampler:
    """A minimal deterministic DDIM-like sampler (test double for the loop's contract only)."""

    def __init__(self, steps: int) -> None:
        ts = np.linspace(1000, 0, steps + 1).round().astype(int)
        self.timesteps = [(int(a), int(b)) for a, b in zip(ts[:-1], ts[1:])]

    @staticmethod
    def abar(t: int) -> float:
        return float(np.cos(t / 1000 * np.pi / 2) ** 2) * 0.999 + 0.0005

    def step(self, x_t, x0, t, t_prev):
        eps = (x_t - self.abar(t) ** 0.5 * x0) / (1 - self.abar(t)) ** 0.5
        return self.abar(t_prev) ** 0.5 * x0 + (1 - self.abar(t_prev)) ** 0.5 * eps


def _toy_denoiser(seed: int):
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    torch.manual_seed(seed)
    torch.nn.init.normal_(net.weight, std=0.2)

    def denoise(x, t):
        return torch.tanh(net(x) + t / 1000.0)

    return denoise


@pytest.mark.parametrize("granularity", ["scalar", "channel", "tile"])
def test_loop_decoder_replays_encoder_and_gamma_one_returns_e2e(granularity):
    torch.manual_seed(0)
    layout = GammaLayout(granularity, tile=16)
    x, _, x0_e = _triplet(5, shape=(3, 3, 32, 48))
    noise = torch.randn(3, 3, 32, 48, generator=torch.Generator().manual_seed(9))
    sampler, den = _ToySampler(4), _toy_denoiser(0)
    with torch.no_grad():
        enc = corrected_sample(den, x0_e, sampler, noise, target=x, layout=layout, valid=(30, 45))
        dec = corrected_sample(den, x0_e, sampler, noise, gammas=enc.gammas, layout=layout, valid=(30, 45))
        assert enc.gammas.shape == (3, 4, layout.count(30, 45))
        assert torch.equal(enc.image, dec.image)
        # the quantized γ are on the float16 grid
        assert torch.equal(Float16Gamma().quantize(enc.gammas), enc.gammas)
        # γ = 1 at the last step returns D(ŷ) exactly, whatever came before
        forced = enc.gammas.clone()
        forced[:, -1] = 1.0
        out = corrected_sample(den, x0_e, sampler, noise, gammas=forced, layout=layout, valid=(30, 45))
        assert torch.equal(out.image, x0_e.clamp(-1, 1))
        # correction helps MSE versus pure diffusion (γ = 0) on the valid area
        zero = corrected_sample(den, x0_e, sampler, noise, gammas=torch.zeros_like(enc.gammas), layout=layout)
    err = lambda im: ((im - x)[..., :30, :45] ** 2).mean()  # noqa: E731
    assert err(enc.image) < err(zero.image)


# ----------------------------------------------------------------------------------------------
# The networks
# ----------------------------------------------------------------------------------------------
def _micro_compressor():
    from rdp_bench.codecs.gained_hyperprior import GainedHyperpriorConfig, GainedMeanScaleHyperprior

    torch.manual_seed(0)
    return GainedMeanScaleHyperprior(GainedHyperpriorConfig(N=16, M=24, lambdas=(0.002, 0.05))).eval()


def test_untrained_score_net_decodes_exactly_the_privileged_decoder():
    from rdp_bench.codecs.corrdiff_net import ScoreNet, ScoreNetConfig, privileged_decoder

    hp = _micro_compressor()
    net = ScoreNet(ScoreNetConfig(widths=(8, 12, 16), decoder_channels=16))
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        out = hp(x, torch.tensor([0, 1]))
        decoded = privileged_decoder(hp.g_s, out["y_dec"])
        # D is the hyperprior's own synthesis, in [-1, 1]
        assert torch.allclose((decoded.x0_e + 1) / 2, out["x_hat"], atol=1e-6)
        assert [f.shape[-1] for f in decoded.features] == [64, 32, 16]
        x0 = net(torch.randn_like(x), torch.rand(2, 1), net.context(decoded))
    assert torch.equal(x0, decoded.x0_e.clamp(-1, 1))  # zero-initialised residual head


def test_score_training_step_moves_only_the_score_net():
    from rdp_bench.codecs.corrdiff_net import ScoreNet, ScoreNetConfig
    from rdp_bench.training.corrdiff import decode_latents

    hp = _micro_compressor().requires_grad_(False)
    before = {k: v.clone() for k, v in hp.state_dict().items()}
    net = ScoreNet(ScoreNetConfig(widths=(8, 12, 16), decoder_channels=16))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(2, 3, 64, 64)
    for _ in range(2):
        loss, parts = net.training_loss(x * 2 - 1, decode_latents(hp, x, torch.tensor([0, 1])))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["loss"] > 0 and not torch.equal(net.head[1].weight, torch.zeros_like(net.head[1].weight))
    assert all(torch.equal(before[k], v) for k, v in hp.state_dict().items())


# ----------------------------------------------------------------------------------------------
# The codec (a micro random-init checkpoint: the mechanics, not the quality, are under test)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def micro_weights(tmp_path_factory):
    from rdp_bench.codecs.checkpoints import save_checkpoint
    from rdp_bench.codecs.corrdiff_net import ScoreNet, ScoreNetConfig

    folder = tmp_path_factory.mktemp("corrdiff_weights")
    hp = _micro_compressor()
    comp = save_checkpoint(hp.state_dict(), folder / "micro-hyperprior.safetensors",
                           {"codec": "gained-hyperprior", "config": hp.config.to_dict()})
    comp_manifest = __import__("json").loads(comp.with_suffix(".json").read_text())
    torch.manual_seed(1)
    config = ScoreNetConfig(widths=(8, 12, 16), decoder_channels=16)
    net = ScoreNet(config)
    torch.nn.init.normal_(net.head[1].weight, std=0.05)  # an untrained head would just return D(ŷ)
    return save_checkpoint(net.state_dict(), folder / "micro-score.safetensors",
                           {"codec": "corrdiff", "config": config.to_dict(),
                            "compressor": {"file": comp.name, "sha256": comp_manifest["sha256"],
                                           "lambdas": list(hp.config.lambdas)}})


def _codec(name, checkpoint, **options):
    from rdp_bench.codecs.corrdiff import CorrDiff, CorrDiffDiffusionOnly, CorrDiffE2E

    cls = {"corrdiff": CorrDiff, "corrdiff-diffusion-only": CorrDiffDiffusionOnly, "corrdiff-e2e": CorrDiffE2E}[name]
    return cls(device="cpu", checkpoint=checkpoint, steps=options.pop("steps", 3), **options)


def _repack(bitstream: bytes, **changes) -> bytes:
    """Rewrite the CorrDiff payload (valid CRCs) with some of its parts replaced."""
    from rdp_bench.codecs.entropy import pack_strings, unpack_strings
    from rdp_bench.container import Container

    rec = Container.unpack(bitstream)
    fingerprint, own = rec.payload[:FINGERPRINT_BYTES], rec.payload[FINGERPRINT_BYTES:]
    header, gamma, latent = unpack_strings(own)
    parts = {"header": header, "gamma": gamma, "latent": latent, **changes}
    payload = pack_strings([parts["header"], parts["gamma"], parts["latent"]])
    return Container(rec.codec, rec.rate_id, rec.height, rec.width, fingerprint + payload).pack()


@pytest.mark.parametrize("batch", [1, 5])
def test_codec_decoder_equals_encoder_trajectory_bit_exact(micro_weights, photo, batch):
    # batch 5 also runs the network in chunks of 2 images (max_batch_pixels), as on a GPU with big images
    codec = _codec("corrdiff", micro_weights, max_batch_pixels=2 * 64 * 64 if batch > 1 else 10**8)
    images = [photo(40, 45, seed=i) for i in range(batch)]
    streams = codec.encode(images, 1)
    decoded = codec.decode(streams)
    assert len(decoded) == batch
    for enc_img, dec_img, img in zip(codec.encoder_reconstructions, decoded, images):
        assert dec_img.shape == img.shape
        assert torch.equal(enc_img, dec_img)


def test_rate_points_are_the_compressor_levels_and_the_y_stream_is_the_hyperprior_one(micro_weights, photo):
    from rdp_bench.codecs.entropy import unpack_strings
    from rdp_bench.codecs.hyperprior import Hyperprior

    codec = _codec("corrdiff-e2e", micro_weights)
    assert [p.label for p in codec.rate_points()] == ["q1", "q2"]
    image = [photo(40, 45, seed=2)]
    hp = Hyperprior(device="cpu", checkpoint=micro_weights.parent / "micro-hyperprior.safetensors")
    for level in (0, 1):
        latent = unpack_strings(codec.own_payload(codec.encode(image, level)[0]))[2]
        hp_stream = hp.encode(image, level)[0]
        assert latent == hp.own_payload(hp_stream)
        # corrdiff-e2e decodes to the hyperprior codec's image (up to the [-1, 1] round trip's float rounding)
        e2e = codec.decode(codec.encode(image, level))[0]
        assert torch.allclose(e2e, hp.decode([hp_stream])[0], atol=1e-6, rtol=0)


def test_a_score_net_refuses_another_compressor(micro_weights, tmp_path, photo):
    import json
    import shutil

    from rdp_bench.codecs.base import CodecUnavailable

    for f in micro_weights.parent.glob("micro-*"):
        shutil.copy(f, tmp_path / f.name)
    manifest = json.loads((tmp_path / "micro-score.json").read_text())
    manifest["compressor"]["sha256"] = "0" * 64
    (tmp_path / "micro-score.json").write_text(json.dumps(manifest))
    with pytest.raises(CodecUnavailable, match="not the compressor"):
        _codec("corrdiff", tmp_path / "micro-score.safetensors").encode([photo(40, 45)], 0)


def test_a_score_net_adopts_its_compressor_grown_by_levels_and_nothing_else(micro_weights, tmp_path, photo):
    import json
    import shutil

    from rdp_bench.codecs.checkpoints import load_state_dict, read_manifest, save_checkpoint
    from rdp_bench.codecs.gained_hyperprior import GainedMeanScaleHyperprior, with_levels
    from rdp_bench.training.corrdiff import adopt_grown_compressor

    for f in micro_weights.parent.glob("micro-*"):
        shutil.copy(f, tmp_path / f.name)
    score, compressor = tmp_path / "micro-score.safetensors", tmp_path / "micro-hyperprior.safetensors"
    previous = shutil.copy(compressor, tmp_path / "previous.safetensors")
    old_codec = _codec("corrdiff", score)
    old_image = old_codec.decode(old_codec.encode([photo(40, 45)], 1))[0]
    hp = _micro_compressor()
    hp.load_state_dict(load_state_dict(compressor))
    config = read_manifest(compressor)["config"]

    def save(model: GainedMeanScaleHyperprior, path) -> None:
        save_checkpoint(model.state_dict(), path, {"codec": "gained-hyperprior", "config": model.config.to_dict()})

    touched = with_levels(hp, [0.0005])
    with torch.no_grad():
        touched.gain[2] += 1  # an old level's row moved
    save(touched, compressor)
    with pytest.raises(ValueError, match="changed gain"):
        adopt_grown_compressor(score, previous, compressor)
    with pytest.raises(ValueError, match="not the compressor"):
        adopt_grown_compressor(score, tmp_path / "micro-hyperprior.safetensors", compressor)
    save(with_levels(hp, [0.0005]), compressor)
    manifest = adopt_grown_compressor(score, previous, compressor)
    assert manifest["compressor"]["lambdas"] == [0.0005, *config["lambdas"]]
    assert manifest["compressor"]["trained_lambdas"] == config["lambdas"]
    assert json.loads(score.with_suffix(".json").read_text()) == manifest
    new_codec = _codec("corrdiff", score)
    assert [p.label for p in new_codec.rate_points()] == ["q1", "q2", "q3"]
    # the old level, one rate point up now, gives the same image
    assert torch.equal(new_codec.decode(new_codec.encode([photo(40, 45)], 2))[0], old_image)
    with pytest.raises(ValueError, match="already uses"):
        adopt_grown_compressor(score, previous, compressor)


def test_missing_weights_at_decode_are_reported_as_such_not_as_a_bad_stream(micro_weights, tmp_path, photo):
    from rdp_bench.codecs.base import CodecUnavailable

    stream = _codec("corrdiff", micro_weights).encode([photo(40, 45)], 0)[0]
    for f in micro_weights.parent.glob("micro-score.*"):  # the score net without its compressor
        (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CodecUnavailable, match="compressor checkpoint micro-hyperprior"):
        _codec("corrdiff", tmp_path / "micro-score.safetensors").decode([stream])


def test_gamma_bits_are_in_the_payload_and_counted(micro_weights, photo):
    from rdp_bench.codecs.entropy import unpack_strings
    from rdp_bench.container import Container, rate_of

    images = [photo(40, 45, seed=3)]
    diffusion_only = _codec("corrdiff-diffusion-only", micro_weights)
    base = diffusion_only.encode(images, 0)[0]
    e2e = _codec("corrdiff-e2e", micro_weights).encode(images, 0)[0]
    assert len(e2e) == len(base)  # the framing is the same for every codec (v1 billed the name's length)
    sizes = {}
    for gran, prec, per_value in [("scalar", "float16", 2), ("channel", "float16", 2), ("tile", "bfloat16", 2),
                                  ("scalar", "uint8", 1)]:
        codec = _codec("corrdiff", micro_weights, gamma_granularity=gran, gamma_precision=prec, gamma_tile=16)
        enc = codec.encode_detailed(images, 0)[0]
        rec = Container.unpack(enc.bitstream)
        _, gamma, latent = unpack_strings(codec.own_payload(enc.bitstream))
        count = {"scalar": 1, "channel": 3, "tile": 3 * 3}[gran]
        assert len(gamma) == 3 * count * per_value  # 3 steps
        assert enc.extras["bpp_gamma"] == pytest.approx(8 * len(gamma) / (40 * 45))
        # same ŷ stream as the diffusion-only one; the stream grows by exactly the γ block, and so does bpp:
        # corrdiff's bpp = corrdiff-e2e's (and diffusion-only's) + the γ bytes'
        _, no_gamma, latent0 = unpack_strings(diffusion_only.own_payload(base))
        assert (latent, no_gamma) == (latent0, b"")
        assert len(enc.bitstream) == len(base) + len(gamma)
        for variant in (base, e2e):
            assert rate_of(enc.bitstream).bpp == pytest.approx(rate_of(variant).bpp + enc.extras["bpp_gamma"],
                                                               rel=0, abs=1e-12)
        assert rate_of(enc.bitstream).bpp == pytest.approx(8 * len(rec.payload) / (40 * 45))
        sizes[(gran, prec)] = len(enc.bitstream)
        if gran == "tile":  # the layout that depends on the image size must decode too
            assert torch.equal(codec.decode([enc.bitstream])[0], codec.encoder_reconstructions[0])
    assert sizes[("scalar", "uint8")] < sizes[("scalar", "float16")] < sizes[("channel", "float16")]


def test_corrupt_and_truncated_streams_are_rejected(micro_weights, photo):
    codec = _codec("corrdiff", micro_weights)
    stream = codec.encode([photo(40, 45, seed=5)], 0)[0]
    for bad in (stream[:-1], stream[: len(stream) // 2], stream[:10]):
        with pytest.raises(BitstreamError):
            codec.decode([bad])
    flipped = bytearray(stream)
    flipped[len(stream) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        codec.decode([bytes(flipped)])
    with pytest.raises(BitstreamError):  # a valid container of another variant
        codec.decode(_codec("corrdiff-e2e", micro_weights).encode([photo(40, 45, seed=5)], 0))
    from rdp_bench.codecs.entropy import unpack_strings

    gamma = unpack_strings(codec.own_payload(stream))[1]
    with pytest.raises(BitstreamError, match="gamma"):  # checksums fine, γ block one value short
        codec.decode([_repack(stream, gamma=gamma[:-2])])
    with pytest.raises(BitstreamError, match="non-finite"):
        codec.decode([_repack(stream, gamma=gamma[:-2] + b"\x7e\x00")])
    with pytest.raises(BitstreamError):  # unknown payload version
        codec.decode([_repack(stream, header=b"\x09\x03\x00\x00\x00\x40")])
    with pytest.raises(BitstreamError, match="steps"):  # a decode bomb: 200 network passes
        codec.decode([_repack(stream, header=b"\x02\xc8\x00\x00\x00\x40")])


def test_diffusion_only_equals_plain_ddim_decode(micro_weights, photo):
    from rdp_bench.codecs.corrdiff import NOISE_SCALE
    from rdp_bench.codecs.corrdiff_net import privileged_decoder
    from rdp_bench.codecs.diffusion.sampler import DDIMSampler
    from rdp_bench.codecs.entropy import unpack_strings

    codec = _codec("corrdiff-diffusion-only", micro_weights)
    images = [photo(40, 45, seed=6), photo(40, 45, seed=7)]
    streams = codec.encode(images, 1)
    decoded = codec.decode(streams)
    # an independent plain DDIM decode (the loop of the sampler's docstring) of the same ŷ
    net, hp = codec.score_net(), codec.compressor()
    latents = [unpack_strings(codec.own_payload(s))[2] for s in streams]
    with torch.no_grad():
        y_hat = hp.coder(1).decode_latents(latents, (40, 45))
        model = hp.model()
        context = net.context(privileged_decoder(model.g_s, y_hat * model.inv_gain.abs()[1][None, :, None, None]))
        sampler = DDIMSampler(net.train_alphas_cumprod, 3, eta=0.0)
        x = sampler.initial_noise((2, 3, 64, 64), [zlib.crc32(p) & 0x7FFFFFFF for p in latents], NOISE_SCALE)
        for t, t_prev in sampler.timesteps:
            x0 = net(x, sampler.time_input(t, 2, "cpu"), context).clamp(-1, 1)
            x = sampler.step(x, x0, t, t_prev)
    plain = ((x[..., :40, :45] + 1) / 2).clamp(0, 1)
    for a, b in zip(decoded, plain):
        assert torch.equal(a, b)


def test_gamma_one_at_last_step_returns_e2e_image(micro_weights, photo):
    from rdp_bench.codecs.entropy import unpack_strings

    codec = _codec("corrdiff", micro_weights)
    image = [photo(40, 45, seed=8)]
    stream = codec.encode(image, 0)[0]
    gamma = unpack_strings(codec.own_payload(stream))[1]
    forced = gamma[:-2] + np.array([1.0], dtype=">f2").tobytes()
    corrected_one = codec.decode([_repack(stream, gamma=forced)])[0]
    e2e = _codec("corrdiff-e2e", micro_weights)
    assert torch.equal(corrected_one, e2e.decode(e2e.encode(image, 0))[0])
    assert not torch.equal(codec.decode([stream])[0], corrected_one)


@needs_photos
def test_score_job_resumes_to_the_same_weights_and_exports_a_checkpoint_the_codec_loads(micro_weights, tmp_path,
                                                                                        photo):
    from rdp_bench.training.corrdiff import ScoreJobConfig, export_score, train_score

    cfg = ScoreJobConfig(widths=(8, 12, 16), crop=64, batch=2, max_steps=4, val_every=1000, kid_every=0,
                         val_lambdas=(0.002,),
                         compressor=str(micro_weights.parent / "micro-hyperprior.safetensors"))
    quiet = lambda m: None  # noqa: E731
    straight = train_score(cfg, "a", tmp_path, log=quiet)
    train_score(cfg, "b", tmp_path, until_step=2, log=quiet)
    resumed = train_score(cfg, "b", tmp_path, log=quiet)
    sa = torch.load(straight / "state.pt", weights_only=True)
    sb = torch.load(resumed / "state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 4
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    path = export_score(straight, tmp_path / "out", "exported")
    for f in micro_weights.parent.glob("micro-hyperprior.*"):  # the codec finds its compressor beside it
        (tmp_path / "out" / f.name).write_bytes(f.read_bytes())
    out = _codec("corrdiff", path).decode(_codec("corrdiff", path).encode([photo(40, 45)], 1))[0]
    assert out.shape == (3, 40, 45)
    # a new job (a later session, no state) warm-starts from the exported weights
    from dataclasses import replace

    from rdp_bench.codecs.checkpoints import load_state_dict

    warm = train_score(replace(cfg, init=str(path)), "c", tmp_path, until_step=0, log=quiet)
    started = torch.load(warm / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(started[k], v) for k, v in load_state_dict(path).items())
    # ... also onto a continued version of its compressor (same rate points), not onto other rate points
    from rdp_bench.codecs.checkpoints import save_checkpoint

    hp = _micro_compressor()
    with torch.no_grad():
        hp.g_s[0].weight.mul_(1.01)
    newer = save_checkpoint(hp.state_dict(), tmp_path / "newer" / "micro-hyperprior.safetensors",
                            {"codec": "gained-hyperprior", "config": hp.config.to_dict()})
    notes = []
    train_score(replace(cfg, init=str(path), compressor=str(newer)), "d", tmp_path, until_step=0, log=notes.append)
    assert any("fine-tuning" in n for n in notes)
    other = save_checkpoint(hp.state_dict(), tmp_path / "other" / "micro-hyperprior.safetensors",
                            {"codec": "gained-hyperprior", "config": {**hp.config.to_dict(), "lambdas": [0.01, 0.1]}})
    with pytest.raises(ValueError, match="other rate points"):
        train_score(replace(cfg, init=str(path), compressor=str(other), val_lambdas=(0.01,)), "e", tmp_path,
                    until_step=0, log=quiet)
    with pytest.raises(ValueError, match="no rate level at every validation λ"):  # checked before any job folder
        train_score(replace(cfg, compressor=str(other)), "f", tmp_path, until_step=0, log=quiet)
    assert not (tmp_path / "f").exists()


# ----------------------------------------------------------------------------------------------
# --seeds K: other samples of one stream (issue 17, multi-seed decoding)
# ----------------------------------------------------------------------------------------------
def test_a_seed_draws_another_sample_of_the_same_stream_and_seed_0_is_the_streams_own(micro_weights, photo):
    codec = _codec("corrdiff-diffusion-only", micro_weights)
    streams = codec.encode([photo(40, 45, seed=6)], 1)
    own, zero = codec.decode(streams)[0], codec.decode(streams, seed=0)[0]
    one, one_again, two = (codec.decode(streams, seed=s)[0] for s in (1, 1, 2))
    assert torch.equal(own, zero) and torch.equal(one, one_again)
    assert not torch.equal(own, one) and not torch.equal(one, two)


def test_only_seeded_decoders_take_a_seed(micro_weights, photo):
    # corrected: γ were solved on the stream's own noise, so another noise is not a decode of it
    assert not _codec("corrdiff", micro_weights).seeded_decode
    assert not _codec("corrdiff-e2e", micro_weights).seeded_decode
    codec = _codec("corrdiff", micro_weights)
    streams = codec.encode([photo(40, 45, seed=6)], 1)
    with pytest.raises(ValueError, match="one image per stream"):
        codec.decode(streams, seed=1)


def _fake_inception(monkeypatch):
    from rdp_bench.metrics import fid as fid_module

    def features(model, patches, batch_size=16):  # a feature vector per patch, seeded by its pixels
        return np.stack([np.random.default_rng(zlib.crc32(p.numpy().tobytes())).normal(size=64) for p in patches])

    monkeypatch.setattr(fid_module, "inception_model", lambda source, device: None)
    monkeypatch.setattr(fid_module, "inception_features", features)
    fid_module._FEATURE_MEMO.clear()


def test_run_with_seeds_encodes_once_decodes_k_times_and_resumes(micro_weights, photo, tmp_path, monkeypatch):
    import json

    from PIL import Image

    from rdp_bench.bench.runner import RunConfig, run_benchmark
    from rdp_bench.reports.runs import aggregate, load_run

    monkeypatch.setenv("RDP_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RDP_BENCH_OFFLINE", "1")
    _fake_inception(monkeypatch)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(photo(256, 256, seed=i).mul(255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    out = tmp_path / "run"

    def run(seeds):
        cfg = RunConfig(codecs=["corrdiff-diffusion-only", "corrdiff-e2e"], dataset=f"folder:{folder}", out=out,
                        rates=["q1"], metrics=["psnr", "kid"], progress=False, device="cpu", seeds=seeds,
                        codec_options={"checkpoint": str(micro_weights), "steps": 2})
        return run_benchmark(cfg)

    store = run(3)
    rows = store.rows()
    seeds = sorted((r["codec"], r["image_id"], r["seed"]) for r in rows)
    assert seeds == sorted([("corrdiff-diffusion-only", f"{i}.png", s) for i in range(2) for s in range(3)]
                           + [("corrdiff-e2e", f"{i}.png", 0) for i in range(2)])
    # one stream per image, whatever the seeds; the samples differ
    assert len(list((out / "bitstreams" / "corrdiff-diffusion-only").rglob("*.rdpb"))) == 2
    psnr = {r["seed"]: r["psnr"] for r in rows if r["codec"] == "corrdiff-diffusion-only" and r["image_id"] == "0.png"}
    assert len(set(psnr.values())) == 3
    kid_rows = [r for r in store.dataset_rows() if r["codec"] == "corrdiff-diffusion-only" and r["metric"] == "kid"]
    assert sorted(r["seed"] for r in kid_rows) == [0, 1, 2]

    summary = json.loads((out / "summary" / "corrdiff-diffusion-only.json").read_text())
    res, spread = summary["results"], summary["seeds"]
    assert spread["count"] == 3 and spread["std"]["psnr-rgb"][0] > 0
    per_seed = [np.mean([r["psnr"] for r in rows if r["codec"] == "corrdiff-diffusion-only" and r["seed"] == s])
                for s in range(3)]
    assert res["psnr-rgb"][0] == pytest.approx(np.mean(per_seed))
    assert spread["std"]["psnr-rgb"][0] == pytest.approx(np.std(per_seed, ddof=1))
    assert res["kid"][0] == pytest.approx(np.mean([r["value"] for r in kid_rows]))
    assert "seeds" not in json.loads((out / "summary" / "corrdiff-e2e.json").read_text())

    # the report counts images, not (image, seed) rows, and FID/KID is the mean over seeds
    points = aggregate([load_run(out)]).points
    diff = points[points["codec"] == "corrdiff-diffusion-only"].iloc[0]
    assert diff["images"] == 2 and diff["seeds"] == 3
    assert diff["kid"] == pytest.approx(res["kid"][0]) and diff["psnr"] == pytest.approx(res["psnr-rgb"][0])

    # a fourth seed decodes the stored streams again: 2 new rows, nothing re-encoded, nothing else redone
    before = (out / "rows.jsonl").read_text().count("\n")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.rdpb")}
    store = run(4)
    assert (out / "rows.jsonl").read_text().count("\n") == before + 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.rdpb")} == stamps
    added = [r for r in store.rows() if r["seed"] == 3]
    assert {r["codec"] for r in added} == {"corrdiff-diffusion-only"} and "encoding_time" not in added[0]
    assert run(4) and (out / "rows.jsonl").read_text().count("\n") == before + 2  # done: nothing to do


def test_variants_fingerprint_the_weights_their_decode_uses_and_decode_under_default_options(micro_weights, photo):
    from rdp_bench.codecs.corrdiff import CorrDiff
    from rdp_bench.codecs.hyperprior import Hyperprior

    hp = Hyperprior(device="cpu", checkpoint=micro_weights.parent / "micro-hyperprior.safetensors")
    point = hp.rate_point(0)
    corrected, e2e = _codec("corrdiff", micro_weights), _codec("corrdiff-e2e", micro_weights)
    # D(ŷ) alone needs only the compressor; the diffusion decodes need the score net too
    assert e2e.weights_fingerprint(point) == hp.weights_fingerprint(point)
    assert corrected.weights_fingerprint(point) != e2e.weights_fingerprint(point)
    assert _codec("corrdiff-diffusion-only", micro_weights).weights_fingerprint(point) == corrected.weights_fingerprint(point)
    # a stream of 2 steps decodes, bit for bit, with a codec built at its defaults (4 steps)
    codec = _codec("corrdiff", micro_weights, steps=2)
    stream = codec.encode([photo(40, 45, seed=9)], 0)[0]
    fresh = CorrDiff(device="cpu", checkpoint=micro_weights)
    assert fresh.steps != 2 and torch.equal(fresh.decode([stream])[0], codec.encoder_reconstructions[0])


def test_the_variants_rows_name_one_shared_latent_stream(micro_weights, photo):
    import hashlib

    from rdp_bench.codecs.hyperprior import Hyperprior

    image = [photo(40, 45, seed=10)]
    hp = Hyperprior(device="cpu", checkpoint=micro_weights.parent / "micro-hyperprior.safetensors")
    expected = hashlib.sha256(hp.own_payload(hp.encode(image, 1)[0])).hexdigest()[:16]
    for name in ("corrdiff", "corrdiff-diffusion-only", "corrdiff-e2e"):
        assert _codec(name, micro_weights).encode_detailed(image, 1)[0].extras["latent_sha256"] == expected
