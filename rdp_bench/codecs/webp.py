"""WebP (libwebp through Pillow): lossy, method 6 (slowest, best), 4:2:0 as the format requires."""

from __future__ import annotations

from typing import Any, ClassVar

from rdp_bench.codecs.base import RateControl, RatePoint
from rdp_bench.codecs.pillow_codec import PillowCodec


class WebP(PillowCodec):
    name = "webp"
    pil_format: ClassVar[str] = "WEBP"
    description = "WebP via Pillow/libwebp, lossy, method=6"
    #: ~0.08 to ~1.4 bpp on the sample photos (measured)
    qualities = (0, 10, 25, 50, 75, 92)
    rate_control: ClassVar[RateControl] = RateControl("quality", 0, 100)

    def save_options(self, rate_point: RatePoint) -> dict[str, Any]:
        return {"quality": rate_point.params["quality"], "method": 6, "lossless": False, "exact": False}

    def has_signature(self, payload: bytes) -> bool:
        return payload[:4] == b"RIFF" and payload[8:12] == b"WEBP"
