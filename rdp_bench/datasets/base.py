"""Datasets: an ordered list of image files, each identified by a stable id and a pixel hash."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
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

    def load_uint8(self, max_pixels: int | None = None) -> np.ndarray:
        return load_image_uint8(self.path, max_pixels)

    def load(self) -> torch.Tensor:
        return uint8_to_tensor(self.load_uint8())

    def sha256(self, max_pixels: int | None = None) -> str:
        return image_sha256(self.load_uint8(max_pixels))


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for a stable order."""
    return find_images(folder)[0]


def _unreachable(path: Path) -> str | None:
    """Why an image-named path that is not a regular file cannot be read (None: a folder, not an image)."""
    if path.is_dir():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop like this
        return "symbolic link loop"
    except OSError as exc:
        return "symbolic link loop" if exc.errno == errno.ELOOP else f"broken link or unreadable ({exc.strerror})"
    return "not a regular file"


def find_images(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(image files, [(path, reason)] of image-named entries that cannot be read: link loops, dangling links)."""
    found, skipped = [], []
    for p in folder.rglob("*"):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.is_file():
            found.append(p)
        elif (reason := _unreachable(p)) is not None:
            skipped.append((p, reason))
    return sorted(found), sorted(skipped)


@dataclass
class Dataset:
    name: str
    root: Path
    items: list[ImageItem]
    #: (image id, reason) of image-named entries that cannot be read (the sweep reports them)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: facts a reader of the results should know (e.g. how many images were grayscale and converted)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_folder(cls, name: str, folder: Path) -> "Dataset":
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetUnavailable(f"dataset folder {folder} does not exist")
        paths, skipped = find_images(folder)
        if not paths:
            raise DatasetUnavailable(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
        return cls(name, folder, [ImageItem(p.relative_to(folder).as_posix(), p) for p in paths],
                   [(p.relative_to(folder).as_posix(), reason) for p, reason in skipped])
