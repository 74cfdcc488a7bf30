"""JPEG (libjpeg-turbo through Pillow): 4:2:0 chroma, optimized Huffman tables, baseline."""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import features

from rdp_bench.codecs.base import RateControl, RatePoint
from rdp_bench.codecs.pillow_codec import PillowCodec


class JPEG(PillowCodec):
    name = "jpeg"
    pil_format: ClassVar[str] = "JPEG"
    description = "JPEG via Pillow/libjpeg-turbo, 4:2:0, optimize=True"
    #: ~0.11 to ~1.6 bpp on the sample photos (measured)
    qualities = (5, 10, 20, 35, 55, 75, 90)
    rate_control: ClassVar[RateControl] = RateControl("quality", 1, 100)

    def provenance(self) -> dict[str, Any]:
        return {"libjpeg": features.version("jpg"), "libjpeg_turbo": features.check_feature("libjpeg_turbo")}

    def save_options(self, rate_point: RatePoint) -> dict[str, Any]:
        return {"quality": rate_point.params["quality"], "subsampling": "4:2:0", "optimize": True}

    def has_signature(self, payload: bytes) -> bool:
        return payload.startswith(b"\xff\xd8")  # SOI marker
