import struct

import pandas as pd
import pytest
from conftest import raw_v2_stream, v1_stream

from rdp_bench.bench.store import upgrade_row, upgrade_table
from rdp_bench.codecs import CODEC_IDS, REGISTRY, RETIRED_CODEC_IDS
from rdp_bench.container import (
    FRAMING_BYTES, MAX_SIDE, BitstreamError, Container, legacy_rate_columns, rate_of, v1_framing_bytes,
)


def make(payload=b"hello world payload", codec="jpeg"):
    return Container(codec, 3, 17, 33, payload).pack()


def v2_with(**fields) -> bytes:
    f = {"codec_id": CODEC_IDS["jpeg"], "rate_id": 3, "height": 17, "width": 33, "payload": b"xyz", "version": 2}
    f.update(fields)
    return raw_v2_stream(**f)


def test_round_trip():
    data = make()
    c = Container.unpack(data, expected_codec="jpeg")
    assert (c.codec, c.rate_id, c.height, c.width, c.payload) == ("jpeg", 3, 17, 33, b"hello world payload")


def test_framing_is_the_same_25_bytes_for_every_codec():
    payload = b"p" * 40
    for name in REGISTRY:
        data = Container(name, 0, 8, 8, payload).pack()
        assert len(data) == len(payload) + FRAMING_BYTES == len(payload) + 25, name
        assert Container.unpack(data, expected_codec=name).codec == name
    # the header: magic, version 2, codec id, rate id, H, W, payload length (big-endian), then payload and CRC
    assert make()[:5 + 2 + 2] == b"RDPB\x02" + struct.pack(">HH", CODEC_IDS["jpeg"], 3)


def test_bpp_counts_the_payload_and_the_container_is_recorded_beside_it():
    data = make()
    rate = rate_of(data)
    assert (rate.payload_bytes, rate.container_bytes, rate.pixels) == (19, 19 + 25, 17 * 33)
    assert rate.bpp == pytest.approx(8 * 19 / (17 * 33))
    assert rate.bpp_container == pytest.approx(8 * len(data) / (17 * 33))
    assert rate.columns() == {"bytes": 19, "bpp": rate.bpp, "container_bytes": len(data),
                              "bpp_container": rate.bpp_container}


def test_every_single_byte_corruption_is_rejected():
    data = make()
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= flip
            with pytest.raises(BitstreamError):
                Container.unpack(bytes(bad))


def test_every_truncation_and_extension_is_rejected():
    for data in (make(), v1_stream("jpeg", 3, 17, 33, b"hello")):
        for n in range(len(data)):
            with pytest.raises(BitstreamError):
                Container.unpack(data[:n])
        with pytest.raises(BitstreamError):
            Container.unpack(data + b"\x00")


def test_foreign_and_wrong_codec_rejected():
    png_magic = b"\x89PNG\r\n\x1a\n" + bytes(64)
    with pytest.raises(BitstreamError, match="not an rdp-bench"):
        Container.unpack(png_magic)
    with pytest.raises(BitstreamError, match="written by codec 'jpeg', not 'bpg'"):
        Container.unpack(make(), expected_codec="bpg")
    with pytest.raises(BitstreamError, match="written by codec 'corrdiff-e2e', not 'corrdiff'"):
        Container.unpack(make(codec="corrdiff-e2e"), expected_codec="corrdiff")


def test_unknown_and_retired_codec_ids(monkeypatch):
    unused = max(CODEC_IDS.values()) + 100
    for cid in (0, unused, 0xFFFF):
        with pytest.raises(BitstreamError, match=f"codec id {cid} in the header belongs to no codec"):
            Container.unpack(v2_with(codec_id=cid))
    monkeypatch.setitem(RETIRED_CODEC_IDS, unused, "oldcodec")
    with pytest.raises(BitstreamError, match=f"codec 'oldcodec' \\(id {unused}\\), which this build no longer has"):
        Container.unpack(v2_with(codec_id=unused))


def test_crafted_headers_and_versions_are_refused():
    for h, w in ((0, 5), (5, 0), (MAX_SIDE + 1, 5), (5, 0xFFFFFFFF)):
        with pytest.raises(BitstreamError, match="invalid image size"):
            Container.unpack(v2_with(height=h, width=w))
    for version in (0, 3, 255):
        with pytest.raises(BitstreamError, match=f"unsupported container version {version}"):
            Container.unpack(v2_with(version=version))
    # a payload length pointing past the end (or short of it): a length mismatch, not a read past the data
    data = bytearray(v2_with(payload=b"abcdef"))
    data[17:21] = struct.pack(">I", 0xFFFFFFF0)
    with pytest.raises(BitstreamError, match="does not match"):
        Container.unpack(bytes(data))


def test_invalid_values_refused_on_write():
    with pytest.raises(ValueError):
        Container("jpeg", 0, 0, 5, b"").pack()
    with pytest.raises(ValueError, match="rate id"):
        Container("jpeg", 0x10000, 5, 5, b"").pack()
    with pytest.raises(ValueError, match="rate id"):
        Container("jpeg", -1, 5, 5, b"").pack()
    with pytest.raises(ValueError, match="has no id"):
        Container("no-such-codec", 0, 5, 5, b"").pack()


def test_v1_streams_are_still_read():
    old = v1_stream("corrdiff-diffusion-only", 4, 40, 45, b"latent bytes")
    assert len(old) == 24 + len("corrdiff-diffusion-only") + 12 == v1_framing_bytes("corrdiff-diffusion-only") + 12
    rec = Container.unpack(old, expected_codec="corrdiff-diffusion-only")
    assert (rec.codec, rec.rate_id, rec.height, rec.width, rec.payload) == (
        "corrdiff-diffusion-only", 4, 40, 45, b"latent bytes")
    assert rate_of(old).payload_bytes == 12 and rate_of(old).container_bytes == len(old)
    with pytest.raises(BitstreamError, match="written by codec 'corrdiff-diffusion-only', not 'corrdiff'"):
        Container.unpack(old, expected_codec="corrdiff")
    # re-packing writes v2: same payload, fixed framing
    assert len(rec.pack()) == 12 + FRAMING_BYTES


def test_codec_ids_are_unique_stable_and_cover_the_registry():
    """Every registered codec has an id; ids are never reused: a removed codec's id moves to
    RETIRED_CODEC_IDS (reserved forever), so no id is both live and retired."""
    assert set(CODEC_IDS) == set(REGISTRY)
    ids = list(CODEC_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(1 <= i <= 0xFFFF for i in ids)  # 0 is never assigned
    assert not set(ids) & set(RETIRED_CODEC_IDS)
    # the first assignments, pinned: changing one would re-label every stored stream
    assert (CODEC_IDS["jpeg"], CODEC_IDS["bpg"], CODEC_IDS["corrdiff"], CODEC_IDS["corrdiff-e2e"]) == (1, 5, 15, 17)


def test_v1_rows_are_converted_exactly():
    # a v1 row: bytes = 24 + len(name) + payload, bpp of the whole container
    row = {"codec": "jpeg", "height": 10, "width": 20, "bytes": 128, "bpp": 8 * 128 / 200, "psnr": 30.0}
    new = upgrade_row(row)
    assert new["bytes"] == 128 - 28 and new["container_bytes"] == 128
    assert new["bpp"] == 8 * 100 / 200 and new["bpp_container"] == 8 * 128 / 200 and new["psnr"] == 30.0
    assert upgrade_row(new) == new  # a current row is left as it is
    assert legacy_rate_columns("jpeg", 128, 10, 20) == {k: new[k] for k in ("bytes", "bpp", "container_bytes",
                                                                             "bpp_container")}
    current = {**new, "codec": "webp"}
    table = upgrade_table(pd.DataFrame([row, current]))
    assert table["bytes"].tolist() == [100, 100] and table["container_bytes"].tolist() == [128, 128]
    assert table["bytes"].dtype == table["container_bytes"].dtype == "int64"
    same = pd.DataFrame([current])
    assert upgrade_table(same) is same
