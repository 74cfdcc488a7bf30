"""The unit of work of a sweep, and the pure function that does it.

A ``BatchTask`` is picklable (names, paths, hashes): any executor, in-process or on a Ray worker, can
run it with ``run_task``. Its result carries everything the driver persists: the row, the bitstream
bytes, the dataset-metric partials and, when asked, the reconstruction.

An image that fails in the middle of a sweep (its decode raises, a codec bug shows on that image only, its
file became unreadable) gives an ``ItemResult`` carrying the error instead of a row: the driver records it
in ``errors.csv``, goes on, and the run exits 1 at the end, like an unreadable image. A batch that fails
is run again image by image, so the other images of the batch are still measured. What is not about one
image stops the sweep as before (``is_fatal``): memory (``MemoryError``, CUDA out of memory, other CUDA
errors), missing or refused weights (``CodecUnavailable``, ``CheckpointRefused``), a metric that cannot run
(``MetricUnavailable``) and failed downloads (``DownloadError``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdp_bench.atomic import atomic_write_bytes
from rdp_bench.codecs import Codec, get_codec
from rdp_bench.codecs.base import target_of
from rdp_bench.container import DEFAULT_MAX_PIXELS, rate_of
from rdp_bench.imageio import load_image_uint8, quantize_8bit, tensor_to_uint8, uint8_to_tensor
from rdp_bench.metrics import DatasetMetric, ImageMetric, Metric, get_metric


@dataclass(frozen=True)
class TaskItem:
    image_id: str
    path: str
    sha256: str
    #: relative path of the bitstream inside the run folder
    bitstream_rel: str
    #: set when the bitstream already exists and only metrics are missing: decode it, don't re-encode
    reuse_bitstream: bool = False
    #: the decode seeds still to measure (``--seeds K`` for a seeded decoder; 0 otherwise)
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class BatchTask:
    codec: str
    rate_label: str
    items: tuple[TaskItem, ...]
    dataset: str
    metrics: tuple[str, ...]
    unavailable: tuple[tuple[str, str], ...] = ()
    codec_options: tuple[tuple[str, Any], ...] = ()
    metric_options: tuple[tuple[str, Any], ...] = ()
    device: str | None = None
    save_recon: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def shape_key(self) -> tuple[str, str]:
        return (self.codec, self.rate_label)


@dataclass
class ItemResult:
    row: dict[str, Any] | None
    bitstream: bytes
    bitstream_rel: str
    partials: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    recon: np.ndarray | None = None
    #: set (and ``row`` None) when this image failed: errors.csv's columns (``failed_item``)
    error: dict[str, str] | None = None


def is_fatal(exc: BaseException) -> bool:
    """Whether an error stops the sweep instead of failing one image: the machine or the set-up, which
    every further image would hit too. The cause chain is searched (``Codec.decode`` wraps what it does not
    know in ``BitstreamError``)."""
    from rdp_bench.codecs.base import CodecUnavailable
    from rdp_bench.codecs.checkpoints import CheckpointRefused
    from rdp_bench.datasets.download import DownloadError
    from rdp_bench.metrics.base import MetricUnavailable

    fatal = (MemoryError, CodecUnavailable, CheckpointRefused, MetricUnavailable, DownloadError,
             torch.cuda.OutOfMemoryError)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, fatal):
            return True
        text = str(exc)
        if isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "CUDA error" in text
                                              or "CUBLAS_STATUS" in text or "CUDNN_STATUS" in text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def failed_item(task: BatchTask, item: TaskItem, exc: BaseException) -> ItemResult:
    """The result of an image that failed: no row, the error in one line for errors.csv."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    message = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if item.reuse_bitstream:  # a stored stream is decoded again on every run until it is gone
        message += f" (the stored bitstream {item.bitstream_rel}: delete it to encode again)"
    error = {"image_id": item.image_id, "path": item.path, "codec": task.codec, "rate_label": task.rate_label,
             "error": f"{task.codec} {task.rate_label} failed on this image: {message}"}
    return ItemResult(None, b"", item.bitstream_rel, error=error)


class InstanceCache:
    """Keeps codec and metric objects alive across tasks in one process (weights load once)."""

    def __init__(self) -> None:
        self._codecs: dict[tuple, Codec] = {}
        self._metrics: dict[tuple, Metric] = {}

    def codec(self, task: BatchTask) -> Codec:
        key = (task.codec, task.device, task.codec_options)
        if key not in self._codecs:
            self._codecs[key] = get_codec(task.codec, device=task.device, **dict(task.codec_options))
        self._codecs[key].max_pixels = task.max_pixels
        return self._codecs[key]

    def metric(self, name: str, task: BatchTask) -> Metric:
        key = (name, task.device, task.metric_options)
        if key not in self._metrics:
            self._metrics[key] = get_metric(name, device=task.device, **dict(task.metric_options))
        return self._metrics[key]


_DEFAULT_CACHE = InstanceCache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_task_images(task: BatchTask) -> list[np.ndarray]:
    """The task's images as uint8 HxWx3 arrays, in item order."""
    return [load_image_uint8(item.path, task.max_pixels) for item in task.items]


def run_task(task: BatchTask, bitstream_root: Path, cache: InstanceCache | None = None,
             originals: list[np.ndarray] | None = None) -> list[ItemResult]:
    """Encode (or reuse), write to disk, decode from disk, and measure every item of one batch.

    ``originals``: the images from ``load_task_images(task)`` when the caller loaded them ahead of time.
    An item that fails gets a ``failed_item`` result (a failed batch is re-run item by item); an error
    ``is_fatal`` calls fatal propagates.
    """
    try:
        return _run_items(task, bitstream_root, cache, originals)
    except Exception as exc:
        if is_fatal(exc):
            raise
        if len(task.items) == 1:
            return [failed_item(task, task.items[0], exc)]
    results: list[ItemResult] = []
    for k, item in enumerate(task.items):  # which image was it? the others are measured alone
        single = dataclasses.replace(task, items=(item,))
        results += run_task(single, bitstream_root, cache, None if originals is None else [originals[k]])
    return results


def _run_items(task: BatchTask, bitstream_root: Path, cache: InstanceCache | None,
               originals: list[np.ndarray] | None) -> list[ItemResult]:
    cache = cache or _DEFAULT_CACHE
    codec = cache.codec(task)
    point = codec.rate_point(task.rate_label)
    rate_id = codec.rate_id(point)
    originals = load_task_images(task) if originals is None else originals
    images = [uint8_to_tensor(a) for a in originals]
    bitstream_root = Path(bitstream_root)

    # encode the items that need it, in one codec batch; a stored bitstream is decoded as it is (rate ids
    # are stable, declared in each codec's table, so a stored stream's header still names its rate point)
    matched = target_of(point) is not None
    reuse = [item.reuse_bitstream for item in task.items]
    fresh = [i for i, reused in enumerate(reuse) if not reused]
    extras: dict[int, dict[str, Any]] = {}
    enc_time = math.nan
    if fresh:
        _sync(codec.device)
        t0 = time.perf_counter()
        encoded = codec.encode_detailed([images[i] for i in fresh], point)
        _sync(codec.device)
        enc_time = (time.perf_counter() - t0) / len(fresh)
        for i, enc in zip(fresh, encoded):
            atomic_write_bytes(bitstream_root / task.items[i].bitstream_rel, enc.bitstream)
            extras[i] = enc.extras

    # decode from the files on disk, never from memory; a seeded decoder once per seed asked for
    bitstreams = [(bitstream_root / item.bitstream_rel).read_bytes() for item in task.items]
    decodes: list[tuple[int, int, torch.Tensor, float]] = []  # (item, seed, image, seconds per image)
    for seed in sorted({s for item in task.items for s in item.seeds}):
        idx = [i for i, item in enumerate(task.items) if seed in item.seeds]
        _sync(codec.device)
        t0 = time.perf_counter()
        decoded = codec.decode([bitstreams[i] for i in idx], seed=seed)
        _sync(codec.device)
        seconds = (time.perf_counter() - t0) / len(idx)
        decodes += [(i, seed, img, seconds) for i, img in zip(idx, decoded)]

    unavailable = dict(task.unavailable)
    results = []
    for i, seed, image, dec_time in decodes:
        item = task.items[i]
        ref, rec = images[i], quantize_8bit(image.float().cpu())
        h, w = ref.shape[-2:]
        row: dict[str, Any] = {
            "codec": task.codec,
            "checkpoint": codec.checkpoint_id(point),
            "rate_label": point.label,
            "rate_id": rate_id,
            "rate_params": json.dumps(point.params, sort_keys=True),
            "dataset": task.dataset,
            "image_id": item.image_id,
            "image_sha256": item.sha256,
            "seed": seed,
            "height": h,
            "width": w,
            # bpp and bytes: the payload (the field's convention); container_bytes, bpp_container: the file
            **rate_of(bitstreams[i]).columns(),
            "decoding_time": dec_time,
            "device": str(codec.device),
            "bitstream": item.bitstream_rel,
        }
        if not reuse[i]:
            row["encoding_time"] = enc_time
            row.update(extras.get(i, {}))
        elif matched:
            del row["rate_params"]  # the setting the search found stays in the stored row
        partials: dict[str, dict[str, np.ndarray]] = {}
        for name in task.metrics:
            if name in unavailable:
                row[name] = math.nan
                continue
            metric = cache.metric(name, task)
            if isinstance(metric, ImageMetric):
                row[name] = float(metric.compute(ref, rec))
            elif isinstance(metric, DatasetMetric):
                partials[name] = metric.extract(ref, rec, reference_key=f"{task.dataset}:{item.sha256}")
        if unavailable:
            row["unavailable"] = json.dumps(unavailable, sort_keys=True)
        recon = tensor_to_uint8(rec) if task.save_recon else None
        results.append(ItemResult(row, bitstreams[i], item.bitstream_rel, partials, recon))
    return results
