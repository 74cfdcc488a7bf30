"""JPEG (libjpeg-turbo through Pillow): 4:2:0 chroma, optimized Huffman tables, baseline."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, features

from rdp_bench.codecs.base import Codec, RatePoint
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor


class JPEG(Codec):
    name = "jpeg"
    description = "JPEG via Pillow/libjpeg-turbo, 4:2:0, optimize=True"
    #: ~0.11 to ~1.6 bpp on the sample photos (measured)
    qualities = (5, 10, 20, 35, 55, 75, 90)

    def provenance(self) -> dict[str, Any]:
        return {"libjpeg": features.version("jpg"), "libjpeg_turbo": features.check_feature("libjpeg_turbo")}

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"q{q}", {"quality": q}) for q in self.qualities]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[bytes]:
        out = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(tensor_to_uint8(img)).save(
                buf, format="JPEG", quality=rate_point.params["quality"], subsampling="4:2:0", optimize=True
            )
            out.append(buf.getvalue())
        return out

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        images = []
        for rec in records:
            if not rec.payload.startswith(b"\xff\xd8"):
                raise BitstreamError("jpeg: payload does not start with a JPEG SOI marker")
            # Pillow refuses truncated files (LOAD_TRUNCATED_IMAGES is off), so damage raises here
            with Image.open(io.BytesIO(rec.payload), formats=["JPEG"]) as im:
                im.load()
                if im.size != (rec.width, rec.height):
                    raise BitstreamError(f"jpeg: picture is {im.size}, header says {rec.width}x{rec.height}")
                images.append(uint8_to_tensor(np.asarray(im.convert("RGB"))))
        return images
