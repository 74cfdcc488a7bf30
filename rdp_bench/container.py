"""The rdp-bench bitstream container: one self-describing byte string per image.

Layout (big-endian)::

    magic      4  b"RDPB"
    version    1  FORMAT_VERSION
    name_len   1  length of the codec name
    codec      n  codec name, ASCII
    rate_id    2  index of the rate point in the codec's list
    height     4
    width      4
    pay_len    4  payload length
    payload    m  codec-specific bytes
    crc32      4  CRC32 of every byte before it

bpp is always computed from ``len(container)``: the header and the CRC are part of the rate.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"RDPB"
FORMAT_VERSION = 1
_FIXED = struct.Struct(">4sBB")
_SHAPE = struct.Struct(">HIII")
_CRC = struct.Struct(">I")
MAX_SIDE = 1 << 20
#: default pixel limit of decoding and of input images (``--max-pixels``): 100 MP, about a 12000x8000 photo
DEFAULT_MAX_PIXELS = 100_000_000


class BitstreamError(ValueError):
    """A bitstream is corrupt, truncated, from another codec, or not an rdp-bench container."""


@dataclass(frozen=True)
class Container:
    codec: str
    rate_id: int
    height: int
    width: int
    payload: bytes

    def pack(self) -> bytes:
        name = self.codec.encode("ascii")
        if not 0 < len(name) < 256:
            raise ValueError(f"codec name must be 1..255 ASCII bytes, got {self.codec!r}")
        if not (0 < self.height <= MAX_SIDE and 0 < self.width <= MAX_SIDE):
            raise ValueError(f"image size {self.height}x{self.width} is out of range")
        body = (
            _FIXED.pack(MAGIC, FORMAT_VERSION, len(name))
            + name
            + _SHAPE.pack(self.rate_id, self.height, self.width, len(self.payload))
            + self.payload
        )
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def unpack(cls, data: bytes, expected_codec: str | None = None) -> "Container":
        data = bytes(data)
        if len(data) < _FIXED.size:
            raise BitstreamError(f"bitstream too short ({len(data)} bytes) to be an rdp-bench container")
        magic, version, name_len = _FIXED.unpack_from(data, 0)
        if magic != MAGIC:
            raise BitstreamError(f"not an rdp-bench bitstream (magic {magic!r}, expected {MAGIC!r})")
        if version != FORMAT_VERSION:
            raise BitstreamError(f"unsupported container version {version} (this build reads {FORMAT_VERSION})")
        header_end = _FIXED.size + name_len + _SHAPE.size
        if len(data) < header_end + _CRC.size:
            raise BitstreamError(f"bitstream truncated inside the header ({len(data)} bytes)")
        _, _, _, payload_len = _SHAPE.unpack_from(data, _FIXED.size + name_len)
        expected_len = header_end + payload_len + _CRC.size
        if len(data) != expected_len:
            raise BitstreamError(
                f"bitstream length {len(data)} does not match the header's {expected_len} bytes (truncated or padded)"
            )
        (crc,) = _CRC.unpack_from(data, expected_len - _CRC.size)
        if zlib.crc32(data[: expected_len - _CRC.size]) != crc:
            raise BitstreamError("bitstream checksum mismatch: the data is corrupt")
        try:
            codec = data[_FIXED.size : _FIXED.size + name_len].decode("ascii")
        except UnicodeDecodeError as exc:  # CRC passed, so this is a foreign writer
            raise BitstreamError("codec name in the header is not ASCII") from exc
        rate_id, height, width, _ = _SHAPE.unpack_from(data, _FIXED.size + name_len)
        if expected_codec is not None and codec != expected_codec:
            raise BitstreamError(f"bitstream was written by codec {codec!r}, not {expected_codec!r}")
        if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
            raise BitstreamError(f"invalid image size {height}x{width} in header")
        return cls(codec, rate_id, height, width, data[header_end : header_end + payload_len])


def bits_per_pixel(bitstream: bytes, height: int, width: int) -> float:
    """bpp of a whole container, header and checksum included."""
    return 8.0 * len(bitstream) / (height * width)
