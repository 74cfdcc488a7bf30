"""JPEG 2000 (OpenJPEG through Pillow): raw codestream, 9/7 irreversible wavelet, colour transform on.

Pillow's default ``mct=0`` codes R, G and B independently and loses about 4 dB; ``mct=1`` applies the
irreversible colour transform (ICT) first, as every published JPEG 2000 anchor does. The rate is set
as a compression ratio against 24-bit RGB (``quality_mode="rates"``), so bpp ~ 24 / ratio.
"""

from __future__ import annotations

import io
from typing import ClassVar, Sequence

import numpy as np
import torch
from PIL import Image

from rdp_bench.codecs.base import Codec, RateControl, RatePoint
from rdp_bench.codecs.pillow_codec import check_declared
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor

J2K_SOC, J2K_EOC = b"\xff\x4f", b"\xff\xd9"
J2K_MAX_RESOLUTIONS = 6  # OpenJPEG's default: 5 decomposition levels


def resolutions_for(height: int, width: int) -> int:
    """OpenJPEG needs every side >= 2**(resolutions-1); small images get fewer levels."""
    return max(1, min(J2K_MAX_RESOLUTIONS, min(height, width).bit_length()))


class JPEG2000(Codec):
    name = "jpeg2000"
    description = "JPEG 2000 via Pillow/OpenJPEG, irreversible 9/7, mct=1, rate = 24/ratio bpp"
    #: compression ratios vs 24 bpp: 0.05, 0.12, 0.24, 0.48, 0.8, 1.5 bpp
    ratios = (480, 200, 100, 50, 30, 16)
    #: --target-bpp bisects the ratio in log space (24/ratio bpp before headers)
    rate_control: ClassVar[RateControl] = RateControl("ratio", 4.0, 2000.0, integer=False, more_bits_when_higher=False,
                                                      log_scale=True, prefix="r")

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"r{r}", {"ratio": r}) for r in self.ratios]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[bytes]:
        out = []
        for img in images:
            rgb = tensor_to_uint8(img)
            buf = io.BytesIO()
            Image.fromarray(rgb).save(
                buf, format="JPEG2000", no_jp2=True, irreversible=True, mct=1,
                quality_mode="rates", quality_layers=[float(rate_point.params["ratio"])],
                num_resolutions=resolutions_for(*rgb.shape[:2]),
            )
            out.append(buf.getvalue())
        return out

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        images = []
        for rec in records:
            # OpenJPEG decodes a truncated codestream silently (it is progressive): insist on both markers.
            if not (rec.payload.startswith(J2K_SOC) and rec.payload.endswith(J2K_EOC)):
                raise BitstreamError("jpeg2000: payload is not a complete J2K codestream (SOC ... EOC)")
            with Image.open(io.BytesIO(rec.payload), formats=["JPEG2000"]) as im:
                check_declared(self.name, im, rec)  # the SIZ marker, parsed before OpenJPEG allocates
                im.load()
                images.append(uint8_to_tensor(np.asarray(im.convert("RGB"))))
        return images
