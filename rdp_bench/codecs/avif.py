"""AVIF (libavif + libaom through Pillow's native plugin): ``avif`` is 4:4:4, ``avif420`` is 4:2:0.

8-bit, full range, libavif's default BT.601 matrix, speed 6 (libavif's default), one thread so that
timings are comparable; decoding uses whatever AV1 decoder libavif has (dav1d in the wheels).
"""

from __future__ import annotations

import io
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from PIL import Image

from rdp_bench.codecs.base import Availability, Codec, RatePoint
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor

AVIF_ENCODER = "aom"
AVIF_SPEED = 6


class AVIF(Codec):
    name: ClassVar[str] = "avif"
    description: ClassVar[str] = "AVIF via Pillow/libavif, encoder aom, 4:4:4, speed 6"
    subsampling: ClassVar[str] = "4:4:4"
    #: ~0.08 to ~1.4 bpp on the sample photos (measured)
    qualities: ClassVar[tuple[int, ...]] = (5, 20, 40, 60, 75, 88)

    @classmethod
    def availability(cls) -> Availability:
        try:
            from PIL import _avif
        except ImportError:
            return Availability(False, "Pillow was built without AVIF support (needs Pillow >= 11.3 wheels)")
        if not _avif.encoder_codec_available(AVIF_ENCODER):
            return Availability(False, f"libavif in this Pillow has no {AVIF_ENCODER} encoder")
        return Availability(True)

    def provenance(self) -> dict[str, Any]:
        from PIL import _avif

        return {"libavif": _avif.libavif_version, "codecs": _avif.codec_versions(), "speed": AVIF_SPEED,
                "subsampling": self.subsampling}

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"q{q}", {"quality": q}) for q in self.qualities]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[bytes]:
        out = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(tensor_to_uint8(img)).save(
                buf, format="AVIF", quality=rate_point.params["quality"], subsampling=self.subsampling,
                codec=AVIF_ENCODER, speed=AVIF_SPEED, range="full", max_threads=1,
            )
            out.append(buf.getvalue())
        return out

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        images = []
        for rec in records:
            if rec.payload[4:8] != b"ftyp":
                raise BitstreamError(f"{self.name}: payload is not an AVIF (ISOBMFF) file")
            with Image.open(io.BytesIO(rec.payload), formats=["AVIF"]) as im:
                im.load()
                if im.size != (rec.width, rec.height):
                    raise BitstreamError(f"{self.name}: picture is {im.size}, header says {rec.width}x{rec.height}")
                images.append(uint8_to_tensor(np.asarray(im.convert("RGB"))))
        return images


class AVIF420(AVIF):
    name: ClassVar[str] = "avif420"
    description: ClassVar[str] = "AVIF via Pillow/libavif, encoder aom, 4:2:0, speed 6"
    subsampling: ClassVar[str] = "4:2:0"
