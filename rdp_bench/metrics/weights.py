"""Where learned-metric backbones come from, and the refusal to make anything up when they are missing.

Weights are looked up, in order, in an explicit ``weights_dir`` (``--weights-dir``) and in torch's hub
cache (``$TORCH_HOME/hub/checkpoints``, i.e. ``torch.hub.get_dir()/checkpoints``, where torchvision
itself keeps them). A file only counts when its sha256 matches: the full digest when we know it, else
the prefix torch hub puts in the file name (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``). When no file
is found and downloads are allowed, it is fetched from the official URL into the hub cache and verified.
Otherwise the metric is *unavailable* with a reason that names the file and where to put it; no random
or substitute backbone is ever used.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rdp_bench.codecs.base import Availability
from rdp_bench.datasets.download import DownloadError, download
from rdp_bench.metrics.base import MetricUnavailable
# the one download policy (``RDP_BENCH_OFFLINE=1``, ``--no-download``), shared with codecs and datasets;
# OFFLINE_ENV stays importable from here
from rdp_bench.offline import OFF_REASON, OFFLINE_ENV, downloads_allowed  # noqa: F401

#: Tests that need backbone files with the right names but other contents switch this off (monkeypatch);
#: nothing else may, since reported numbers must come from the verified ImageNet weights.
VERIFY_SHA256 = True


@dataclass(frozen=True)
class WeightsSpec:
    """A weights file known by name, official URL and sha256 (full digest or the prefix in its name)."""

    filename: str
    url: str
    sha256: str | None = None
    #: other names the very same file is known by (checked with the same digest)
    aliases: tuple[str, ...] = ()

    @property
    def expected_digest(self) -> str:
        if self.sha256:
            return self.sha256
        match = re.search(r"-([a-f0-9]{8,})\.", self.filename)
        if not match:
            raise ValueError(f"{self.filename} carries no sha256 prefix")
        return match.group(1)


ALEXNET = WeightsSpec("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")
VGG16 = WeightsSpec("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth")
#: torch-fidelity's FID Inception; pytorch-fid ships the identical file as pt_inception-2015-12-05-6726825d.pth
INCEPTION_FID = WeightsSpec(
    "weights-inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    aliases=("pt_inception-2015-12-05-6726825d.pth",),
)


class WeightsMissing(MetricUnavailable):
    """No verified weights file could be found or downloaded; the message says which file to put where."""


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    dirs = [Path(weights_dir).expanduser()] if weights_dir else []
    return [*dirs, hub_checkpoints_dir()]


# hashing a 528 MB VGG file takes a second or two: do it once per file version
_DIGESTS: dict[tuple[str, str, int, int], str] = {}


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, memoised by (path, size, mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (algorithm, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _verified(path: Path, spec: WeightsSpec) -> bool:
    return not VERIFY_SHA256 or file_digest(path).startswith(spec.expected_digest)


def _where(spec: WeightsSpec, weights_dir: str | Path | None) -> str:
    places = " or ".join(str(d) for d in search_dirs(weights_dir))
    return f"put {spec.filename} (from {spec.url}) in {places}, or pass --weights-dir DIR"


def find_weights(spec: WeightsSpec, weights_dir: str | Path | None = None) -> tuple[Path | None, list[str]]:
    """The first verified file, plus notes on candidates that were rejected (wrong digest)."""
    rejected = []
    for folder in search_dirs(weights_dir):
        for name in (spec.filename, *spec.aliases):
            path = folder / name
            if path.is_file():
                if _verified(path, spec):
                    return path, rejected
                rejected.append(f"{path} fails its sha256 check (expected {spec.expected_digest}...)")
    return None, rejected


def resolve_weights(spec: WeightsSpec, weights_dir: str | Path | None = None, allow_download: bool | None = None) -> Path:
    """Path of a verified weights file; downloads into the hub cache when allowed; else ``WeightsMissing``."""
    path, rejected = find_weights(spec, weights_dir)
    if path is not None:
        return path
    problems = list(rejected)
    if downloads_allowed(allow_download):
        target = hub_checkpoints_dir() / spec.filename
        try:
            digest = download(spec.url, target, expected_sha256=spec.sha256 or spec.expected_digest)
        except DownloadError as exc:
            problems.append(f"download failed ({exc})")
        else:
            if not VERIFY_SHA256 or digest.startswith(spec.expected_digest):
                return target
            target.unlink(missing_ok=True)
            problems.append(f"downloaded file has sha256 {digest}, expected {spec.expected_digest}...")
    else:
        problems.append(OFF_REASON)
    detail = "; ".join(problems)
    raise WeightsMissing(f"{spec.filename} not found: {_where(spec, weights_dir)} ({detail})")


def weights_availability(spec: WeightsSpec, weights_dir: str | Path | None = None,
                         allow_download: bool | None = None) -> Availability:
    try:
        resolve_weights(spec, weights_dir, allow_download)
    except WeightsMissing as exc:
        return Availability(False, str(exc))
    return Availability(True)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: ``weights_only=True`` refuses pickled code."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise MetricUnavailable(f"{path} does not hold a state dict")
    return state


def weight_options(options: dict[str, Any]) -> tuple[str | None, bool | None]:
    """``weights_dir`` and ``allow_download`` from a metric's options (``--weights-dir``, ``--no-download``)."""
    weights_dir = options.get("weights_dir")
    return (str(weights_dir) if weights_dir else None), options.get("allow_download")


def torchvision_backbone(arch: str, path: Path) -> torch.nn.Module:
    """``torchvision.models.<arch>`` holding exactly the tensors of ``path`` (strict: every key, every shape).

    Built on the meta device, so no time goes into a random initialisation that would be overwritten.
    """
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    model = model.to_empty(device="cpu")
    model.load_state_dict(load_state_dict(path), strict=True)
    return model.eval().requires_grad_(False)
