"""LPIPS (the ``lpips`` package, v0.1) on full images, inputs scaled to [-1, 1].

The ``lpips`` package would ask torchvision to download the ImageNet backbone; instead it gets a
torchvision model loaded from the verified file (see ``weights.py``). The linear
calibration layers ship inside the ``lpips`` wheel (``lpips/weights/v0.1/<net>.pth``).
"""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Any, ClassVar

import torch

from rdp_bench.codecs.base import Availability
from rdp_bench.metrics.base import ImageMetric, MetricUnavailable
from rdp_bench.metrics.weights import (
    ALEXNET, VGG16, WeightsSpec, file_digest, load_state_dict, resolve_weights, torchvision_backbone, weight_options,
    weights_availability,
)

TORCHVISION_ARCH = {"alex": "alexnet", "vgg": "vgg16"}
#: AlexNet's stride-4 stem and pools leave nothing of smaller images
MIN_SIDE = 32


def lpips_linear_weights(net: str) -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


def build_lpips(net: str, backbone_path: Path) -> torch.nn.Module:
    """``lpips.LPIPS(net=net)`` with the backbone from ``backbone_path`` and the packaged linear layers."""
    import lpips
    from lpips import pretrained_networks

    backbone = torchvision_backbone(TORCHVISION_ARCH[net], backbone_path)
    # lpips asks ``tv.<arch>(pretrained=True)`` (a download); hand it the verified model instead
    original_tv = pretrained_networks.tv
    pretrained_networks.tv = types.SimpleNamespace(**{TORCHVISION_ARCH[net]: lambda *args, **kwargs: backbone})
    try:
        with torch.random.fork_rng(devices=[]):  # lpips draws random initial linear layers; keep the run's RNG
            model = lpips.LPIPS(net=net, pretrained=False, verbose=False)
    finally:
        pretrained_networks.tv = original_tv
    # the calibrated linear layers, loaded here with weights_only=True (lins.* are aliases of lin0..4)
    missing, unexpected = model.load_state_dict(load_state_dict(lpips_linear_weights(net)), strict=False)
    missing = [k for k in missing if k.startswith("lin") and not k.startswith("lins.")]
    if missing or unexpected:
        raise MetricUnavailable(f"LPIPS linear weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.eval().requires_grad_(False)


class LPIPS(ImageMetric):
    name = "lpips"
    higher_is_better = False
    description = "LPIPS v0.1, AlexNet (lpips package), inputs in [-1, 1], full image; NaN under 32 px"
    net: ClassVar[str] = "alex"
    backbone: ClassVar[WeightsSpec] = ALEXNET

    @classmethod
    def requirement(cls) -> str:
        return f"torchvision's {cls.backbone.filename} in the torch hub cache or in --weights-dir"

    def __init__(self, device: str | None = None, **options: Any) -> None:
        super().__init__(device, **options)
        self.weights_dir, self.allow_download = weight_options(options)
        self._model: torch.nn.Module | None = None

    @classmethod
    def availability(cls, **options: Any) -> Availability:
        if not lpips_linear_weights(cls.net).is_file():
            return Availability(False, f"the lpips package lacks {lpips_linear_weights(cls.net)}")
        return weights_availability(cls.backbone, *weight_options(options))

    def backbone_path(self) -> Path:
        return resolve_weights(self.backbone, self.weights_dir, self.allow_download)

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = build_lpips(self.net, self.backbone_path()).to(self.device)
        return self._model

    def compute(self, reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
        if min(reference.shape[-2:]) < MIN_SIDE:
            return math.nan
        ref = reference[None].float().to(self.device) * 2 - 1
        rec = reconstruction[None].float().to(self.device) * 2 - 1
        with torch.no_grad():
            return float(self.model(ref, rec))

    def provenance(self) -> dict[str, Any]:
        path = self.backbone_path()
        return {"backbone": str(path), "backbone_sha256": file_digest(path),
                "linear_layers": str(lpips_linear_weights(self.net)),
                "linear_layers_sha256": file_digest(lpips_linear_weights(self.net))}


class LPIPSVGG(LPIPS):
    name = "lpips-vgg"
    label = "LPIPS-VGG"
    description = "LPIPS v0.1, VGG16 (lpips package), inputs in [-1, 1], full image"
    net = "vgg"
    backbone = VGG16
