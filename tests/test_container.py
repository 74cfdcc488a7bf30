import pytest

from rdp_bench.container import BitstreamError, Container, bits_per_pixel


def make(payload=b"hello world payload"):
    return Container("jpeg", 3, 17, 33, payload).pack()


def test_round_trip():
    data = make()
    c = Container.unpack(data, expected_codec="jpeg")
    assert (c.codec, c.rate_id, c.height, c.width, c.payload) == ("jpeg", 3, 17, 33, b"hello world payload")


def test_bpp_counts_the_whole_container():
    data = make()
    assert bits_per_pixel(data, 17, 33) == pytest.approx(8 * len(data) / (17 * 33))
    assert len(data) > len(b"hello world payload")


def test_every_single_byte_corruption_is_rejected():
    data = make()
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= flip
            with pytest.raises(BitstreamError):
                Container.unpack(bytes(bad))


def test_every_truncation_and_extension_is_rejected():
    data = make()
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            Container.unpack(data[:n])
    with pytest.raises(BitstreamError):
        Container.unpack(data + b"\x00")


def test_foreign_and_wrong_codec_rejected():
    png_magic = b"\x89PNG\r\n\x1a\n" + bytes(64)
    with pytest.raises(BitstreamError, match="not an rdp-bench"):
        Container.unpack(png_magic)
    with pytest.raises(BitstreamError, match="written by codec 'jpeg'"):
        Container.unpack(make(), expected_codec="bpg")


def test_invalid_sizes_refused_on_write():
    with pytest.raises(ValueError):
        Container("jpeg", 0, 0, 5, b"").pack()
