"""Metric registry: one line per metric, imported lazily.  Add a metric with one module and one line."""

from __future__ import annotations

import importlib
from typing import Any

from rdp_bench.codecs.base import Availability
from rdp_bench.metrics.base import DatasetMetric, ImageMetric, Metric, MetricUnavailable

REGISTRY: dict[str, str] = {
    "psnr": "rdp_bench.metrics.psnr:PSNR",
    "ms-ssim": "rdp_bench.metrics.msssim:MSSSIM",
    "lpips": "rdp_bench.metrics.lpips_metric:LPIPS",
    "lpips-vgg": "rdp_bench.metrics.lpips_metric:LPIPSVGG",
    "dists": "rdp_bench.metrics.dists_metric:DISTS",
    "gmsd": "rdp_bench.metrics.piq_metrics:GMSD",
    "haarpsi": "rdp_bench.metrics.piq_metrics:HaarPSI",
    "vif": "rdp_bench.metrics.piq_metrics:VIF",
    "fid": "rdp_bench.metrics.fid:FID",
    "kid": "rdp_bench.metrics.fid:KID",
}

DEFAULT_METRICS = ("psnr", "ms-ssim")


def metric_class(name: str) -> type[Metric]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(REGISTRY)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def metric_availability(name: str, **options: Any) -> Availability:
    try:
        return metric_class(name).availability(**options)
    except ImportError as exc:
        return Availability(False, f"missing dependency: {exc}")


def get_metric(name: str, **options: Any) -> Metric:
    return metric_class(name)(**options)


def list_metrics() -> list[str]:
    return list(REGISTRY)


__all__ = [
    "DEFAULT_METRICS", "DatasetMetric", "ImageMetric", "Metric", "MetricUnavailable", "REGISTRY",
    "get_metric", "list_metrics", "metric_availability", "metric_class",
]
