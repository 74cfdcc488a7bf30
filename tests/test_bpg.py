"""BPG: reference values derived by hand from the libbpg 0.9.8 sources, and the codec end to end.

These tests pin every piece of bpgenc/bpgdec that this module re-implements (colour transform, chroma
filters and their edge handling, padding, x265 settings, the .bpg file layout) so a silent change would
fail. Agreement with real bpgenc is measured in tests/test_bpg_install.py (the binaries themselves) and
tests/test_bpg_calibration.py (the emulation's gaps), both with ../shared/bpg.
"""

import math

import numpy as np
import pytest
import torch

from rdp_bench.codecs import get_codec
from rdp_bench.codecs import bpg as B
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import load_image_uint8, tensor_to_uint8
from rdp_bench.datasets import SAMPLES_DIR


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))


# --- constants ----------------------------------------------------------------------------------------
def test_filter_taps_are_bpgs():
    assert B.BPG_DOWNSAMPLE_TAPS == (2, -4, -8, 17, 57, 57, 17, -8, -4, 2)
    assert sum(B.BPG_DOWNSAMPLE_TAPS) == 128
    assert B.BPG_UPSAMPLE_TAPS == (2, -6, 18, 57, -10, 4, -1)
    assert sum(B.BPG_UPSAMPLE_TAPS) == 64


def test_colour_matrices_are_bt601_full_range_fixed_point():
    # round(k * 2**23) of the BT.601 (Kr=.299, Kb=.114) matrix, computed by hand
    assert B.RGB_TO_YCC_FIXED.tolist() == [
        [2508194, 4924113, 956301],  # .299 .587 .114
        [-1415459, -2778845, 4194304],  # -.168736 -.331264 .5
        [4194304, -3512206, -682098],  # .5 -.418688 -.081312
    ]
    assert B.RGB_TO_YCC_FIXED[0].sum() == 1 << 23  # luma of grey is exact
    # round(k * 2**22) of the inverse: 1.402, .344136, .714136, 1.772
    assert B.YCC_TO_RGB_FIXED == (5880414, 1443412, 2995305, 7432307)


def test_known_colours():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [128, 128, 128]]], np.uint8)
    ycc = B.rgb_to_ycbcr(rgb)[:, 0].T.tolist()
    # red: Y=76.245->76, Cb=-43.03->85, Cr=+127.5 -> 256 clamps to 255 (full range, no headroom)
    assert ycc == [[76, 85, 255], [150, 44, 21], [29, 255, 107], [255, 128, 128], [0, 128, 128], [128, 128, 128]]


def test_colour_round_trip():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    back = B.ycbcr_to_rgb(*B.rgb_to_ycbcr(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 2  # 8-bit YCbCr rounding only
    grey = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    assert np.array_equal(B.ycbcr_to_rgb(*B.rgb_to_ycbcr(grey)), grey)


# --- chroma filters -----------------------------------------------------------------------------------
def test_downsampling_a_step_matches_hand_computation():
    # a horizontal step, constant vertically (the vertical pass is then the identity):
    # out[i] = ((((sum_k taps[k] * x[clamp(2i-4+k)]) + 1) >> 1) * 128 + 4096) >> 13
    # i=1: sum=-200 -> -100 -> -1.06 -> clamp 0; i=2: 700 -> 350 -> 5; i=3: 12100 -> 95; i=4: 13000 -> 102
    step = np.tile(np.array([0] * 6 + [100] * 6), (4, 1))
    assert B.downsample_chroma(step).tolist() == [[0, 0, 5, 95, 102, 100]] * 2
    # a 2x2 box filter would give [0, 0, 0, 100, 100, 100]


def test_upsampling_a_step_matches_hand_computation():
    # out[2i] = (sum_k [2,-6,18,57,-10,4,-1][k] * c[i-3+k] + 32) >> 6, out[2i+1] with the taps reversed
    # x=6: (100*71 + 164*-7 + 32)>>6 = 93; x=7: (100*50 + 164*14 + 32)>>6 = 114
    # x=8: (100*14 + 164*50 + 32)>>6 = 150; x=9: (100*-7 + 164*71 + 32)>>6 = 171
    chroma = np.tile(np.array([100] * 4 + [164] * 4), (3, 1))
    up = B.upsample_chroma(chroma, 6, 16)
    assert up.shape == (6, 16)
    assert up[0].tolist() == [100, 100, 99, 102, 103, 96, 93, 114, 150, 171, 168, 161, 162, 165, 164, 164]
    assert (up == up[0]).all()
    # bilinear would give x=6..9 = 100, 116, 148, 164


def test_filters_edges_and_odd_sizes():
    rng = np.random.default_rng(1)
    for h, w in [(1, 1), (3, 5), (17, 19), (34, 33)]:
        c = rng.integers(0, 256, (h, w))
        down = B.downsample_chroma(c)
        assert down.shape == ((h + 1) // 2, (w + 1) // 2)
        assert B.upsample_chroma(down, h, w).shape == (h, w)
    # edge replication: a constant image stays exactly constant through both filters
    flat = np.full((9, 7), 77)
    assert (B.downsample_chroma(flat) == 77).all() and (B.upsample_chroma(B.downsample_chroma(flat), 9, 7) == 77).all()
    # transposition symmetry: the filter is separable and identical in both directions
    c = rng.integers(0, 256, (10, 14))
    assert np.array_equal(B.downsample_chroma(c.T), B.downsample_chroma(c).T)
    assert np.array_equal(B.upsample_chroma(c.T, 28, 20), B.upsample_chroma(c, 20, 28).T)


def test_planes_are_padded_like_image_pad():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (21, 35, 3), dtype=np.uint8)  # H/2 odd, W odd
    y, cb, cr = B.bpg_planes(rgb, "420")
    assert y.shape == (24, 40) and cb.shape == (12, 20)
    ycc = B.rgb_to_ycbcr(rgb)
    assert np.array_equal(y[:21, :35], ycc[0]) and (y[21:] == y[20]).all() and (y[:, 35:] == y[:, 34:35]).all()
    # chroma is decimated from the unpadded picture, then padded by replicating its own last row/column
    assert np.array_equal(cb[:11, :18], B.downsample_chroma(ycc[1]))
    assert (cb[11] == cb[10]).all() and (cb[:, 18:] == cb[:, 17:18]).all()
    assert B.padded_size(1, 1) == (16, 16) and B.padded_size(17, 33) == (24, 40)
    # a side below 16: x265 codes 16-pixel minimum CUs, and a .bpg decoder rounds the header's size up to them
    assert B.min_cu_size(5, 17) == 16 and B.padded_size(5, 17) == (16, 32) and B.min_cu_size(16, 17) == 8
    assert B.legacy_padded_size(5, 17) == (16, 24)  # the raw-HEVC payloads before the .bpg files


# --- x265 and the .bpg layout ---------------------------------------------------------------------------
def test_x265_runs_bpgencs_settings_at_constant_qp(photo):
    emu = B.EMULATION
    params = B.x265_params(29).split(":")
    for token in (f"qp={29 + emu.qp_offset}", "keyint=1", "info=0", "amp=1"):
        assert token in params
    assert any(t.startswith("lambda-file=") for t in params) == emu.bundled_lambda
    codec = get_codec("bpg")
    smooth = tensor_to_uint8(photo(64, 64))
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for rgb in (smooth, noise):
        info = B.slice_qp(codec.encode_hevc(rgb, 29))
        # CQP with no CU-level deltas (no AQ) and the I-slice offset of x265: qp - 6*log2(1.4) = qp - 2.9 -> qp - 3
        assert info == {"slice_qp": 26 + emu.qp_offset, "cu_qp_delta_enabled": 0}
    assert B.expected_slice_qp(29) == 26 + emu.qp_offset
    assert B.expected_slice_qp(29, B.X265Emulation(qp_offset=0)) == 26  # what bpgenc's own x265 codes at -q 29


def test_bundled_lambda_tables_are_the_old_x265s():
    # x265/source/common/constants.cpp of libbpg 0.9.8 (8-bit): lambda = 2^(QP/6-2), lambda2 = 0.85 lambda^2;
    # values read from its table at QP 0, 22 and 51
    for qp, lam, lam2 in ((0, 0.2500, 0.0531), (22, 3.1748, 8.5675), (51, 90.5097, 6963.2049)):
        got = B.bundled_x265_lambdas(qp)
        assert got[0] == pytest.approx(lam, abs=1e-4) and got[1] == pytest.approx(lam2, rel=1e-3)
    text = B.x265_lambda_file(1.0).read_text().splitlines()
    assert [len(line.split()) for line in text if not line.startswith("#")] == [70, 70]
    with pytest.raises(ValueError):
        B.X265Emulation(lambda_scale=1.1)  # a scale applies to the bundled tables only


def test_bpg_file_counts_21_bytes_beyond_the_slices():
    rgb = np.ascontiguousarray(load_image_uint8(SAMPLES_DIR / "skimage_coffee.png")[:150, :200])
    stream = get_codec("bpg").encode_hevc(rgb, 37)
    data = B.bpg_file(stream, 150, 200, "420")
    assert data == get_codec("bpg").encode_rgb(rgb, 37)  # the emulation's payload
    units = B.split_nal_units(stream)
    slices = sum(end - start for start, hdr, end in units if B.nal_type(stream, hdr) < 32)
    # 4 magic + 2 flags + ue7(200) 2 + ue7(150) 2 + ue7(0) 1 = 11; compact SPS 1+3; PPS NAL 6 (no start code)
    assert data[:11] == B.BPG_MAGIC + b"\x20\x00\x81\x48\x81\x16\x00"
    assert data[11] == 3 and data[15:21] == stream[units[2][1] : units[2][2]]
    assert len(data) == slices + 21
    assert len(stream) - len(data) > 60  # the VPS and full SPS are not in a .bpg file
    assert B.ue7(127) == b"\x7f" and B.ue7(128) == b"\x81\x00" and B.ue7(300) == b"\x82\x2c"


def test_sps_restrictions_of_bpgenc_are_checked():
    stream = get_codec("bpg444").encode_hevc(np.zeros((16, 16, 3), np.uint8), 30)
    units = B.split_nal_units(stream)
    assert [B.nal_type(stream, h) for _, h, _ in units][:3] == [32, 33, 34]
    sps = B.parse_sps(stream[units[1][1] : units[1][2]])
    assert sps["chroma_format_idc"] == 3 and (sps["width"], sps["height"]) == (16, 16)
    assert sps["bit_depth_luma"] == 8 and sps["log2_min_cb_size"] == 3


# --- the codecs end to end ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bpg", "bpg444"])
@pytest.mark.parametrize("h,w", [(1, 1), (17, 19), (34, 33), (21, 64)])
def test_round_trip_odd_sizes(photo, name, h, w):
    codec = get_codec(name)
    img = photo(h, w)
    [enc] = codec.encode_detailed([img], "q22")
    [out] = codec.decode([enc.bitstream])
    assert out.shape == img.shape
    assert (out - img).abs().mean() < 0.03
    payload = Container.unpack(enc.bitstream).payload
    header = B.parse_bpg_header(payload)  # the payload is the .bpg file: bpp is its size
    assert (header.width, header.height, header.pixel_format) == (w, h, B.BPG_FORMATS[codec.chroma])
    assert enc.extras == {}  # no bpp_bpg_equiv any more: it would equal bpp


@pytest.mark.parametrize("name", ["bpg", "bpg444"])
def test_constant_and_grey_images(photo, name):
    codec = get_codec(name)
    flat = torch.full((3, 24, 40), 0.0)
    flat[0], flat[1], flat[2] = 200 / 255, 120 / 255, 40 / 255
    [out] = codec.decode(codec.encode([flat], "q22"))
    assert (out - flat).abs().max() <= 2 / 255 + 1e-6
    grey = photo(32, 48)[:1].repeat(3, 1, 1)
    [out] = codec.decode(codec.encode([grey], "q22"))
    assert (out - grey).abs().mean() < 0.02
    assert (out[0] - out[1]).abs().max() <= 2 / 255 + 1e-6  # no colour appears


def test_rate_grows_with_quality_and_444_costs_more(photo):
    img = photo(48, 64)
    sizes = {n: [len(b) for p in get_codec(n).rate_points() for b in get_codec(n).encode([img], p)]
             for n in ("bpg", "bpg444")}
    assert sizes["bpg"] == sorted(sizes["bpg"]) and sizes["bpg444"] == sorted(sizes["bpg444"])
    points = get_codec("bpg").rate_points()
    assert [p.label for p in points] == ["q51", "q47", "q42", "q37", "q32", "q27", "q22", "q17"]
    # ids are stable: the six points older streams carry keep theirs
    assert [get_codec("bpg").rate_id(p) for p in points] == [6, 0, 1, 2, 3, 4, 5, 7]
    assert sizes["bpg444"][-1] > sizes["bpg"][-1]


def test_pinned_self_consistency_values():
    """Values measured with this pipeline (x265 4.2 in PyAV 18.1) on a 192x192 crop of skimage_coffee (.bpg bytes).

    They pin our own pipeline within +-2 % bytes and +-0.05 dB so a change of filters, colour transform,
    padding or x265 settings, or an x265 update that moves results, fails loudly. Real bpgenc 0.9.8
    (../shared/bpg/bin) gives 9010 bytes and 38.159 dB on this crop at q22; the emulation before its
    calibration (QP q+1, x265 4.x's lambdas) gave 8593 bytes and 38.034 dB.
    """
    rgb = load_image_uint8(SAMPLES_DIR / "skimage_coffee.png")[:192, :192]
    codec = get_codec("bpg")
    data = codec.encode_rgb(rgb, 22)
    assert len(data) == pytest.approx(9001, rel=0.02)
    assert psnr(rgb, codec.decode_rgb(data, 192, 192)) == pytest.approx(38.169, abs=0.05)


def test_bpg_filters_beat_box_resampling_on_a_photo():
    """Regression guard: bpgenc/bpgdec filters vs a 2x2 box + bilinear variant, same x265 settings."""
    rgb = load_image_uint8(SAMPLES_DIR / "skimage_coffee.png")[:192, :192]
    h, w, _ = rgb.shape
    stream = B.x265_encode(B.bpg_planes(rgb, "420"), 22, "420")
    ours = psnr(rgb, B.rgb_from_planes(B.hevc_decode(stream, "420"), h, w, "420"))
    y, cb, cr = B.rgb_to_ycbcr(rgb)
    box = lambda c: (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2] + 2) >> 2  # noqa: E731
    planes = [y.astype(np.uint8), box(cb).astype(np.uint8), box(cr).astype(np.uint8)]
    dec = B.hevc_decode(B.x265_encode(planes, 22, "420"), "420")
    up = lambda c: torch.nn.functional.interpolate(  # noqa: E731
        torch.from_numpy(c.astype(np.float32))[None, None], scale_factor=2, mode="bilinear")[0, 0].round().numpy()
    theirs = psnr(rgb, B.ycbcr_to_rgb(dec[0], up(dec[1]), up(dec[2])))
    assert ours > theirs + 0.05


@pytest.mark.parametrize("name", ["bpg", "bpg444"])
def test_corrupt_payloads_raise(photo, name):
    codec = get_codec(name)
    [good] = codec.encode([photo(32, 32)], "q32")
    payload = Container.unpack(good).payload
    # a .bpg cut inside its header, compact SPS or PPS; garbage; an Annex-B stream of garbage (legacy path)
    for bad in (b"not hevc", payload[:9], payload[:17], b"\x00\x00\x00\x01" + b"\x40\x01" + b"\x11" * 40, b""):
        with pytest.raises(BitstreamError):
            codec.decode([Container(name, 3, 32, 32, bad).pack()])
    with pytest.raises(BitstreamError):  # a valid stream of the wrong size
        codec.decode([Container(name, 3, 64, 32, payload).pack()])
    with pytest.raises(BitstreamError):  # written by the other chroma format
        other = "bpg444" if name == "bpg" else "bpg"
        codec.decode([Container(name, 3, 32, 32, Container.unpack(get_codec(other).encode([photo(32, 32)], "q32")[0]).payload).pack()])


def test_binary_backend_is_reported_when_missing(monkeypatch):
    monkeypatch.setattr(B.BPG, "binaries", staticmethod(lambda: (None, None)))
    codec = get_codec("bpg", backend="binary")
    with pytest.raises(RuntimeError, match="bpgenc"):
        codec.uses_binary()
    assert get_codec("bpg").checkpoint_id(get_codec("bpg").rate_point(0)) == "x265-pyav-bpglambda-bpgfile"
    # without bpgdec a .bpg payload is decoded in Python: a broken one is a BitstreamError, not a missing tool
    with pytest.raises(BitstreamError, match="bpg"):
        get_codec("bpg").decode([Container("bpg", 0, 8, 8, B.BPG_MAGIC + b"\x20" * 10).pack()])
