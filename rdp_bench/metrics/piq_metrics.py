"""Handcrafted full-reference perception proxies from ``piq`` (no learned weights), data range 1.

GMSD is a distance (lower is better); HaarPSI and VIF (pixel-domain VIFp) are similarities (higher is
better, 1 for identical images).
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch

from rdp_bench.metrics.base import ImageMetric


class _PiqMetric(ImageMetric):
    #: the smallest side piq accepts for this metric; smaller images give NaN
    min_side: ClassVar[int] = 1

    @staticmethod
    def _function() -> Callable[..., torch.Tensor]:
        raise NotImplementedError

    def compute(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
        if min(reference.shape[-2:]) < self.min_side:
            return math.nan
        ref = reference[None].float().to(self.device)
        rec = reconstruction[None].float().to(self.device)
        with torch.no_grad():
            # piq's order is (input, target); VIF is asymmetric and treats the target as the reference
            return float(self._function()(rec, ref, data_range=1.0, reduction="mean"))


class GMSD(_PiqMetric):
    name = "gmsd"
    higher_is_better = False
    description = "GMSD, gradient magnitude similarity deviation (piq); 0 for identical images"

    @staticmethod
    def _function():
        from piq import gmsd
        return gmsd


class HaarPSI(_PiqMetric):
    name = "haarpsi"
    label = "HaarPSI"
    higher_is_better = True
    description = "HaarPSI, Haar wavelet perceptual similarity (piq); 1 for identical images"

    @staticmethod
    def _function():
        from piq import haarpsi
        return haarpsi


class VIF(_PiqMetric):
    name = "vif"
    higher_is_better = True
    description = "VIFp, pixel-domain visual information fidelity (piq); NaN under 41 px a side"
    min_side = 41

    @staticmethod
    def _function():
        from piq import vif_p
        return vif_p
