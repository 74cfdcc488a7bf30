"""JPEG (libjpeg-turbo through Pillow): 4:2:0 chroma, optimized Huffman tables, baseline."""

from __future__ import annotations

import io
from typing import Sequence

import torch
from PIL import Image

from rdp_bench.codecs.base import Codec, RatePoint
from rdp_bench.container import Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor

import numpy as np


class JPEG(Codec):
    name = "jpeg"
    description = "JPEG via Pillow/libjpeg-turbo, 4:2:0, optimize=True"
    qualities = (5, 10, 20, 35, 55, 75, 90)

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
            with Image.open(io.BytesIO(rec.payload), formats=["JPEG"]) as im:
                im.load()
                images.append(uint8_to_tensor(np.asarray(im.convert("RGB"))))
        return images
