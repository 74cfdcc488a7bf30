"""AVIF (libavif + libaom through Pillow's native plugin): ``avif`` is 4:4:4, ``avif420`` is 4:2:0.

8-bit, full range, libavif's default BT.601 matrix, speed 6 (libavif's default), one thread so that
timings are comparable; decoding uses whatever AV1 decoder libavif has (dav1d in the wheels).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rdp_bench.codecs.base import Availability, RateControl, RatePoint
from rdp_bench.codecs.pillow_codec import PillowCodec

AVIF_ENCODER = "aom"
AVIF_SPEED = 6


class AVIF(PillowCodec):
    name: ClassVar[str] = "avif"
    pil_format: ClassVar[str] = "AVIF"
    description: ClassVar[str] = "AVIF via Pillow/libavif, encoder aom, 4:4:4, speed 6"
    subsampling: ClassVar[str] = "4:4:4"
    #: ~0.08 to ~1.4 bpp on the sample photos (measured)
    qualities: ClassVar[tuple[int, ...]] = (5, 20, 40, 60, 75, 88)
    rate_control: ClassVar[RateControl] = RateControl("quality", 0, 100)

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

    def save_options(self, rate_point: RatePoint) -> dict[str, Any]:
        return {"quality": rate_point.params["quality"], "subsampling": self.subsampling, "codec": AVIF_ENCODER,
                "speed": AVIF_SPEED, "range": "full", "max_threads": 1}

    def has_signature(self, payload: bytes) -> bool:
        return payload[4:8] == b"ftyp"  # ISOBMFF


class AVIF420(AVIF):
    name: ClassVar[str] = "avif420"
    description: ClassVar[str] = "AVIF via Pillow/libavif, encoder aom, 4:2:0, speed 6"
    subsampling: ClassVar[str] = "4:2:0"
