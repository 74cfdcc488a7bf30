import pytest
import torch

from rdp_bench.codecs import codec_availability, get_codec, list_codecs
from rdp_bench.container import BitstreamError, Container


@pytest.mark.parametrize("h,w", [(1, 1), (17, 33), (1023, 767), (2, 3)])
def test_odd_sizes_round_trip(photo, h, w):
    codec = get_codec("jpeg")
    img = photo(h, w)
    [bs] = codec.encode([img], "q75")
    [out] = codec.decode([bs])
    assert out.shape == img.shape
    if h * w > 1000:
        assert (out - img).abs().mean() < 0.05


def test_batch_of_mixed_sizes(photo):
    codec = get_codec("jpeg")
    imgs = [photo(16, 16), photo(40, 24, seed=1)]
    outs = codec.decode(codec.encode(imgs, 0))
    assert [o.shape for o in outs] == [i.shape for i in imgs]


def test_rate_grows_with_quality(photo):
    codec = get_codec("jpeg")
    img = photo(64, 64)
    sizes = [len(codec.encode([img], p)[0]) for p in codec.rate_points()]
    assert sizes == sorted(sizes)


def test_valid_container_with_garbage_payload_raises(photo):
    codec = get_codec("jpeg")
    bad = Container("jpeg", 0, 8, 8, b"not a jpeg at all").pack()
    with pytest.raises(BitstreamError):
        codec.decode([bad])
    other = Container("jpeg", 99, 8, 8, b"x").pack()
    with pytest.raises(BitstreamError, match="rate point"):
        codec.decode([other])


def test_registry_lists_available_codecs():
    assert "jpeg" in list_codecs()
    assert codec_availability("jpeg")


def test_rejects_non_rgb():
    with pytest.raises(ValueError):
        get_codec("jpeg").encode([torch.rand(1, 8, 8)], 0)
