"""What a run records about itself: versions, git revision, device, command line, seed."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from rdp_bench.container import FORMAT_VERSION

PACKAGES = ("rdp-bench", "torch", "torchvision", "compressai", "numpy", "pillow", "pandas", "pytorch-msssim",
            "lpips", "DISTS-pytorch", "torch-fidelity", "piq", "av", "imagecodecs", "bjontegaard", "ray")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def base_provenance(device: torch.device, seed: int, argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv if argv is not None else sys.argv),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_revision": git_revision(),
        "device": device_description(device),
        "seed": seed,
        "bitstream_format": FORMAT_VERSION,  # 2: fixed framing, codec ids; bpp counts the payload
    }
