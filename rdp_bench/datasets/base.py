"""Datasets: an ordered list of image files, each identified by a stable id and a pixel hash."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rdp_bench.imageio import IMAGE_SUFFIXES, image_sha256, load_image_uint8, uint8_to_tensor


class DatasetUnavailable(RuntimeError):
    """A dataset is not on disk and cannot be downloaded; the message says where to put which files."""


def default_data_root() -> Path:
    """``$RDP_BENCH_DATA`` or ``~/.cache/rdp-bench/data``."""
    env = os.environ.get("RDP_BENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rdp-bench" / "data"


@dataclass(frozen=True)
class ImageItem:
    """One image of a dataset. ``image_id`` is the path relative to the dataset root."""

    image_id: str
    path: Path

    def load_uint8(self) -> np.ndarray:
        return load_image_uint8(self.path)

    def load(self) -> torch.Tensor:
        return uint8_to_tensor(self.load_uint8())

    def sha256(self) -> str:
        return image_sha256(self.load_uint8())


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class Dataset:
    name: str
    root: Path
    items: list[ImageItem]

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_folder(cls, name: str, folder: Path) -> "Dataset":
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetUnavailable(f"dataset folder {folder} does not exist")
        paths = list_images(folder)
        if not paths:
            raise DatasetUnavailable(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
        return cls(name, folder, [ImageItem(p.relative_to(folder).as_posix(), p) for p in paths])
