"""WebP (libwebp through Pillow): lossy, method 6 (slowest, best), 4:2:0 as the format requires."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from rdp_bench.codecs.base import Codec, RatePoint
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor


class WebP(Codec):
    name = "webp"
    description = "WebP via Pillow/libwebp, lossy, method=6"
    #: ~0.08 to ~1.4 bpp on the sample photos (measured)
    qualities = (0, 10, 25, 50, 75, 92)

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"q{q}", {"quality": q}) for q in self.qualities]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[bytes]:
        out = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(tensor_to_uint8(img)).save(
                buf, format="WEBP", quality=rate_point.params["quality"], method=6, lossless=False, exact=False
            )
            out.append(buf.getvalue())
        return out

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        images = []
        for rec in records:
            if rec.payload[:4] != b"RIFF" or rec.payload[8:12] != b"WEBP":
                raise BitstreamError("webp: payload is not a WebP file")
            with Image.open(io.BytesIO(rec.payload), formats=["WEBP"]) as im:
                im.load()
                if im.size != (rec.width, rec.height):
                    raise BitstreamError(f"webp: picture is {im.size}, header says {rec.width}x{rec.height}")
                images.append(uint8_to_tensor(np.asarray(im.convert("RGB"))))
        return images
