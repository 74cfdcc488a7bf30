"""Image loading with explicit conversions: every image becomes 8-bit RGB, then float in [0, 1]."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(OSError):
    """An image file could not be read; the message names the file."""


def _to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit int) grayscale: rescale to 8 bits explicitly instead of letting
        # Pillow clip it; the benchmark works on 8-bit images, as the published protocols do.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Alpha is dropped (not composited): codecs are compared on the colour channels only.
        img = img.convert("RGBA").convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, ...
    return np.asarray(img, dtype=np.uint8)


def load_image_uint8(path: str | Path) -> np.ndarray:
    """Read an image as an HxWx3 uint8 RGB array. Raises ImageReadError naming the file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _to_rgb8(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def uint8_to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image as a 3xHxW float32 tensor in [0, 1]."""
    return uint8_to_tensor(load_image_uint8(path))


def tensor_to_uint8(img: torch.Tensor) -> np.ndarray:
    """3xHxW float in [0,1] -> HxWx3 uint8, rounding like CompressAI's evaluation (clamp, *255, round)."""
    return img.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Round a reconstruction to the 8-bit grid, as a saved PNG would be."""
    return img.detach().clamp(0, 1).mul(255).round().div(255)


def save_image(img: torch.Tensor, path: str | Path) -> None:
    Image.fromarray(tensor_to_uint8(img)).save(path)


def image_sha256(arr: np.ndarray) -> str:
    """Content hash of the decoded pixels (not the file bytes), so re-encoded copies hash alike."""
    h = hashlib.sha256()
    h.update(f"{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
