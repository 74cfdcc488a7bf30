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


#: Shared photos no bundled model trains on: the validation set of every training job (from several
#: sources, photographic content only). ``samples`` is held out as well.
VALIDATION_PHOTOS: tuple[str, ...] = (
    "lomiri16_Bridge_by_Sander_Klootwijk.png", "lomiri16_Dragonfly_by_Bolly.png",
    "lomiri16_picosdeeuropa_by_Aitzol_Berasategi.png", "mate_LadyBird.png", "mate_Storm.png",
    "plasma_BytheWater.png", "lxqt_fog.png", "lxqt_Valendas.png", "skimage_astronaut.png", "scipy_face.png",
    "imgaug_quokka.png", "kivy_cityCC0.png",
)


def split_photos(photos_dir: Path = DEFAULT_PHOTOS) -> tuple[list[Path], list[Path]]:
    """(training, validation) photos of ``photos_dir``; ``samples`` images are in neither."""
    # by stem, so a re-encoded copy (the .webp pack of scripts/gpu_prepare.sh) splits the same way
    held_out = {p.stem for p in list_images(SAMPLES_DIR)}
    photos = [p for p in list_images(Path(photos_dir)) if p.stem not in held_out]
    if not photos:
        raise FileNotFoundError(f"no training photos under {photos_dir}: put the shared photos there "
                                "or set RDP_BENCH_PHOTOS")
    val_stems = {Path(name).stem for name in VALIDATION_PHOTOS}
    val = [p for p in photos if p.stem in val_stems]
    return [p for p in photos if p.stem not in val_stems], val


class RandomCrops:
    """Endless random crops (with horizontal flips) of whole photos held in memory.

    The generator's state is part of a job's resume state (``state()`` / ``restore()``), so a resumed
    run draws the same batches it would have drawn without the interruption."""

    def __init__(self, paths: list[Path], size: int, seed: int = 0) -> None:
        self.images = [load_image_uint8(p) for p in paths]
        self.images = [im for im in self.images if min(im.shape[:2]) >= size]
        if not self.images:
            raise FileNotFoundError(f"no training photo has both sides >= {size}px")
        self.size = size
        self.rng = np.random.default_rng(seed)
        # Sample images in proportion to their area, so every pixel is about equally likely.
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], np.float64)
        self.weights = areas / areas.sum()

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def sample(self, batch_size: int) -> torch.Tensor:
        s = self.size
        out = np.empty((batch_size, s, s, 3), np.uint8)
        for i, j in enumerate(self.rng.choice(len(self.images), batch_size, p=self.weights)):
            im = self.images[j]
            y = self.rng.integers(0, im.shape[0] - s + 1)
            x = self.rng.integers(0, im.shape[1] - s + 1)
            c = im[y : y + s, x : x + s]
            out[i] = c[:, ::-1] if self.rng.random() < 0.5 else c
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def validation_images(paths: list[Path], max_side: int = 512, multiple: int = 64) -> list[torch.Tensor]:
    """Centre crops (at most ``max_side``, sides a multiple of ``multiple``) as 1x3xHxW in [0, 1]."""
    out = []
    for p in paths:
        im = load_image_uint8(p)
        h = min(max_side, im.shape[0] // multiple * multiple)
        w = min(max_side, im.shape[1] // multiple * multiple)
        y, x = (im.shape[0] - h) // 2, (im.shape[1] - w) // 2
        crop = np.array(im[y : y + h, x : x + w])
        out.append(torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255.0))
    return out
