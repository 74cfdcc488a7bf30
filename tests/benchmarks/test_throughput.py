"""Throughput of every registered codec, and what the harness costs on top of it.

* ``test_encode_throughput`` / ``test_decode_throughput``: megapixels/s on CPU at batch 1 and 8
  (same-shaped crops of the bundled photos, the codec's middle rate point, weights loaded beforehand).
* ``test_harness_overhead``: wall time of a whole ``run_benchmark`` (PNG loading, hashing, bitstream
  I/O, decoding from disk, PSNR/MS-SSIM, the results store, provenance) against the same codec's pure
  encode+decode time on the same items; ``extra_info["overhead_share"]`` = 1 - codec / harness.
* ``test_gpu_decode``: decode seconds per 768x512 image at batch 1, 8 and 32 for the codecs that want a
  GPU, and the achieved FLOP/s of the decoder (counted with ``torch.utils.flop_counter``, so UNet
  dominated) against the GPU's peak. Skipped without CUDA.

Codecs that are unavailable here (missing weights, binaries) are skipped with the reason. Disabled by
default (``--benchmark-disable``): each function then runs once, on 64x64 crops and batch 8 only, as a
cheap test. Measured, diffusion codecs on a CPU get 64x64 crops, one round, and one harness image (each
entry's ``extra_info`` says which).
Measure with::

    pytest tests/benchmarks/test_throughput.py --benchmark-enable --benchmark-json results/benchmarks/throughput.json

Times are wall-clock on whatever machine runs it; ``extra_info`` records threads, CPU count and load.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from rdp_bench.codecs import CodecUnavailable, codec_availability, codec_class, get_codec, list_codecs
from rdp_bench.datasets import SAMPLES_DIR
from rdp_bench.imageio import load_image, save_image

BATCHES = (1, 8)
GPU_BATCHES = (1, 8, 32)
#: crop side when measuring (--benchmark-enable) and when only checking that the code runs
CROP, SMOKE_CROP = 128, 64
HARNESS_CROP, HARNESS_IMAGES = 192, 4  # >= 161 px so MS-SSIM is really computed
#: dense peak TFLOP/s by GPU name and arithmetic (vendor datasheets, SXM parts, no sparsity)
PEAK_TFLOPS = {
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
}
SOURCES = ["skimage_coffee.png", "skimage_rocket.png", "sklearn_flower.png", "skimage_chelsea.png"]


def _enabled(config: pytest.Config) -> bool:
    # pyproject's addopts disables; --benchmark-enable on the command line wins over it
    return bool(config.getoption("benchmark_enable", default=False)) or not config.getoption(
        "benchmark_disable", default=True)


def _slow_on_this_device(codec) -> bool:
    # diffusion decoders take seconds per 64x64 crop on a CPU: measured on smaller inputs there
    return getattr(codec, "wants_gpu", False) and codec.device.type == "cpu"


def _machine() -> dict:
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0]}


def _crops(side: int, count: int) -> list[torch.Tensor]:
    """``count`` side x side crops, two from each of four sample photos."""
    out = []
    for i in range(count):
        img = load_image(SAMPLES_DIR / SOURCES[i % len(SOURCES)])
        x = side * (i // len(SOURCES))
        out.append(img[:, :side, x : x + side].contiguous())
    return out


_CODECS: dict[tuple[str, str], object] = {}


def _ready_codec(name: str, device: str = "cpu", **options):
    """The codec with its weights loaded (one encode + decode outside any timing), or a skip."""
    key = (name, device, tuple(sorted(options.items())))
    if key in _CODECS:
        return _CODECS[key]
    status = codec_availability(name)
    if not status:
        pytest.skip(f"{name}: {status.reason}")
    try:
        codec = get_codec(name, device=device, **options)
        point = _middle(codec)
        codec.decode(codec.encode(_crops(SMOKE_CROP, 1), point))
    except CodecUnavailable as exc:  # e.g. weights that only a download would bring
        pytest.skip(str(exc))
    _CODECS[key] = codec
    return codec


def _rounds(codec) -> int:
    return 1 if _slow_on_this_device(codec) else 3  # one round of a many-second call is a stable mean


def _middle(codec):
    points = codec.rate_points()
    return points[len(points) // 2]


def _side(config: pytest.Config, batch: int, codec) -> int:
    if not _enabled(config) and batch == 1:
        pytest.skip("batch 1 runs with --benchmark-enable (batch 8 exercises the same code)")
    return CROP if _enabled(config) and not _slow_on_this_device(codec) else SMOKE_CROP


def _record(benchmark, batch: int, side: int, codec) -> None:
    mp = batch * side * side / 1e6
    benchmark.extra_info.update({"batch": batch, "crop": side, "megapixels": mp, "device": str(codec.device),
                                 "rate_point": _middle(codec).label, **_machine()})
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["megapixels_per_s"] = mp / stats.stats.mean
        benchmark.extra_info["seconds_per_image"] = stats.stats.mean / batch


@pytest.mark.benchmark(group="encode-throughput")
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", list_codecs())
def test_encode_throughput(benchmark, request, name, batch):
    if not _enabled(request.config) and batch == 1:
        pytest.skip("batch 1 runs with --benchmark-enable (batch 8 exercises the same code)")
    codec = _ready_codec(name)
    side = _side(request.config, batch, codec)
    images, point = _crops(side, batch), _middle(codec)
    bitstreams = benchmark.pedantic(codec.encode, args=(images, point), rounds=_rounds(codec), iterations=1)
    assert len(bitstreams) == batch and all(len(b) > 0 for b in bitstreams)
    _record(benchmark, batch, side, codec)


@pytest.mark.benchmark(group="decode-throughput")
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", list_codecs())
def test_decode_throughput(benchmark, request, name, batch):
    if not _enabled(request.config) and batch == 1:
        pytest.skip("batch 1 runs with --benchmark-enable (batch 8 exercises the same code)")
    codec = _ready_codec(name)
    side = _side(request.config, batch, codec)
    bitstreams = codec.encode(_crops(side, batch), _middle(codec))
    images = benchmark.pedantic(codec.decode, args=(bitstreams,), rounds=_rounds(codec), iterations=1)
    assert [tuple(im.shape) for im in images] == [(3, side, side)] * batch
    _record(benchmark, batch, side, codec)


@pytest.mark.benchmark(group="harness-overhead")
@pytest.mark.parametrize("name", list_codecs())
def test_harness_overhead(benchmark, request, tmp_path, name):
    from rdp_bench.bench.runner import RunConfig, run_benchmark

    codec = _ready_codec(name)
    if not _enabled(request.config):
        side, count = SMOKE_CROP, 2
    else:
        side, count = HARNESS_CROP, 1 if _slow_on_this_device(codec) else HARNESS_IMAGES
    images = _crops(side, count)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(images):
        save_image(img, folder / f"crop{i}.png")
    point = _middle(codec)

    # the codec alone, warm, one image per call as the harness does with --batch-size 1
    t0 = time.perf_counter()
    for img in images:
        codec.decode(codec.encode([img], point))
    codec_s = time.perf_counter() - t0

    runs = iter(range(10**6))

    def fresh_run():
        return (RunConfig(codecs=[name], dataset=f"folder:{folder}", out=tmp_path / f"run{next(runs)}",
                          rates=[point.label], device="cpu", progress=False),), {}

    store = benchmark.pedantic(run_benchmark, setup=fresh_run, rounds=1, iterations=1)
    rows = store.rows()
    assert len(rows) == count
    recorded = sum(r["encoding_time"] + r["decoding_time"] for r in rows)
    stats = getattr(benchmark, "stats", None)
    harness_s = stats.stats.mean if stats is not None and getattr(stats, "stats", None) is not None else None
    benchmark.extra_info.update({"images": count, "crop": side, "rate_point": point.label,
                                 "metrics": "psnr,ms-ssim", "codec_seconds": codec_s,
                                 "codec_seconds_recorded_in_rows": recorded, **_machine()})
    if harness_s:
        benchmark.extra_info.update({
            "harness_seconds": harness_s,
            "overhead_share": 1 - codec_s / harness_s,
            # the same, but with the codec time the harness itself measured (includes lazy weight loads)
            "overhead_share_vs_recorded": 1 - recorded / harness_s,
        })


def _peak(device_name: str, arithmetic: str) -> float | None:
    for key, table in PEAK_TFLOPS.items():
        if key in device_name:
            return table.get(arithmetic)
    return None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU)")
@pytest.mark.benchmark(group="gpu-decode-768x512")
@pytest.mark.parametrize("amp", [None, "bf16"])
@pytest.mark.parametrize("batch", GPU_BATCHES)
@pytest.mark.parametrize("name", [n for n in list_codecs() if getattr(codec_class(n), "wants_gpu", False)])
def test_gpu_decode(benchmark, name, batch, amp):
    from torch.utils.flop_counter import FlopCounterMode

    codec = _ready_codec(name, device="cuda", **({"amp": amp} if amp else {}))
    photo = load_image(SAMPLES_DIR / "lomiri16_sunset_by_Aitzol_Berasategi.png")[:, :512, :768].contiguous()
    bitstream = codec.encode([photo], _middle(codec))[0]
    bitstreams = [bitstream] * batch

    def decode():
        out = codec.decode(bitstreams)
        torch.cuda.synchronize()
        return out

    decode()  # warm-up: cuDNN autotuning, allocator
    with FlopCounterMode(display=False) as counter:
        codec.decode([bitstream])
    flops_per_image = counter.get_total_flops()
    out = benchmark.pedantic(decode, rounds=3, iterations=1)
    assert len(out) == batch and tuple(out[0].shape) == (3, 512, 768)
    device_name = torch.cuda.get_device_name()
    arithmetic = amp or ("tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32")
    benchmark.extra_info.update({"batch": batch, "amp": amp, "device": device_name, "height": 512, "width": 768,
                                 "decode_flops_per_image": flops_per_image, "arithmetic": arithmetic,
                                 "date": time.strftime("%Y-%m-%d", time.gmtime()),
                                 "steps": getattr(codec, "steps", None)})
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        seconds = stats.stats.mean
        achieved = flops_per_image * batch / seconds / 1e12
        peak = _peak(device_name, arithmetic)
        benchmark.extra_info.update({"seconds_per_image": seconds / batch, "achieved_tflops": achieved,
                                     "peak_tflops": peak, "share_of_peak": achieved / peak if peak else None})
