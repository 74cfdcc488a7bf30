"""The rdp-bench bitstream container: one self-describing byte string per image.

Format v2 (written), big-endian, the same 25 bytes of framing for every codec::

    magic      4  b"RDPB"
    version    1  2
    codec_id   2  the codec's stable number (``rdp_bench.codecs.CODEC_IDS``; assigned once, never reused)
    rate_id    2  the stable id of the rate point (``Codec.rate_id``, declared in the codec's rate table)
    height     4
    width      4
    pay_len    4  payload length
    payload    m  codec-specific bytes: everything else the decoder needs
    crc32      4  CRC32 of every byte before it

**bpp counts the payload only**: a row's ``bpp`` is ``8 x len(payload) / (H x W)``, the codec's own
bitstream, as CompressAI's ``eval_model`` and published RD curves count it. The framing is real bytes on
disk too, so it is recorded next to it: ``container_bytes`` (the file) and ``bpp_container``
(``8 x container_bytes / (H x W)``); see ``Rate``. Because the framing is fixed, two variants of one
codec differ in bpp by exactly the bytes their payloads differ by.

**Format v1** (written until the codec-id change) stored the codec's *name* (``name_len`` 1 byte + the
ASCII name) where v2 has ``codec_id``, so its framing was ``24 + len(name)`` bytes. Decision: v1 streams
are still *read* (``unpack`` parses both; the reader is a few lines and old run folders keep decoding, e.g.
when a metric is added to one), never written. Rows written under v1 counted the whole container in
``bpp``; ``legacy_rate_columns`` converts them exactly (payload = bytes - (24 + len(codec name))).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"RDPB"
FORMAT_VERSION = 2
_PREFIX = struct.Struct(">4sB")  # magic, version: the same in every version
_V2_HEADER = struct.Struct(">4sBHHIII")  # magic, version, codec id, rate id, height, width, payload length
_V1_NAME = struct.Struct(">B")  # v1: name length, then the name
_V1_SHAPE = struct.Struct(">HIII")  # v1: rate id, height, width, payload length
_CRC = struct.Struct(">I")
#: bytes of framing (header + CRC) of a v2 container, the same for every codec
FRAMING_BYTES = _V2_HEADER.size + _CRC.size
MAX_SIDE = 1 << 20
MAX_ID = 0xFFFF
#: default pixel limit of decoding and of input images (``--max-pixels``): 100 MP, about a 12000x8000 photo
DEFAULT_MAX_PIXELS = 100_000_000


class BitstreamError(ValueError):
    """A bitstream is corrupt, truncated, from another codec, or not an rdp-bench container."""


def v1_framing_bytes(codec: str) -> int:
    """Framing of a format-v1 container of ``codec``: 24 fixed bytes plus the codec's name."""
    return _PREFIX.size + _V1_NAME.size + len(codec.encode("ascii")) + _V1_SHAPE.size + _CRC.size


def _codec_ids():
    from rdp_bench.codecs import CODEC_IDS, RETIRED_CODEC_IDS  # the registry owns the ids (imported late: no cycle)

    return CODEC_IDS, RETIRED_CODEC_IDS


def _codec_name(codec_id: int) -> str:
    ids, retired = _codec_ids()
    for name, cid in ids.items():
        if cid == codec_id:
            return name
    if codec_id in retired:
        raise BitstreamError(f"bitstream was written by codec {retired[codec_id]!r} (id {codec_id}), "
                             "which this build no longer has")
    raise BitstreamError(f"codec id {codec_id} in the header belongs to no codec of this build "
                         "(a foreign writer or a newer rdp-bench)")


def _check_size(height: int, width: int) -> None:
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise BitstreamError(f"invalid image size {height}x{width} in header")


def _checked_payload(data: bytes, start: int, payload_len: int) -> bytes:
    expected_len = start + payload_len + _CRC.size
    if len(data) != expected_len:
        raise BitstreamError(
            f"bitstream length {len(data)} does not match the header's {expected_len} bytes (truncated or padded)"
        )
    (crc,) = _CRC.unpack_from(data, expected_len - _CRC.size)
    if zlib.crc32(data[: expected_len - _CRC.size]) != crc:
        raise BitstreamError("bitstream checksum mismatch: the data is corrupt")
    return data[start : start + payload_len]


def _expect(codec: str, expected: str | None) -> None:
    if expected is not None and codec != expected:
        raise BitstreamError(f"bitstream was written by codec {codec!r}, not {expected!r}")


@dataclass(frozen=True)
class Container:
    codec: str
    rate_id: int
    height: int
    width: int
    payload: bytes

    def pack(self) -> bytes:
        """The v2 container (the codec's name becomes its registered id)."""
        ids, _ = _codec_ids()
        if self.codec not in ids:
            raise ValueError(f"codec {self.codec!r} has no id in rdp_bench.codecs.CODEC_IDS")
        if not 0 <= self.rate_id <= MAX_ID:
            raise ValueError(f"rate id {self.rate_id} does not fit the header (0..{MAX_ID})")
        if not (0 < self.height <= MAX_SIDE and 0 < self.width <= MAX_SIDE):
            raise ValueError(f"image size {self.height}x{self.width} is out of range")
        body = _V2_HEADER.pack(MAGIC, FORMAT_VERSION, ids[self.codec], self.rate_id, self.height, self.width,
                               len(self.payload)) + self.payload
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def unpack(cls, data: bytes, expected_codec: str | None = None) -> "Container":
        """Parse and check a v2 (or v1) container; ``expected_codec``: refuse another codec's stream, by name."""
        data = bytes(data)
        if len(data) < _PREFIX.size:
            raise BitstreamError(f"bitstream too short ({len(data)} bytes) to be an rdp-bench container")
        magic, version = _PREFIX.unpack_from(data, 0)
        if magic != MAGIC:
            raise BitstreamError(f"not an rdp-bench bitstream (magic {magic!r}, expected {MAGIC!r})")
        if version == 1:
            return cls._unpack_v1(data, expected_codec)
        if version != FORMAT_VERSION:
            raise BitstreamError(f"unsupported container version {version} (this build reads 1 and {FORMAT_VERSION})")
        if len(data) < FRAMING_BYTES:
            raise BitstreamError(f"bitstream truncated inside the header ({len(data)} bytes)")
        _, _, codec_id, rate_id, height, width, payload_len = _V2_HEADER.unpack_from(data, 0)
        payload = _checked_payload(data, _V2_HEADER.size, payload_len)
        codec = _codec_name(codec_id)
        _expect(codec, expected_codec)
        _check_size(height, width)
        return cls(codec, rate_id, height, width, payload)

    @classmethod
    def _unpack_v1(cls, data: bytes, expected_codec: str | None) -> "Container":
        if len(data) < _PREFIX.size + _V1_NAME.size:
            raise BitstreamError(f"bitstream truncated inside the header ({len(data)} bytes)")
        (name_len,) = _V1_NAME.unpack_from(data, _PREFIX.size)
        shape_at = _PREFIX.size + _V1_NAME.size + name_len
        if len(data) < shape_at + _V1_SHAPE.size + _CRC.size:
            raise BitstreamError(f"bitstream truncated inside the header ({len(data)} bytes)")
        rate_id, height, width, payload_len = _V1_SHAPE.unpack_from(data, shape_at)
        payload = _checked_payload(data, shape_at + _V1_SHAPE.size, payload_len)
        try:
            codec = data[shape_at - name_len : shape_at].decode("ascii")
        except UnicodeDecodeError as exc:  # CRC passed, so this is a foreign writer
            raise BitstreamError("codec name in the header is not ASCII") from exc
        _expect(codec, expected_codec)
        _check_size(height, width)
        return cls(codec, rate_id, height, width, payload)


@dataclass(frozen=True)
class Rate:
    """What one stored stream costs: the payload (what ``bpp`` counts) and the whole file."""

    payload_bytes: int
    container_bytes: int
    pixels: int

    @property
    def bpp(self) -> float:
        """8 x payload bytes / pixels: the codec's own bitstream, as the field counts it."""
        return 8.0 * self.payload_bytes / self.pixels

    @property
    def bpp_container(self) -> float:
        """8 x container bytes / pixels: the file on disk, framing included."""
        return 8.0 * self.container_bytes / self.pixels

    def columns(self) -> dict[str, Any]:
        """The result-row columns: ``bytes`` (payload), ``bpp``, ``container_bytes``, ``bpp_container``."""
        return {"bytes": self.payload_bytes, "bpp": self.bpp,
                "container_bytes": self.container_bytes, "bpp_container": self.bpp_container}


def rate_of(bitstream: bytes) -> Rate:
    """The rate of a container (v2 or v1), checked, with the pixel count from its header."""
    rec = Container.unpack(bitstream)
    return Rate(len(rec.payload), len(bitstream), rec.height * rec.width)


def legacy_rate_columns(codec: str, container_bytes: int, height: int, width: int) -> dict[str, Any]:
    """``Rate.columns()`` of a row written under format v1, whose ``bytes`` was the whole v1 container."""
    container_bytes = int(container_bytes)
    return Rate(container_bytes - v1_framing_bytes(codec), container_bytes, int(height) * int(width)).columns()
