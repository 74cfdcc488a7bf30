"""The one shape-bucketing batcher of the batched codecs.

A batch handed to a codec may mix sizes and rate points; the networks take one stacked tensor per call.
``batched`` groups the items by a key (``image_shape`` for images, ``record_group`` for containers, or the
codec's own, e.g. padded size and sampler settings), runs the codec once per group and returns one result
per item in the input order. ``chunks`` splits a group so that each call holds at most ``max_pixels``
pixels (GPU memory).
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

import torch

from rdp_bench.container import Container

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


def bucket(items: Sequence[T], key: Callable[[T], K]) -> dict[K, list[int]]:
    """Indices of ``items`` by ``key(item)``, groups and indices in first-seen order."""
    groups: dict[K, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return groups


def batched(items: Sequence[T], key: Callable[[T], K], run: Callable[[K, list[int]], Sequence[R]]) -> list[R]:
    """``run(key, indices)`` once per group of equal keys -> one result per item, in the input order."""
    out: list[R | None] = [None] * len(items)
    for k, idx in bucket(items, key).items():
        results = run(k, idx)
        if len(results) != len(idx):
            raise RuntimeError(f"a batch of {len(idx)} items gave {len(results)} results")
        for i, result in zip(idx, results):
            out[i] = result
    return out  # type: ignore[return-value]


def image_shape(image: torch.Tensor) -> tuple[int, ...]:
    """Group key of images that stack: C x H x W."""
    return tuple(image.shape)


def record_group(record: Container) -> tuple[int, int, int]:
    """Group key of containers decoded as one batch: rate id, height, width."""
    return (record.rate_id, record.height, record.width)


def chunks(indices: Sequence[int], pixels_each: int, max_pixels: int) -> list[list[int]]:
    """``indices`` in runs of at most ``max_pixels // pixels_each`` (at least one: a big image goes alone)."""
    per = max(1, max_pixels // max(1, pixels_each))
    return [list(indices[i : i + per]) for i in range(0, len(indices), per)]


__all__ = ["batched", "bucket", "chunks", "image_shape", "record_group"]
