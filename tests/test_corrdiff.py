"""CorrDiff: γ solvers, γ quantizers, the corrected sampling loop, and the codec round trip."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from rdp_bench.codecs.corrdiff_parts import (
    GAMMA_CLIP, QUANTIZERS, E2EDecoder, Float16Gamma, GammaLayout, Uniform8Gamma, corrected_sample, get_quantizer,
    mix, mse_plus_msssim, solve_gamma_gradient, solve_gamma_mse,
)
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


def test_e2e_decoder_shapes():
    d = E2EDecoder(16, hidden=(24, 16, 12, 8))
    assert d.upsample_factor == 16
    assert d(torch.zeros(2, 16, 3, 5)).shape == (2, 3, 48, 80)


# ----------------------------------------------------------------------------------------------
# The codec (a micro random-init checkpoint: the mechanics, not the quality, are under test)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def micro_weights(tmp_path_factory):
    pytest.importorskip("rdp_bench.codecs.diffusion.model")
    from rdp_bench.codecs.corrdiff import CorrDiffModel
    from rdp_bench.codecs.diffusion.compressor import CompressorConfig
    from rdp_bench.codecs.diffusion.model import CDCConfig
    from rdp_bench.codecs.diffusion.unet import UNetConfig
    from rdp_bench.training.corrdiff import save_corrdiff_checkpoint

    torch.manual_seed(0)
    cfg = CDCConfig(UNetConfig(dim=8, dim_mults=(1, 2), context_channels=8, context_dim_mults=(1, 2)),
                    CompressorConfig(dim=8, dim_mults=(1, 2), reverse_dim_mults=(2, 1), hyper_dims_mults=(2, 2, 2),
                                     out_channels=8))
    model = CorrDiffModel(cfg, e2e_hidden=(16, 8))
    folder = tmp_path_factory.mktemp("corrdiff_weights")
    save_corrdiff_checkpoint(model, folder, "micro", 0.01, {"note": "random init, for tests"})
    return folder


def _codec(name, folder, **options):
    from rdp_bench.codecs.corrdiff import CorrDiff, CorrDiffDiffusionOnly, CorrDiffE2E

    cls = {"corrdiff": CorrDiff, "corrdiff-diffusion-only": CorrDiffDiffusionOnly, "corrdiff-e2e": CorrDiffE2E}[name]
    return cls(device="cpu", weights_dir=folder, steps=options.pop("steps", 3), **options)


def _repack(bitstream: bytes, **changes) -> bytes:
    """Rewrite the CorrDiff payload (valid CRCs) with some of its parts replaced."""
    from rdp_bench.codecs.corrdiff import _HEADER
    from rdp_bench.codecs.entropy import pack_strings, unpack_strings
    from rdp_bench.container import Container

    rec = Container.unpack(bitstream)
    header, gamma, z, y = unpack_strings(rec.payload)
    parts = {"header": header, "gamma": gamma, "z": z, "y": y, **changes}
    payload = pack_strings([parts["header"], parts["gamma"], parts["z"], parts["y"]])
    return Container(rec.codec, rec.rate_id, rec.height, rec.width, payload).pack()


@pytest.mark.parametrize("batch", [1, 8])
def test_codec_decoder_equals_encoder_trajectory_bit_exact(micro_weights, photo, batch):
    # batch 8 also runs the UNet in chunks of 3 images (max_batch_pixels), as on a GPU with big images
    codec = _codec("corrdiff", micro_weights, max_batch_pixels=3 * 32 * 48 if batch == 8 else 10**8)
    images = [photo(32, 45, seed=i) for i in range(batch)]
    streams = codec.encode(images, 0)
    decoded = codec.decode(streams)
    assert len(decoded) == batch
    for enc_img, dec_img, img in zip(codec.encoder_reconstructions, decoded, images):
        assert dec_img.shape == img.shape
        assert torch.equal(enc_img, dec_img)


def test_gamma_bits_are_in_the_container_and_counted(micro_weights, photo):
    from rdp_bench.codecs.entropy import unpack_strings
    from rdp_bench.container import Container, bits_per_pixel

    images = [photo(32, 45, seed=3)]
    base = _codec("corrdiff-diffusion-only", micro_weights).encode(images, 0)[0]
    sizes = {}
    for gran, prec, per_value in [("scalar", "float16", 2), ("channel", "float16", 2), ("tile", "bfloat16", 2),
                                  ("scalar", "uint8", 1)]:
        codec = _codec("corrdiff", micro_weights, gamma_granularity=gran, gamma_precision=prec, gamma_tile=16)
        enc = codec.encode_detailed(images, 0)[0]
        rec = Container.unpack(enc.bitstream)
        _, gamma, z, y = unpack_strings(rec.payload)
        count = {"scalar": 1, "channel": 3, "tile": 2 * 3}[gran]
        assert len(gamma) == 3 * count * per_value  # 3 steps
        assert enc.extras["bpp_gamma"] == pytest.approx(8 * len(gamma) / (32 * 45))
        # same ŷ strings as the diffusion-only stream; the container grows by exactly the γ block
        _, no_gamma, z0, y0 = unpack_strings(Container.unpack(base).payload)
        assert (z, y, no_gamma) == (z0, y0, b"")
        name_diff = len("corrdiff-diffusion-only") - len("corrdiff")
        assert len(enc.bitstream) == len(base) - name_diff + len(gamma)
        assert bits_per_pixel(enc.bitstream, 32, 45) == pytest.approx(8 * len(enc.bitstream) / (32 * 45))
        sizes[(gran, prec)] = len(enc.bitstream)
        if gran == "tile":  # the layout that depends on the image size must decode too
            assert torch.equal(codec.decode([enc.bitstream])[0], codec.encoder_reconstructions[0])
    assert sizes[("scalar", "uint8")] < sizes[("scalar", "float16")] < sizes[("channel", "float16")]


def test_corrupt_and_truncated_streams_are_rejected(micro_weights, photo):
    codec = _codec("corrdiff", micro_weights)
    stream = codec.encode([photo(32, 45, seed=5)], 0)[0]
    for bad in (stream[:-1], stream[: len(stream) // 2], stream[:10]):
        with pytest.raises(BitstreamError):
            codec.decode([bad])
    flipped = bytearray(stream)
    flipped[len(stream) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        codec.decode([bytes(flipped)])
    with pytest.raises(BitstreamError):  # a valid container of another variant
        codec.decode(_codec("corrdiff-e2e", micro_weights).encode([photo(32, 45, seed=5)], 0))
    from rdp_bench.codecs.entropy import unpack_strings
    from rdp_bench.container import Container

    gamma = unpack_strings(Container.unpack(stream).payload)[1]
    with pytest.raises(BitstreamError, match="gamma"):  # checksums fine, γ block one value short
        codec.decode([_repack(stream, gamma=gamma[:-2])])
    with pytest.raises(BitstreamError, match="non-finite"):
        codec.decode([_repack(stream, gamma=gamma[:-2] + b"\x7e\x00")])
    with pytest.raises(BitstreamError):  # unknown payload version
        codec.decode([_repack(stream, header=b"\x09\x03\x00\x00\x00\x40")])


def test_diffusion_only_equals_plain_ddim_decode(micro_weights, photo):
    from rdp_bench.codecs.corrdiff import NOISE_SCALE, _load_model, _manifests
    from rdp_bench.codecs.diffusion.compressor import LatentCoder
    from rdp_bench.codecs.diffusion.sampler import DDIMSampler
    from rdp_bench.codecs.entropy import unpack_strings
    from rdp_bench.container import Container
    import json

    codec = _codec("corrdiff-diffusion-only", micro_weights)
    images = [photo(32, 45, seed=6), photo(32, 45, seed=7)]
    streams = codec.encode(images, 0)
    decoded = codec.decode(streams)
    # an independent plain DDIM decode (the loop of the sampler's docstring) of the same ŷ
    m = _manifests(micro_weights)[0]
    model = _load_model(m["_path"], m["sha256"], json.dumps(m["config"], sort_keys=True))
    coder = LatentCoder(model.cdc.context_fn)
    parts = [unpack_strings(Container.unpack(s).payload) for s in streams]
    with torch.no_grad():
        y_hat = coder.decode([p[2] for p in parts], [p[3] for p in parts], (2, 3))
        context = model.cdc.context_fn.synthesis(y_hat)
        sampler = DDIMSampler(model.cdc.train_alphas_cumprod, 3, eta=0.0)
        seeds = [zlib.crc32(p[3]) & 0x7FFFFFFF for p in parts]
        x = sampler.initial_noise((2, 3, 32, 48), seeds, NOISE_SCALE)
        for t, t_prev in sampler.timesteps:
            x0 = model.cdc.denoise(x, sampler.time_input(t, 2, "cpu"), context).clamp(-1, 1)
            x = sampler.step(x, x0, t, t_prev)
    plain = ((x[..., :32, :45] + 1) / 2).clamp(0, 1)
    for a, b in zip(decoded, plain):
        assert torch.equal(a, b)


def test_gamma_one_at_last_step_returns_e2e_image(micro_weights, photo):
    from rdp_bench.codecs.entropy import unpack_strings
    from rdp_bench.container import Container

    codec = _codec("corrdiff", micro_weights)
    image = [photo(32, 45, seed=8)]
    stream = codec.encode(image, 0)[0]
    gamma = unpack_strings(Container.unpack(stream).payload)[1]
    forced = gamma[:-2] + np.array([1.0], dtype=">f2").tobytes()
    corrected_one = codec.decode([_repack(stream, gamma=forced)])[0]
    e2e = _codec("corrdiff-e2e", micro_weights)
    assert torch.equal(corrected_one, e2e.decode(e2e.encode(image, 0))[0])
    assert not torch.equal(codec.decode([stream])[0], corrected_one)


@needs_photos
def test_phase2_training_smoke_logs_both_stages(tmp_path):
    import json

    from rdp_bench.training.corrdiff import phase1_checkpoints, train_phase2

    lines: list[str] = []
    out = train_phase2(phase1_checkpoints()[0], tmp_path, "smoke", max_steps=2, crop=64, crop_d=64,
                       batch=2, log=lines.append)
    history = json.loads(out.with_suffix(".json").read_text())["training"]["history"]
    assert [h["step"] for h in history["e2e_warmup"]] == [2] and [h["step"] for h in history["joint"]] == [2]
    assert {"e2e_psnr", "bpp"} <= set(history["e2e_warmup"][0])
    assert {"corr_psnr", "e2e_psnr", "one_minus_ssim"} <= set(history["joint"][0])
    assert any(line.startswith("(smoke) autoencoder step 2:") for line in lines)
    assert any(line.startswith("(smoke) joint step 2:") for line in lines)


def test_score_stage_trains_the_unet_and_leaves_the_bitstream_parts_alone():
    from rdp_bench.codecs.corrdiff import CorrDiffModel
    from rdp_bench.codecs.diffusion.model import CDCConfig
    from rdp_bench.training.corrdiff import BITSTREAM_PARTS, _Budget, _score_stage

    class Data:
        def sample(self, n):
            return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(n))

    torch.manual_seed(0)
    model = CorrDiffModel(CDCConfig.tiny())
    before = {k: v.clone() for k, v in model.cdc.state_dict().items()}
    history: list = []
    ema = _score_stage(model, _Budget(10.0, 3.0, 3, 1), Data(), 2, 1e-3, 0.9, history, lambda m: None, "t")
    after = model.cdc.state_dict()
    bitstream = [k for k in after if k.startswith(tuple(f"context_fn.{p}." for p in BITSTREAM_PARTS))]
    assert bitstream and all(torch.equal(before[k], after[k]) for k in bitstream)
    unet = [k for k in after if k.startswith("denoise_fn.")]
    assert any(not torch.equal(before[k], after[k]) for k in unet)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again for the joint stage
    assert history[-1]["step"] == 3 and ema is not model.cdc


@needs_photos
def test_staged_recipe_writes_cdc_and_corrdiff_checkpoints_the_codecs_load(tmp_path, photo):
    import json

    from rdp_bench.codecs.cdc import CDC
    from rdp_bench.training.corrdiff import train_chain

    paths = train_chain((0.02, 0.005), tmp_path / "corrdiff", tmp_path / "cdc", max_steps=2, crop=64, batch=2,
                        joint_crop=64, joint_batch=1, log=lambda m: None)
    assert [p.parent.name for p in paths] == ["cdc", "cdc", "corrdiff", "corrdiff"]
    later = json.loads(paths[1].with_suffix(".json").read_text())
    assert later["phase"] == "score" and later["warm_started_from_lambda"] == 0.02
    corr = json.loads(paths[3].with_suffix(".json").read_text())
    assert corr["phase1"]["file"] == paths[1].name and corr["rate_weight"] == 0.005
    image = [photo(40, 56, seed=3)]
    for codec in (CDC(weights_dir=tmp_path / "cdc", steps=1), _codec("corrdiff", tmp_path / "corrdiff")):
        assert len(codec.rate_points()) == 2
        out = codec.decode(codec.encode(image, 1))[0]
        assert out.shape == image[0].shape


@needs_photos
def test_staged_recipe_warm_starts_from_a_corrdiff_checkpoint(tmp_path):
    import json

    from rdp_bench.training.corrdiff import train_chain

    first = train_chain((0.02,), tmp_path / "a", tmp_path / "a_cdc", max_steps=1, crop=64, batch=1, joint_crop=64,
                        joint_batch=1, log=lambda m: None)[-1]
    again = train_chain((0.01,), tmp_path / "b", tmp_path / "b_cdc", max_steps=1, crop=64, batch=1, joint_crop=64,
                        joint_batch=1, init=first, log=lambda m: None)
    cdc = json.loads(again[0].with_suffix(".json").read_text())
    assert cdc["warm_started_from_lambda"] == 0.02 and cdc["warm_started_from_file"]["file"] == first.name
    with pytest.raises(ValueError, match="CorrDiff checkpoint"):
        train_chain((0.01,), tmp_path / "c", tmp_path / "c_cdc", max_steps=1, init=again[0], log=lambda m: None)
