"""JPEG XL (libjxl through imagecodecs): lossy VarDCT, sweep of the butteraugli distance at effort 7."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from rdp_bench.codecs.base import Availability, Codec, RatePoint
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor

JXL_EFFORT = 7  # libjxl's default ("squirrel")
JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


class JXL(Codec):
    name = "jxl"
    description = "JPEG XL via imagecodecs/libjxl, distance sweep, effort 7"
    #: ~0.13 to ~1.5 bpp on the sample photos (measured)
    distances = (18.0, 9.0, 5.0, 2.5, 1.4, 0.8)

    @classmethod
    def availability(cls) -> Availability:
        try:
            import imagecodecs
        except ImportError:
            return Availability(False, "needs imagecodecs (pip install imagecodecs)")
        if not imagecodecs.JPEGXL.available:
            return Availability(False, "this imagecodecs build lacks libjxl")
        return Availability(True)

    def provenance(self) -> dict[str, Any]:
        import imagecodecs

        return {"imagecodecs": imagecodecs.__version__, "libjxl": imagecodecs.jpegxl_version(), "effort": JXL_EFFORT}

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"d{d:g}", {"distance": d}) for d in self.distances]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[bytes]:
        import imagecodecs

        return [
            bytes(imagecodecs.jpegxl_encode(tensor_to_uint8(img), distance=rate_point.params["distance"],
                                            effort=JXL_EFFORT, numthreads=1))
            for img in images
        ]

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        import imagecodecs

        images = []
        for rec in records:
            if not rec.payload.startswith(JXL_SIGNATURES):
                raise BitstreamError("jxl: payload is not a JPEG XL codestream")
            arr = np.asarray(imagecodecs.jpegxl_decode(rec.payload, numthreads=1))
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            if arr.shape != (rec.height, rec.width, 3) or arr.dtype != np.uint8:
                raise BitstreamError(f"jxl: decoded {arr.shape} {arr.dtype}, header says {rec.height}x{rec.width}x3 uint8")
            images.append(uint8_to_tensor(arr))
        return images
