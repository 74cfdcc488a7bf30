"""LPIPS (the ``lpips`` package, v0.1) on full images, inputs scaled to [-1, 1].

The ``lpips`` package would ask torchvision to download the ImageNet backbone; instead we build it with
an uninitialised trunk and load the verified torchvision file ourselves (see ``weights.py``). The linear
calibration layers ship inside the ``lpips`` wheel (``lpips/weights/v0.1/<net>.pth``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch

from rdp_bench.codecs.base import Availability
from rdp_bench.metrics.base import ImageMetric, MetricUnavailable
from rdp_bench.metrics.weights import (
    ALEXNET, VGG16, WeightsSpec, file_digest, load_state_dict, resolve_weights, weight_options, weights_availability,
)


def lpips_linear_weights(net: str) -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


def build_lpips(net: str, backbone_path: Path) -> torch.nn.Module:
    """``lpips.LPIPS(net=net)`` with the backbone from ``backbone_path`` and the packaged linear layers."""
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation note on pretrained=
        # pnet_rand/pretrained=False: nothing is downloaded; every weight is overwritten below
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    # lpips splits torchvision's ``features`` into slices that keep the layer indices as module names
    slice_of = {idx: name for name, part in model.net.named_children() for idx in part._modules}
    state: dict[str, torch.Tensor] = {}
    for key, value in load_state_dict(backbone_path).items():
        group, _, rest = key.partition(".")
        idx, _, param = rest.partition(".")
        if group == "features" and idx in slice_of:
            state[f"net.{slice_of[idx]}.{idx}.{param}"] = value
    state.update(load_state_dict(lpips_linear_weights(net)))
    expected = {k for k in model.state_dict() if not k.startswith("scaling_layer.")}
    if expected - state.keys():
        raise MetricUnavailable(f"LPIPS weights incomplete, missing {sorted(expected - state.keys())[:4]}")
    model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False)


class LPIPS(ImageMetric):
    name = "lpips"
    higher_is_better = False
    description = "LPIPS v0.1, AlexNet (lpips package), inputs in [-1, 1], full image"
    net: ClassVar[str] = "alex"
    backbone: ClassVar[WeightsSpec] = ALEXNET

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
    description = "LPIPS v0.1, VGG16 (lpips package), inputs in [-1, 1], full image"
    net = "vgg"
    backbone = VGG16
