"""The classical anchors: JPEG, WebP, AVIF (4:4:4 and 4:2:0), JPEG XL, JPEG 2000."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.JpegImagePlugin import get_sampling

from rdp_bench.codecs import codec_availability, get_codec, list_codecs
from rdp_bench.container import BitstreamError, Container

CLASSICAL = ["jpeg", "webp", "avif", "avif420", "jxl", "jpeg2000"]


def payload(codec, img, rate=-1) -> bytes:
    return Container.unpack(codec.encode([img], rate)[0]).payload


def test_registered_and_available():
    for name in CLASSICAL + ["bpg", "bpg444"]:
        assert name in list_codecs()
        assert codec_availability(name), codec_availability(name).reason


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("h,w", [(1, 1), (17, 19), (34, 33), (2, 3)])
def test_round_trip_odd_sizes(photo, name, h, w):
    codec = get_codec(name)
    img = photo(h, w)
    [bs] = codec.encode([img], -1)
    [out] = codec.decode([bs])
    assert out.shape == img.shape
    if h * w > 100:
        assert (out - img).abs().mean() < 0.05


@pytest.mark.parametrize("name", CLASSICAL)
def test_rate_grows_along_the_sweep(photo, name):
    codec = get_codec(name)
    img = photo(64, 80)
    points = codec.rate_points()
    assert 5 <= len(points) <= 7
    sizes = [len(payload(codec, img, p)) for p in points]
    assert sizes == sorted(sizes), sizes
    assert sizes[-1] > 1.5 * sizes[0]


@pytest.mark.parametrize("name", CLASSICAL)
def test_grayscale_input_stays_grey(photo, name):
    codec = get_codec(name)
    grey = photo(40, 56)[:1].repeat(3, 1, 1)
    [out] = codec.decode(codec.encode([grey], -1))
    assert (out - grey).abs().mean() < 0.03
    assert (out[0] - out[1]).abs().max() <= 3 / 255 + 1e-6


@pytest.mark.parametrize("name", CLASSICAL)
def test_corrupt_payloads_raise(photo, name):
    codec = get_codec(name)
    good = payload(codec, photo(48, 40), 2)
    for bad in (b"", b"garbage" * 5, good[: len(good) // 2], good[:-3], bytes(len(good))):
        with pytest.raises(BitstreamError):
            codec.decode([Container(name, 2, 48, 40, bad).pack()])
    with pytest.raises(BitstreamError):  # valid payload, wrong size in the container header
        codec.decode([Container(name, 2, 40, 48, good).pack()])


# --- the settings each anchor promises, read back from its bitstream -------------------------------
def test_jpeg_is_420():
    data = payload(get_codec("jpeg"), torch.rand(3, 32, 32))
    with Image.open(io.BytesIO(data)) as im:
        assert get_sampling(im) == 2  # 4:2:0


def test_webp_is_lossy_vp8():
    data = payload(get_codec("webp"), torch.rand(3, 32, 32))
    assert data[12:16] == b"VP8 "  # lossy bitstream (lossless would be VP8L)


@pytest.mark.parametrize("name,subsampling", [("avif", (0, 0)), ("avif420", (1, 1))])
def test_avif_chroma_format(photo, name, subsampling):
    data = payload(get_codec(name), photo(32, 32))
    i = data.index(b"av1C")
    flags = data[i + 6]  # high_bitdepth twelve_bit monochrome ss_x ss_y chroma_sample_position(2)
    assert ((flags >> 3) & 1, (flags >> 2) & 1) == subsampling
    assert not flags & 0x40  # 8-bit


def test_jpeg2000_is_irreversible_with_colour_transform(photo):
    data = payload(get_codec("jpeg2000"), photo(64, 64))
    i = data.index(b"\xff\x52")  # COD marker
    # Lcod(2) Scod(1) | progression(1) layers(2) MCT(1) | levels(1) cblk w,h(2) style(1) transform(1)
    assert data[i + 8] == 1, "multiple component transform off"
    assert data[i + 13] == 0, "not the 9/7 irreversible wavelet"
    assert data[i + 9] == 5  # five decomposition levels on normal-sized images


def test_jpeg2000_mct_matters():
    """Why mct=1: at the same ratio Pillow's default mct=0 loses quality on a colour photo."""
    from rdp_bench.datasets import SAMPLES_DIR
    from rdp_bench.imageio import load_image_uint8

    rgb = load_image_uint8(SAMPLES_DIR / "skimage_chelsea.png")[:128, :128]
    errs = {}
    for mct in (0, 1):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG2000", no_jp2=True, irreversible=True, mct=mct,
                                  quality_mode="rates", quality_layers=[30.0])
        buf.seek(0)
        errs[mct] = np.mean((np.asarray(Image.open(buf).convert("RGB")).astype(float) - rgb) ** 2)
    assert errs[1] < 0.8 * errs[0], errs  # > 1 dB


def test_jxl_distance_sweep_labels():
    assert [p.label for p in get_codec("jxl").rate_points()] == ["d18", "d9", "d5", "d2.5", "d1.4", "d0.8"]
