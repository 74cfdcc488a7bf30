"""JPEG XL (libjxl through imagecodecs): lossy VarDCT, sweep of the butteraugli distance at effort 7."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from rdp_bench.codecs.base import Availability, Codec, RateControl, RatePoint
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor

JXL_EFFORT = 7  # libjxl's default ("squirrel")
JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")
_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


class _LSBReader:
    """JPEG XL's bit order: least significant bit of each byte first."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        if self.pos + n > 8 * len(self.data):
            raise BitstreamError("jxl: codestream ends inside its header")
        value = 0
        for i in range(n):
            byte = self.data[(self.pos + i) >> 3]
            value |= ((byte >> ((self.pos + i) & 7)) & 1) << i
        self.pos += n
        return value

    def u32(self, *dists: tuple[int, int]) -> int:
        """U32(): a 2-bit selector, then ``offset + u(bits)`` of the chosen (offset, bits)."""
        offset, bits = dists[self.u(2)]
        return offset + (self.u(bits) if bits else 0)


_SIZE_DISTS = ((1, 9), (1, 13), (1, 18), (1, 30))


def _size_header(r: _LSBReader) -> tuple[int, int]:
    small = r.u(1)
    height = (r.u(5) + 1) * 8 if small else r.u32(*_SIZE_DISTS)
    ratio = r.u(3)
    if ratio:
        num, den = _RATIOS[ratio]
        width = height * num // den
    else:
        width = (r.u(5) + 1) * 8 if small else r.u32(*_SIZE_DISTS)
    return height, width


def _skip_preview_header(r: _LSBReader) -> None:
    div8 = r.u(1)
    dists = ((16, 0), (32, 0), (1, 5), (33, 9)) if div8 else ((1, 6), (65, 8), (321, 10), (1345, 12))
    r.u32(*dists)
    if r.u(3) == 0:
        r.u32(*dists)


def _codestream(payload: bytes) -> bytes:
    """The bare codestream, or the first ``jxlc``/``jxlp`` box of the ISOBMFF container form."""
    if payload.startswith(b"\xff\x0a"):
        return payload
    pos = 0
    while pos + 8 <= len(payload):
        size, kind = int.from_bytes(payload[pos : pos + 4], "big"), payload[pos + 4 : pos + 8]
        head = 8
        if size == 1:
            if pos + 16 > len(payload):
                break
            size, head = int.from_bytes(payload[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = len(payload) - pos
        if size < head:
            raise BitstreamError("jxl: malformed container box")
        if kind == b"jxlc":
            return payload[pos + head : pos + size]
        if kind == b"jxlp":
            return payload[pos + head + 4 : pos + size]  # after the 4-byte part index
        pos += size
    raise BitstreamError("jxl: container holds no codestream box")


def jxl_declared(payload: bytes) -> dict[str, int]:
    """Image size, orientation and animation flag a JPEG XL stream declares (SizeHeader, ImageMetadata start).

    Reads a few bytes; nothing is decoded.
    """
    stream = _codestream(payload)
    if not stream.startswith(b"\xff\x0a"):
        raise BitstreamError("jxl: codestream lacks its signature")
    r = _LSBReader(stream[2:64])
    height, width = _size_header(r)
    orientation, animated = 1, 0
    if not r.u(1):  # not all_default
        if r.u(1):  # extra_fields
            orientation = 1 + r.u(3)
            if r.u(1):  # intrinsic size
                _size_header(r)
            if r.u(1):
                _skip_preview_header(r)
            animated = r.u(1)
    return {"height": height, "width": width, "orientation": orientation, "animated": animated}


class JXL(Codec):
    name = "jxl"
    description = "JPEG XL via imagecodecs/libjxl, distance sweep, effort 7"
    #: ~0.13 to ~1.5 bpp on the sample photos (measured)
    distances = (18.0, 9.0, 5.0, 2.5, 1.4, 0.8)
    #: --target-bpp bisects the distance in log space (smaller distance, more bits)
    rate_control: ClassVar[RateControl] = RateControl("distance", 0.1, 25.0, integer=False, more_bits_when_higher=False,
                                                      log_scale=True, prefix="d")

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
            declared = jxl_declared(rec.payload)  # before libjxl sizes anything
            if (declared["height"], declared["width"]) != (rec.height, rec.width):
                raise BitstreamError(f"jxl: stream declares {declared['width']}x{declared['height']}, "
                                     f"header says {rec.width}x{rec.height}")
            if declared["animated"] or declared["orientation"] != 1:
                raise BitstreamError("jxl: animated or re-oriented stream; this codec writes one upright picture")
            arr = np.asarray(imagecodecs.jpegxl_decode(rec.payload, index=0, numthreads=1))
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            if arr.shape != (rec.height, rec.width, 3) or arr.dtype != np.uint8:
                raise BitstreamError(f"jxl: decoded {arr.shape} {arr.dtype}, header says {rec.height}x{rec.width}x3 uint8")
            images.append(uint8_to_tensor(arr))
        return images
