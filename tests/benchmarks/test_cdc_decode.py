"""CDC decode time per image: one image per UNet batch vs eight (same-shaped 128x128 crops of a sample photo).

Uses the bundled tiny checkpoint (first rate point) with 8 DDIM steps (the ``cdc`` default) on the device
the harness would pick (CPU here: this task has no GPU; on a GPU machine the same file measures CUDA).
Disabled by default (each function runs once as a plain test). Measure with::

    pytest tests/benchmarks/test_cdc_decode.py --benchmark-enable \
        --benchmark-json results/benchmarks/cdc_decode.json

``extra_info`` holds the batch size, the device, the steps and ``seconds_per_image`` (mean time / batch).
Times are wall-clock; the machine's load at the time matters (note it). ``CDC_BENCH_THREADS=1`` pins the
torch thread count (on an oversubscribed machine two spinning OpenMP threads are much slower than one).
"""

import os

import pytest
import torch

from rdp_bench.codecs import codec_availability, get_codec
from rdp_bench.datasets import SAMPLES_DIR
from rdp_bench.imageio import load_image

IMAGE = "skimage_coffee.png"
CROP = 128
STEPS = 8

pytestmark = pytest.mark.skipif(not codec_availability("cdc"), reason="no bundled CDC checkpoints")


@pytest.fixture(scope="module")
def setup():
    if os.environ.get("CDC_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["CDC_BENCH_THREADS"]))
    codec = get_codec("cdc", steps=STEPS)
    img = load_image(SAMPLES_DIR / IMAGE)
    crops = [img[:, y : y + CROP, x : x + CROP] for y in (0, CROP) for x in (0, CROP, 2 * CROP, 3 * CROP)]
    point = codec.rate_points()[0]
    bitstreams = codec.encode(crops, point)
    codec.decode(bitstreams[:1])  # load weights and tables outside the timing
    return codec, bitstreams


@pytest.mark.benchmark(group="cdc-decode")
@pytest.mark.parametrize("batch", [1, 8])
def test_cdc_decode_per_image(benchmark, setup, batch):
    codec, bitstreams = setup
    chunk = bitstreams[:batch]
    out = benchmark.pedantic(codec.decode, args=(chunk,), rounds=3, iterations=1, warmup_rounds=0)
    assert len(out) == batch and out[0].shape == (3, CROP, CROP)
    benchmark.extra_info.update({"batch": batch, "crop": CROP, "steps": STEPS, "device": str(codec.device),
                                 "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()})
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["seconds_per_image"] = stats.stats.mean / batch
