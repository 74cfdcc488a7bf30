"""Training crops from ``shared/photos``, packed into one uint8 ``.npy`` file.

One file, because a device run carries the working tree plus named ignored paths (64 MiB in all):
pack once, carry ``.traindata``. The bundled ``samples`` images are held out, so evaluation on
``samples`` never sees training pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rdp_bench.datasets import SAMPLES_DIR
from rdp_bench.datasets.base import list_images
from rdp_bench.imageio import load_image_uint8

DEFAULT_PHOTOS = Path(os.environ.get("RDP_BENCH_PHOTOS", Path(__file__).resolve().parents[2].parent / "shared" / "photos"))
DEFAULT_PACK = Path(__file__).resolve().parents[2] / ".traindata" / "crops256.npy"


def training_photos(photos_dir: Path = DEFAULT_PHOTOS) -> list[Path]:
    held_out = {p.name for p in list_images(SAMPLES_DIR)}
    return [p for p in list_images(Path(photos_dir)) if p.name not in held_out]


def pack_crops(out: Path = DEFAULT_PACK, photos_dir: Path = DEFAULT_PHOTOS, crop: int = 256,
               per_image: int = 24, seed: int = 0) -> Path:
    """Random ``crop``x``crop`` crops (with flips) of every training photo -> N x crop x crop x 3 uint8."""
    rng = np.random.default_rng(seed)
    crops = []
    for path in training_photos(photos_dir):
        img = load_image_uint8(path)
        h, w, _ = img.shape
        if min(h, w) < crop:
            continue
        for _ in range(per_image):
            y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            c = img[y : y + crop, x : x + crop]
            if rng.random() < 0.5:
                c = c[:, ::-1]
            crops.append(np.ascontiguousarray(c))
    if not crops:
        raise FileNotFoundError(f"no training photos of at least {crop}px found under {photos_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.stack(crops))
    return out


class CropBatches:
    """Endless random batches of float crops in [0,1], optionally re-cropped smaller."""

    def __init__(self, pack: Path = DEFAULT_PACK, size: int | None = None, seed: int = 0) -> None:
        if not Path(pack).exists():
            pack_crops(Path(pack))
        self.data = np.load(pack, mmap_mode="r")
        self.size = size or self.data.shape[1]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, batch_size: int) -> torch.Tensor:
        idx = self.rng.integers(0, len(self.data), batch_size)
        full = self.data.shape[1]
        out = np.empty((batch_size, self.size, self.size, 3), np.uint8)
        for i, j in enumerate(idx):
            y, x = self.rng.integers(0, full - self.size + 1, 2)
            out[i] = self.data[j, y : y + self.size, x : x + self.size]
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
