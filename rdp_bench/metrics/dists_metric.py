"""DISTS (the ``DISTS_pytorch`` package) on full images in [0, 1].

``DISTS_pytorch.DISTS`` asks torchvision for a downloaded VGG16 and reads its alpha/beta weights from
``sys.prefix``; we hand it the verified VGG16 file instead (see ``weights.py``) and load alpha/beta from
the ``weights.pt`` shipped in the package, with ``weights_only=True``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch

from rdp_bench.codecs.base import Availability
from rdp_bench.metrics.base import ImageMetric, MetricUnavailable
from rdp_bench.metrics.weights import (
    VGG16, file_digest, load_state_dict, resolve_weights, torchvision_backbone, weight_options,
    weights_availability,
)


def dists_alpha_beta_path() -> Path | None:
    import DISTS_pytorch

    for candidate in (Path(DISTS_pytorch.__file__).parent / "weights.pt", Path(sys.prefix) / "weights.pt"):
        if candidate.is_file():
            return candidate
    return None


def build_dists(vgg_path: Path, alpha_beta_path: Path) -> torch.nn.Module:
    """``DISTS_pytorch.DISTS()`` with the VGG16 from ``vgg_path`` and alpha/beta from ``alpha_beta_path``."""
    from DISTS_pytorch import DISTS_pt

    vgg = torchvision_backbone("vgg16", vgg_path)
    # DISTS calls ``models.vgg16(pretrained=True)``: give it ours, without touching torchvision globally
    original_models = DISTS_pt.models
    DISTS_pt.models = types.SimpleNamespace(vgg16=lambda *args, **kwargs: vgg)
    try:
        with torch.random.fork_rng(devices=[]):
            model = DISTS_pt.DISTS(load_weights=False)
    finally:
        DISTS_pt.models = original_models
    alpha_beta = load_state_dict(alpha_beta_path)
    if set(alpha_beta) != {"alpha", "beta"} or alpha_beta["alpha"].shape != model.alpha.shape:
        raise MetricUnavailable(f"{alpha_beta_path} is not DISTS' alpha/beta file")
    model.alpha.data = alpha_beta["alpha"]
    model.beta.data = alpha_beta["beta"]
    return model.eval().requires_grad_(False)


class DISTS(ImageMetric):
    name = "dists"
    higher_is_better = False
    description = "DISTS (DISTS_pytorch, VGG16), full image in [0, 1]"

    @classmethod
    def requirement(cls) -> str:
        return f"torchvision's {VGG16.filename} in the torch hub cache or in --weights-dir"

    def __init__(self, device: str | None = None, **options: Any) -> None:
        super().__init__(device, **options)
        self.weights_dir, self.allow_download = weight_options(options)
        self._model: torch.nn.Module | None = None

    @classmethod
    def availability(cls, **options: Any) -> Availability:
        if dists_alpha_beta_path() is None:
            return Availability(False, "the DISTS_pytorch package lacks its weights.pt (alpha/beta)")
        return weights_availability(VGG16, *weight_options(options))

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            vgg_path = resolve_weights(VGG16, self.weights_dir, self.allow_download)
            self._model = build_dists(vgg_path, dists_alpha_beta_path()).to(self.device)
        return self._model

    def compute(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
        ref = reference[None].float().to(self.device)
        rec = reconstruction[None].float().to(self.device)
        with torch.no_grad():
            return float(self.model(ref, rec))

    def provenance(self) -> dict[str, Any]:
        path = resolve_weights(VGG16, self.weights_dir, self.allow_download)
        alpha_beta = dists_alpha_beta_path()
        return {"backbone": str(path), "backbone_sha256": file_digest(path), "alpha_beta": str(alpha_beta),
                "alpha_beta_sha256": file_digest(alpha_beta) if alpha_beta else None}
