"""Batched diffusion decoding on a GPU (issue 13): seconds per image, images/s and peak GPU memory of the
``cdc`` and ``corrdiff`` decoders per batch size and precision, and how far a GPU decode of streams that a CPU
encoded lands from the CPU's own decode of them.

    python -m rdp_bench.bench.gpu_decode --prepare .gpu_decode                  # here, on the CPU
    python -m rdp_bench.bench.gpu_decode --prepared .gpu_decode --out gpu_decode.json   # on the GPU

``--prepare DIR`` encodes ``--images`` crops of the bundled sample photos with each codec (its middle rate
point) and decodes them on the CPU: ``DIR/<codec>/<crop>.rdpb`` and ``.png``, and ``DIR/manifest.json``.
``scripts/gpu_bench_decode.sh`` carries that folder to the device and runs the second command there.

Timings go through the codecs' public ``encode`` / ``decode`` on real bitstreams: one stream of a ``--size``
crop, encoded by the codec being timed, decoded ``batch`` times in one ``decode`` call (one network batch:
``max_batch_pixels`` is raised to hold it), ``--repeats`` times after ``--warmup`` untimed calls, each call
ended by ``torch.cuda.synchronize``. Every option has a tiny CPU setting
(``--device cpu --batches 1,2 --size 64x64``), which the tests use.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from rdp_bench.atomic import atomic_path
from rdp_bench.bench.provenance import base_provenance, device_description
from rdp_bench.codecs import Codec, RatePoint, get_codec, select_device
from rdp_bench.datasets import SAMPLES_DIR
from rdp_bench.imageio import load_image, load_image_uint8, save_image, tensor_to_uint8
from rdp_bench.metrics.psnr import psnr

CODECS = ("cdc", "corrdiff")
#: ``--precisions`` -> the codecs' ``amp`` option (used on a GPU only; a CPU decodes in float32 whatever it says)
AMP: dict[str, str | None] = {"fp32": None, "bf16": "bf16"}
MANIFEST = "manifest.json"
#: the codecs' ``max_batch_pixels``: never split a decode call, so each call is one network batch of its streams
NO_SPLIT = 2**62

Log = Callable[[str], None]


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (height, width)."""
    width, _, height = text.lower().partition("x")
    return int(height), int(width)


def sample_crops(height: int, width: int, count: int) -> list[tuple[str, torch.Tensor]]:
    """``count`` height x width crops of the bundled sample photos: top-left, then bottom-right corner of each
    photo large enough, as (name, 3xHxW image)."""
    crops: list[tuple[str, torch.Tensor]] = []
    for path in sorted(SAMPLES_DIR.glob("*.png")):
        if len(crops) >= count:
            break
        image = load_image(path)
        _, h, w = image.shape
        if h < height or w < width:
            continue
        for corner, y, x in (("tl", 0, 0), ("br", h - height, w - width)):
            crops.append((f"{path.stem}_{corner}", image[:, y : y + height, x : x + width].contiguous()))
    if len(crops) < count:
        raise ValueError(f"the sample photos give only {len(crops)} crops of {width}x{height}, not {count}")
    return crops[:count]


def make_codec(name: str, device: str | torch.device, precision: str) -> Codec:
    """The codec at ``precision``, decoding all the streams of a call as one network batch."""
    amp = AMP[precision]
    return get_codec(name, device=str(device), max_batch_pixels=NO_SPLIT, **({"amp": amp} if amp else {}))


def middle_point(codec: Codec) -> RatePoint:
    points = codec.rate_points()
    return points[len(points) // 2]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_decode(codec: Codec, streams: Sequence[bytes], warmup: int, repeats: int) -> dict:
    """Wall seconds of ``codec.decode(streams)``, and the peak GPU memory allocated meanwhile (None on a CPU)."""
    device = codec.device
    for _ in range(warmup):  # cuDNN's algorithm choice, the allocator, lazy weight loading
        codec.decode(streams)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        codec.decode(streams)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    mean = statistics.fmean(seconds)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": seconds, "seconds_per_batch": mean, "seconds_per_image": mean / len(streams),
            "images_per_s": len(streams) / mean, "peak_gpu_memory_mib": peak}


def benchmark(codecs: Sequence[str], device: torch.device, batches: Sequence[int], precisions: Sequence[str],
              size: tuple[int, int], warmup: int, repeats: int, log: Log = print) -> list[dict]:
    """One row per codec, precision and batch size."""
    (photo, image), = sample_crops(*size, 1)
    rows = []
    for name in codecs:
        for precision in precisions:
            codec = make_codec(name, device, precision)
            point = middle_point(codec)
            stream = codec.encode([image], point)[0]
            for batch in batches:
                row = {"codec": name, "precision": precision, "amp_applied": _amp_applied(precision, device),
                       "batch": batch, "rate_point": point.label, "steps": codec.steps, "image": photo,
                       "stream_bytes": len(stream), **time_decode(codec, [stream] * batch, warmup, repeats)}
                log(f"{name} {precision} batch {batch}: {row['seconds_per_image']:.4f} s/image, "
                    f"{row['images_per_s']:.2f} images/s, peak {row['peak_gpu_memory_mib']} MiB")
                rows.append(row)
    return rows


def _amp_applied(precision: str, device: torch.device) -> bool:
    return AMP[precision] is not None and device.type == "cuda"


def prepare(folder: Path, codecs: Sequence[str], size: tuple[int, int], count: int, device: torch.device,
            log: Log = print) -> Path:
    """Encode ``count`` sample crops with each codec and decode them on ``device`` (all in one batch, as
    ``compare_prepared`` decodes them): the streams, their decodes as PNG, and a manifest."""
    crops = sample_crops(*size, count)
    manifest = {"device": device_description(device), "height": size[0], "width": size[1],
                "provenance": base_provenance(device, 0), "codecs": {}}
    for name in codecs:
        codec = make_codec(name, device, "fp32")
        point = middle_point(codec)
        streams = codec.encode([image for _, image in crops], point)
        (folder / name).mkdir(parents=True, exist_ok=True)
        for (stem, _), stream, decoded in zip(crops, streams, codec.decode(streams)):
            (folder / name / f"{stem}.rdpb").write_bytes(stream)
            save_image(decoded, folder / name / f"{stem}.png")
        manifest["codecs"][name] = {"rate_point": point.label, "checkpoint": codec.checkpoint_id(point),
                                    "images": [stem for stem, _ in crops]}
        log(f"{name}: {count} streams of {size[1]}x{size[0]} at {point.label} in {folder / name}")
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return folder / MANIFEST


def difference(reference: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> dict:
    """Max and mean absolute difference in 8-bit levels, and the PSNR between the two (None when identical)."""
    ref = torch.from_numpy(np.stack(reference)).double()
    out = torch.from_numpy(np.stack(decoded)).double()
    value = psnr(ref, out, data_range=255.0)
    diff = (ref - out).abs()
    return {"max_abs_diff_levels": int(diff.max()), "mean_abs_diff_levels": float(diff.mean()),
            "psnr_db": None if math.isinf(value) else value, "identical": bool(diff.max() == 0)}


def compare_prepared(folder: Path, device: torch.device, precisions: Sequence[str], log: Log = print) -> list[dict]:
    """Decode a ``prepare`` folder's streams on ``device``; per codec and precision, how far that lands from
    the decodes made where the streams were encoded."""
    manifest = json.loads((folder / MANIFEST).read_text())
    rows = []
    for name, entry in manifest["codecs"].items():
        streams = [(folder / name / f"{stem}.rdpb").read_bytes() for stem in entry["images"]]
        reference = [load_image_uint8(folder / name / f"{stem}.png") for stem in entry["images"]]
        for precision in precisions:
            codec = make_codec(name, device, precision)
            decoded = [tensor_to_uint8(image) for image in codec.decode(streams)]
            row = {"codec": name, "precision": precision, "amp_applied": _amp_applied(precision, device),
                   "rate_point": entry["rate_point"], "images": len(streams), "encoded_on": manifest["device"],
                   "decoded_on": device_description(device), **difference(reference, decoded)}
            log(f"{name} {precision}, streams from {manifest['device']}: max |diff| {row['max_abs_diff_levels']}, "
                f"mean {row['mean_abs_diff_levels']:.4f} levels, PSNR {row['psnr_db']}")
            rows.append(row)
    return rows


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _precisions(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in AMP for v in values):
        raise argparse.ArgumentTypeError(f"precisions are {', '.join(AMP)}; got {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict | None:
    """The command line; returns the result written to ``--out`` (None after ``--prepare``)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", type=Path, metavar="DIR", help="write streams and their decodes here (CPU by default), then stop")
    ap.add_argument("--prepared", type=Path, metavar="DIR", help="a --prepare folder to decode here and compare")
    ap.add_argument("--out", type=Path, default=Path("gpu_decode.json"))
    ap.add_argument("--device", help="default: cuda when present (--prepare: cpu)")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--batches", type=_ints, default=[1, 8, 32])
    ap.add_argument("--precisions", type=_precisions, default=list(AMP))
    ap.add_argument("--size", type=parse_size, default=parse_size("768x512"), help="WIDTHxHEIGHT (default 768x512)")
    ap.add_argument("--images", type=int, default=2, help="crops per codec for --prepare")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    log = lambda message: print(message, flush=True)  # noqa: E731
    if args.prepare:
        prepare(args.prepare, codecs, args.size, args.images, torch.device(args.device or "cpu"), log)
        return None
    device = select_device(args.device)
    result = {
        "provenance": {**base_provenance(device, 0, None if argv is None else ["gpu_decode", *argv]),
                       "cuda": torch.version.cuda},
        "settings": {"height": args.size[0], "width": args.size[1], "batches": args.batches,
                     "precisions": args.precisions, "warmup": args.warmup, "repeats": args.repeats,
                     "timed": ("codec.decode of one stream repeated batch times: CPU entropy decoding and one network "
                               "batch, synchronized")},
        "decode": benchmark(codecs, device, args.batches, args.precisions, args.size, args.warmup, args.repeats, log),
        "cpu_streams": compare_prepared(args.prepared, device, args.precisions, log) if args.prepared else [],
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    log(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
