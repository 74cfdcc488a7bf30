import pytest
import torch
from compressai.entropy_models import EntropyBottleneck

from rdp_bench.codecs.checkpoints import load_state_dict, read_manifest, save_checkpoint
from rdp_bench.codecs.entropy import (
    FactorizedCoder, GaussianLatentCoder, bits_from_likelihoods, crop, pack_strings, pad_to_multiple,
    unpack_strings,
)
from rdp_bench.container import BitstreamError


def _latent(n=3, c=8, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.randn(n, c, h, w, generator=g) * 1.2)
    means = torch.randn(n, c, h, w, generator=g) * 2
    y = means + scales * torch.randn(n, c, h, w, generator=g)
    return y, scales, means


def test_gaussian_round_trip_exact():
    coder = GaussianLatentCoder()
    y, scales, means = _latent()
    strings = coder.compress(y, scales, means)
    assert len(strings) == 3
    y_hat = coder.decompress(strings, scales, means)
    assert torch.equal(y_hat, torch.round(y - means) + means)


def test_gaussian_batch_invariance():
    coder = GaussianLatentCoder()
    y, scales, means = _latent(n=8, seed=1)
    batch = coder.compress(y, scales, means)
    single = [coder.compress(y[i : i + 1], scales[i : i + 1], means[i : i + 1])[0] for i in range(8)]
    assert batch == single
    for i in range(8):
        out = coder.decompress([batch[i]], scales[i : i + 1], means[i : i + 1])
        assert torch.equal(out[0], coder.decompress(batch, scales, means)[i])


def test_real_bits_close_to_estimate():
    coder = GaussianLatentCoder()
    y, scales, means = _latent(n=1, c=32, h=32, w=32, seed=2)
    strings = coder.compress(y, scales, means)
    y_hat = torch.round(y - means) + means
    estimated = bits_from_likelihoods(coder.likelihood(y_hat, scales, means)).item()
    real = 8 * len(strings[0])
    assert abs(real - estimated) / estimated < 0.02, (real, estimated)


def test_outliers_escape_coded():
    coder = GaussianLatentCoder()
    y = torch.tensor([[[[1e4, -3e3, 0.2]]]])
    scales = torch.full_like(y, 0.2)
    strings = coder.compress(y, scales)
    assert torch.equal(coder.decompress(strings, scales), torch.round(y))


def test_factorized_from_entropy_bottleneck_round_trip():
    torch.manual_seed(0)
    eb = EntropyBottleneck(6)
    coder = FactorizedCoder.from_entropy_bottleneck(eb)
    z = torch.randn(4, 6, 3, 5) * 3
    strings = coder.compress(z)
    z_hat = coder.decompress(strings, (3, 5))
    assert torch.equal(z_hat, coder.quantize(z))
    # identical to CompressAI's own coder with the same tables
    eb.update(force=True)
    assert strings == eb.compress(z)


def test_factorized_from_cdf_fn_matches_estimated_bits():
    scales = torch.tensor([0.5, 1.0, 3.0, 10.0])
    dist = torch.distributions.Laplace(0.0, 1.0)

    def cdf(x):  # channels x N
        return dist.cdf(x / scales[:, None])

    coder = FactorizedCoder.from_cdf_fn(cdf, 4)
    g = torch.Generator().manual_seed(3)
    z = torch.distributions.Laplace(torch.zeros(1, 4, 24, 24), scales.view(1, 4, 1, 1).expand(1, 4, 24, 24)).sample()
    strings = coder.compress(z)
    z_hat = coder.decompress(strings, (24, 24))
    assert torch.equal(z_hat, torch.round(z))
    lik = cdf((z_hat[0] + 0.5).reshape(4, -1)) - cdf((z_hat[0] - 0.5).reshape(4, -1))
    estimated = -torch.log2(lik).sum().item()
    assert abs(8 * len(strings[0]) - estimated) / estimated < 0.03


def test_pack_unpack_and_corruption():
    parts = [b"abc", b"", bytes(range(200)) * 3]
    data = pack_strings(parts)
    assert unpack_strings(data) == parts
    with pytest.raises(BitstreamError):
        unpack_strings(data[:-3])
    with pytest.raises(BitstreamError):
        unpack_strings(data + b"\0")
    for pos in (0, 2, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x41
        with pytest.raises(BitstreamError):
            unpack_strings(bytes(bad))
    with pytest.raises(BitstreamError):
        unpack_strings(data, expected_count=2)
    with pytest.raises(BitstreamError):
        unpack_strings(b"")


def test_corrupt_strings_do_not_crash_decoder():
    coder = GaussianLatentCoder()
    y, scales, means = _latent(n=1, c=16, h=8, w=8)
    string = coder.compress(y, scales, means)[0]
    for junk in (b"", string[: len(string) // 3], bytes(reversed(string)), b"\xff" * 64):
        out = coder.decompress([junk], scales, means)  # garbage values, but no crash or hang
        assert out.shape == y.shape


def test_pad_crop():
    x = torch.rand(2, 3, 37, 70)
    padded, size = pad_to_multiple(x, 64)
    assert padded.shape[-2:] == (64, 128) and size == (37, 70)
    assert torch.equal(crop(padded, size), x)
    tiny = torch.rand(3, 5, 9)
    padded, size = pad_to_multiple(tiny, 16)
    assert padded.shape == (3, 16, 16) and torch.equal(crop(padded, size), tiny)


def test_checkpoint_round_trip(tmp_path):
    state = {"a.weight": torch.randn(4, 3), "b.idx": torch.arange(5, dtype=torch.int32)}
    path = save_checkpoint(state, tmp_path / "m", {"lambda": 0.5})
    loaded = load_state_dict(path)
    assert torch.allclose(loaded["a.weight"], state["a.weight"], atol=1e-2) and loaded["b.idx"].dtype == torch.int32
    manifest = read_manifest(path)
    assert manifest["lambda"] == 0.5 and len(manifest["sha256"]) == 64
    with pytest.raises(ValueError):
        load_state_dict(path, expected_sha256="0" * 64)
    torch.save({"state_dict": state}, tmp_path / "up.ckpt")
    assert torch.equal(load_state_dict(tmp_path / "up.ckpt")["a.weight"], state["a.weight"])
