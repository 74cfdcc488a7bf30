"""Shared encode/decode loop for codecs that Pillow reads and writes natively (JPEG, WebP, AVIF)."""

from __future__ import annotations

import io
from abc import abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from PIL import Image

from rdp_bench.codecs.base import Codec, RatePoint
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor


def check_declared(codec: str, im: Image.Image, rec: Container) -> None:
    """Compare the size (and frame count) a lazily opened Pillow image declares with the container header.

    Called between ``Image.open`` (header parse) and ``load`` (the allocation), so a stream declaring
    another size is refused before its pixels are decoded.
    """
    if im.size != (rec.width, rec.height):
        raise BitstreamError(f"{codec}: stream declares {im.size[0]}x{im.size[1]}, header says {rec.width}x{rec.height}")
    frames = getattr(im, "n_frames", 1)
    if frames != 1:
        raise BitstreamError(f"{codec}: stream holds {frames} frames, expected one picture")


class PillowCodec(Codec):
    """A subclass names the Pillow format, its quality sweep, its save options and its file signature."""

    pil_format: ClassVar[str]
    qualities: ClassVar[tuple[int, ...]]

    @abstractmethod
    def save_options(self, rate_point: RatePoint) -> dict[str, Any]:
        """Keyword arguments for ``Image.save`` at this rate point."""

    @abstractmethod
    def has_signature(self, payload: bytes) -> bool:
        """Whether the payload starts like a file of this format (cheap check before Pillow parses it)."""

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"q{q}", {"quality": q}) for q in self.qualities]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[bytes]:
        out = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(tensor_to_uint8(img)).save(buf, format=self.pil_format, **self.save_options(rate_point))
            out.append(buf.getvalue())
        return out

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        images = []
        for rec in records:
            if not self.has_signature(rec.payload):
                raise BitstreamError(f"{self.name}: payload is not a {self.pil_format} file")
            # Pillow refuses truncated files (LOAD_TRUNCATED_IMAGES is off), so damage raises here
            with Image.open(io.BytesIO(rec.payload), formats=[self.pil_format]) as im:
                check_declared(self.name, im, rec)  # Image.open parsed only the header: nothing decoded yet
                im.load()
                images.append(uint8_to_tensor(np.asarray(im.convert("RGB"))))
        return images
