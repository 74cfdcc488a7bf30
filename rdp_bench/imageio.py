"""Image loading with explicit conversions: every image becomes 8-bit RGB, then float in [0, 1]."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from rdp_bench.container import DEFAULT_MAX_PIXELS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
EXIF_ORIENTATION = 0x0112


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


def _pixel_limit(max_pixels: int | None) -> int:
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    # Pillow refuses images over 2x its own limit inside Image.open; lift it to ours when ours is larger
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    return limit


def _check_still(img: Image.Image, path: Path) -> None:
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        # a still-image benchmark: which frame to score is the user's call, not ours
        raise ImageReadError(f"cannot read image {path}: animated ({frames} frames); rdp-bench measures still "
                             "images, so save the frame you want as its own file")


_ORIENT_OPS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}


def _orientation(img: Image.Image) -> int:
    """EXIF orientation from the file's header, without decoding pixels (Pillow's PNG ``getexif`` would
    decode the whole image to look for a late eXIf chunk; one before the pixel data is what counts here)."""
    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(EXIF_ORIENTATION, 1) or 1)
    return int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)


def _oriented_size(img: Image.Image, path: Path, limit: int) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied (5..8 swap the sides); the pixel limit is
    checked first, on the header's size alone."""
    w, h = img.size
    if w * h > limit:
        raise ImageReadError(f"cannot read image {path}: {w}x{h} = {w * h / 1e6:.1f} MP is over the "
                             f"{limit / 1e6:g} MP limit (raise it with --max-pixels)")
    return (h, w) if _orientation(img) in (5, 6, 7, 8) else (w, h)


def image_shape(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) of an image as ``load_image_uint8`` returns it, from the header only."""
    path = Path(path)
    limit = _pixel_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            with Image.open(path) as img:
                w, h = _oriented_size(img, path, limit)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc} (over the {limit} pixel limit, --max-pixels)") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    return h, w


def load_image_uint8(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as an HxWx3 uint8 RGB array. Raises ImageReadError naming the file.

    The size is checked against ``max_pixels`` (default ``DEFAULT_MAX_PIXELS``) from the header, before
    the pixels are decoded. EXIF orientation is applied, as viewers do; animated images are refused.
    """
    path = Path(path)
    limit = _pixel_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _oriented_size(img, path, limit)  # before any pixel is decoded
                orientation = _orientation(img)
                _check_still(img, path)
                img.load()
                if orientation in _ORIENT_OPS:
                    img = img.transpose(_ORIENT_OPS[orientation])  # shown as viewers show it
                return _to_rgb8(img)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc} (over the {limit} pixel limit, --max-pixels)") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
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
