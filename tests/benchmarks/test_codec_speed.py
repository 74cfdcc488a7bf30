"""Encode and decode time of the BPG and classical codecs on one sample photo (per megapixel).

Disabled by default (``--benchmark-disable`` in pyproject: each function then runs once as a plain
test). Measure with::

    pytest tests/benchmarks/test_codec_speed.py --benchmark-enable \
        --benchmark-json results/benchmarks/classical_codecs.json

``extra_info`` of each entry holds the image size, the payload size and ``seconds_per_megapixel``
(mean time / megapixels). Times are wall-clock on whatever machine runs it; note its load.
"""

import pytest

from rdp_bench.codecs import get_codec
from rdp_bench.container import rate_of
from rdp_bench.datasets import SAMPLES_DIR
from rdp_bench.imageio import load_image

CODECS = ["bpg", "bpg444", "jpeg", "webp", "avif", "avif420", "jxl", "jpeg2000"]
IMAGE = "skimage_chelsea.png"  # 451x300 (0.135 MP): keeps x265 veryslow and AVIF affordable
RATE_INDEX = 3  # a mid-sweep point, ~0.3-0.8 bpp


@pytest.fixture(scope="module")
def image():
    return load_image(SAMPLES_DIR / IMAGE)


def _record(benchmark, img, bitstream: bytes) -> None:
    _, h, w = img.shape
    mp = h * w / 1e6
    benchmark.extra_info.update({"image": IMAGE, "height": h, "width": w, "megapixels": mp,
                                 **rate_of(bitstream).columns()})
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["seconds_per_megapixel"] = stats.stats.mean / mp


@pytest.mark.benchmark(group="encode")
@pytest.mark.parametrize("name", CODECS)
def test_encode_speed(benchmark, image, name):
    codec = get_codec(name)
    point = codec.rate_points()[RATE_INDEX]
    [bitstream] = benchmark.pedantic(codec.encode, args=([image], point), rounds=3, iterations=1, warmup_rounds=0)
    _record(benchmark, image, bitstream)
    assert len(bitstream) > 0


@pytest.mark.benchmark(group="decode")
@pytest.mark.parametrize("name", CODECS)
def test_decode_speed(benchmark, image, name):
    codec = get_codec(name)
    [bitstream] = codec.encode([image], codec.rate_points()[RATE_INDEX])
    [out] = benchmark.pedantic(codec.decode, args=([bitstream],), rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, image, bitstream)
    assert out.shape == image.shape
