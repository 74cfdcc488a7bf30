"""PSNR over all RGB values, on 8-bit reconstructions, as CompressAI reports ``psnr-rgb``."""

from __future__ import annotations

import math

import torch

from rdp_bench.metrics.base import ImageMetric


def psnr(reference: torch.Tensor, reconstruction: torch.Tensor, data_range: float = 1.0) -> float:
    """10·log10(range² / MSE), MSE over every pixel and channel; +inf for identical images."""
    mse = torch.mean((reference.double() - reconstruction.double()) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


class PSNR(ImageMetric):
    name = "psnr"
    higher_is_better = True
    unit = "dB"
    description = "PSNR (dB), RGB, 8-bit reconstructions"

    def compute(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
        return psnr(reference, reconstruction)
