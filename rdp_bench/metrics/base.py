"""Metric interfaces.

* ``ImageMetric``: one number per (reference, reconstruction) pair, e.g. PSNR, LPIPS.
* ``DatasetMetric``: a number per (codec, rate point) over the whole dataset, e.g. FID. It works in two
  steps so that it can stream and be sharded: ``extract`` turns one image pair into a small partial
  (features), which the harness stores on disk; ``finalize`` reduces an iterable of partials.

Both see 3xHxW float tensors in [0, 1]; reconstructions are already rounded to 8 bits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable

import numpy as np
import torch

from rdp_bench.codecs.base import Availability, select_device


class MetricUnavailable(RuntimeError):
    """The metric cannot be computed here (e.g. missing weights); the message is the reason."""


class Metric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    description: ClassVar[str] = ""
    #: short name in tables and axes; empty means ``name.upper()``
    label: ClassVar[str] = ""
    #: unit of the *reported* value (after ``to_display``), e.g. "dB"; empty for unitless scores
    unit: ClassVar[str] = ""

    @classmethod
    def display_label(cls) -> str:
        return cls.label or cls.name.upper()

    @classmethod
    def to_display(cls, value: float) -> float:
        """The value as reports show it (e.g. MS-SSIM in dB); results files keep the raw value."""
        return value

    @classmethod
    def requirement(cls) -> str:
        """What to install or put where so the metric can run, in a few words and without machine paths."""
        return ""

    def __init__(self, device: str | None = None, **options: Any) -> None:
        self.device = select_device(device)
        self.options = options

    @classmethod
    def availability(cls, **options: Any) -> Availability:
        return Availability(True)

    def provenance(self) -> dict[str, Any]:
        """Facts recorded in the run's provenance (which weights, from where)."""
        return {}


class ImageMetric(Metric):
    kind: ClassVar[str] = "image"

    @abstractmethod
    def compute(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
        ...


class DatasetMetric(Metric):
    kind: ClassVar[str] = "dataset"

    @abstractmethod
    def extract(self, reference: torch.Tensor, reconstruction: torch.Tensor, reference_key: str) -> dict[str, np.ndarray]:
        """Per-image partial; ``reference_key`` (dataset + pixel hash) lets it cache reference features."""

    @abstractmethod
    def finalize(self, partials: Iterable[dict[str, np.ndarray]]) -> dict[str, float]:
        """Reduce partials to named numbers; the first key is the metric value itself (e.g. ``fid``)."""
