"""MS-SSIM (pytorch-msssim, the implementation CompressAI's evaluation uses), data range 1."""

from __future__ import annotations

import math

import torch
from pytorch_msssim import ms_ssim

from rdp_bench.metrics.base import ImageMetric

# 5 scales with an 11-px window need more than (11 - 1) * 2**4 = 160 px per side.
MIN_SIDE = 161


def msssim_db(value: float) -> float:
    """-10·log10(1 - MS-SSIM): spreads the values near 1 where codecs differ."""
    if not math.isfinite(value):
        return value
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


class MSSSIM(ImageMetric):
    name = "ms-ssim"
    higher_is_better = True
    description = "MS-SSIM (RGB, pytorch-msssim); NaN for images under 161 px on a side"
    label = "MS-SSIM"
    unit = "dB"  # reports use -10·log10(1 - MS-SSIM); results.csv and summary JSON keep the linear value

    @classmethod
    def to_display(cls, value: float) -> float:
        return msssim_db(value)

    def compute(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
        if min(reference.shape[-2:]) < MIN_SIDE:
            return math.nan
        value = ms_ssim(reference[None].float(), reconstruction[None].float(), data_range=1.0, size_average=True)
        return float(value)
