"""BPG: HEVC intra coding as done by ``bpgenc``/``bpgdec`` 0.9.8.

Two registry entries share this module: ``bpg`` (4:2:0, bpgenc's default ``-f 420``) and ``bpg444``
(``-f 444``). When ``bpgenc`` and ``bpgdec`` are on PATH they are used with the options of
CompressAI's bench (``-q Q -f FMT -e x265 -c ycbcr -b 8``) and the payload is the real .bpg file.
Otherwise x265 runs through PyAV and everything around it is reproduced from the libbpg 0.9.8
sources (bpgenc.c, x265_glue.c, libbpg.c):

* RGB -> BT.601 full-range YCbCr with bpgenc's fixed-point integer arithmetic (31-bit constants);
* 4:2:0 chroma decimated with bpgenc's 10-tap phase-0.5 filter ``[2,-4,-8,17,57,57,17,-8,-4,2]/128``
  (horizontal pass first, kept at 16 bits, then vertical), edge samples replicated;
* the picture padded to a multiple of 8 (16 when a side is below 16: ``min_cu_size``) by replicating the
  last row/column of each plane (``image_pad``), so x265 codes no conformance window;
* x265 with preset ``veryslow`` (bpgenc's default ``-m 8``), tune ``ssim``, ``keyint=1``,
  ``info=0``, constant QP ``q`` (x265_glue.c: ``p->rc.qp = params->qp``, no offset), and the lambda
  tables of the x265 that bpgenc bundles (x265 4.x changed lambda2; see ``X265Emulation``);
* decoding: bpgdec's 7-tap interpolation ``[2,-6,18,57,-10,4,-1]/64`` (mirrored for odd output
  samples), vertical first, then the fixed-point full-range YCbCr -> RGB of libbpg.

Either way the payload is a .bpg file, so bpp is the size of the .bpg file (the container's framing
apart, as for every codec). The emulation writes it as bpgenc 0.9.8 does (``bpg_file``): the picture
header, then the compact SPS bpgenc derives from x265's SPS and the NAL units after the SPS (the VPS
and full SPS are dropped); real bpgdec decodes it to the same pixels as ``decode_bpg``, which reads real
bpgenc output too: it rebuilds a VPS/SPS for FFmpeg's HEVC decoder from the header and the compact SPS,
as libbpg's decoder does. A .bpg file is checked against the container (size, format) before decoding.
Payloads of the emulation before it wrote .bpg files (the raw HEVC stream, checkpoint
``x265-pyav-bpglambda``) still decode (``decode_legacy_hevc``); see ``BPG.decode_rgb``.
"""

from __future__ import annotations

import atexit
import fractions
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from rdp_bench.codecs.base import Availability, Codec, Option, RateControl, RatePoint
from rdp_bench.container import BitstreamError, Container
from rdp_bench.imageio import tensor_to_uint8, uint8_to_tensor

# --- constants read from the libbpg 0.9.8 sources ---------------------------------------------------
#: bpgenc's phase-0.5 decimation filter (DP1C4..DP1C0, DP1C0..DP1C4), sum 128.
BPG_DOWNSAMPLE_TAPS = (2, -4, -8, 17, 57, 57, 17, -8, -4, 2)
#: bpgdec's 7-tap Lanczos interpolation for the output sample left of a chroma sample
#: (IP1C6..IP1C0 over chroma samples i-3..i+3), sum 64. The right sample uses it reversed.
BPG_UPSAMPLE_TAPS = (2, -6, 18, 57, -10, 4, -1)
BPG_KR, BPG_KB = 0.299, 0.114  # BT.601
#: bpgenc pads the picture to a multiple of this (``cb_size = 8``).
BPG_CB_SIZE = 8
#: x265 4.x refuses pictures with a side below 16 pixels; smaller images are padded further.
X265_MIN_SIDE = 16
#: x265 lowers an I-slice's QP below the CQP value by 6*log2(ipratio) (default ipratio 1.4).
X265_DEFAULT_IPRATIO = 1.4
#: the sweep, low -> high rate: q51 (bpgenc's maximum) reaches ~0.03 bpp and q17 ~1.5 bpp (4:2:0) on photos,
#: the range learned codecs are published over; the emulation's calibration covers q22..q47 only
BPG_QUALITIES = (51, 47, 42, 37, 32, 27, 22, 17)
#: stable rate ids carried by streams: q47..q22 keep the positions they had before q51/q17 were added
BPG_RATE_IDS = {47: 0, 42: 1, 37: 2, 32: 3, 27: 4, 22: 5, 51: 6, 17: 7}
BPG_MAGIC = b"BPG\xfb"
#: .bpg pixel formats (libbpg.h ``BPGImageFormatEnum``; bpgenc's -f 420 keeps JPEG chroma siting: 1, not 4)
BPG_FORMATS = {"420": 1, "444": 3}
BPG_CS_YCBCR = 0  # ``BPG_CS_YCbCr``: BT.601 (-c ycbcr)
#: libbpg's bound on every ue7 of a .bpg file (``MAX_DATA_SIZE``)
BPG_MAX_DATA_SIZE = (1 << 30) - 1
CHROMA_FORMAT_IDC = {"420": 1, "444": 3}  # HEVC chroma_format_idc
AVCOL_RANGE_JPEG, AVCOL_SPC_SMPTE170M = 2, 6  # FFmpeg enum values: full range, BT.601


# --- colour transform (bpgenc convert_init / rgb24_to_ycc; libbpg convert_init / ycc_to_rgb24) ------
def _encoder_matrix() -> np.ndarray:
    k_r, k_b = BPG_KR, BPG_KB
    mult = float(1 << 23)  # 8-bit in/out: c_shift = 31 - 8
    rows = [
        k_r, 1 - k_r - k_b, k_b,
        -0.5 * k_r / (1 - k_b), -0.5 * (1 - k_r - k_b) / (1 - k_b), 0.5,
        0.5, -0.5 * (1 - k_r - k_b) / (1 - k_r), -0.5 * k_b / (1 - k_r),
    ]
    return np.rint(np.array(rows) * mult).astype(np.int64).reshape(3, 3)  # lrint: half to even


def _decoder_coefficients() -> tuple[int, int, int, int]:
    k_r, k_b = BPG_KR, BPG_KB
    mult = float(1 << 22)  # c_shift = 30 - 8
    c_r_cr = int(np.rint(2 * (1 - k_r) * mult))
    c_g_cb = int(np.rint(2 * k_b * (1 - k_b) / (1 - k_b - k_r) * mult))
    c_g_cr = int(np.rint(2 * k_r * (1 - k_r) / (1 - k_b - k_r) * mult))
    c_b_cb = int(np.rint(2 * (1 - k_b) * mult))
    return c_r_cr, c_g_cb, c_g_cr, c_b_cb


RGB_TO_YCC_FIXED = _encoder_matrix()
YCC_TO_RGB_FIXED = _decoder_coefficients()


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW int64 full-range YCbCr, bit-exact with bpgenc (8-bit)."""
    x = rgb.astype(np.int64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    m = RGB_TO_YCC_FIXED
    rnd, shift = 1 << 22, 23
    y = (m[0, 0] * r + m[0, 1] * g + m[0, 2] * b + rnd) >> shift
    cb = ((m[1, 0] * r + m[1, 1] * g + m[1, 2] * b + rnd) >> shift) + 128
    cr = ((m[2, 0] * r + m[2, 1] * g + m[2, 2] * b + rnd) >> shift) + 128
    return np.clip(np.stack([y, cb, cr]), 0, 255)


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Full-range YCbCr planes (same size) -> HxWx3 uint8 RGB, bit-exact with libbpg (8-bit)."""
    c_r_cr, c_g_cb, c_g_cr, c_b_cb = YCC_TO_RGB_FIXED
    yv = y.astype(np.int64) << 22
    cbv = cb.astype(np.int64) - 128
    crv = cr.astype(np.int64) - 128
    rnd, shift = 1 << 21, 22
    r = (yv + c_r_cr * crv + rnd) >> shift
    g = (yv - c_g_cb * cbv - c_g_cr * crv + rnd) >> shift
    b = (yv + c_b_cb * cbv + rnd) >> shift
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


# --- chroma resampling ------------------------------------------------------------------------------
def _edge_index(n_out: int, first: int, n_taps: int, n_in: int, step: int) -> np.ndarray:
    """Indices ``step*i + first + k`` clamped to [0, n_in) (edge replication), shape (n_out, n_taps)."""
    idx = step * np.arange(n_out)[:, None] + first + np.arange(n_taps)[None, :]
    return np.clip(idx, 0, n_in - 1)


def downsample_chroma(plane: np.ndarray) -> np.ndarray:
    """bpgenc ``decimate2_hv`` (8-bit, phase 0.5): HxW -> ceil(H/2) x ceil(W/2)."""
    c = plane.astype(np.int64)
    h, w = c.shape
    taps = np.array(BPG_DOWNSAMPLE_TAPS, dtype=np.int64)
    # horizontal: output i is centred between samples 2i and 2i+1 (taps on 2i-4 .. 2i+5)
    xi = _edge_index((w + 1) // 2, -4, len(taps), w, 2)
    hbuf = ((c[:, xi] * taps).sum(-1) + 1) >> 1  # 16-bit intermediate: shift = bit_depth - 7
    yi = _edge_index((h + 1) // 2, -4, len(taps), h, 2)
    vsum = np.einsum("ykx,k->yx", hbuf[yi], taps)
    return np.clip((vsum + (1 << 12)) >> 13, 0, 255)  # shift = 21 - bit_depth


def _interp2(c: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Polyphase x2 interpolation along ``axis`` with bpgdec's taps, edge samples replicated (no rounding)."""
    c = np.moveaxis(c, axis, 0)
    n = c.shape[0]
    padded = c[np.clip(np.arange(-3, n + 3), 0, n - 1)]
    even = np.array(BPG_UPSAMPLE_TAPS, dtype=np.int64)
    out = np.empty((2 * n,) + c.shape[1:], dtype=np.int64)
    out[0::2] = sum(t * padded[k : k + n] for k, t in enumerate(even))  # output 2i: taps on i-3 .. i+3
    out[1::2] = sum(t * padded[k : k + n] for k, t in enumerate(even[::-1]))  # output 2i+1: mirrored
    return np.moveaxis(out[:n_out], 0, axis)


def upsample_chroma(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """bpgdec ``interp2_vh`` (8-bit, phase 0.5): ceil(H/2) x ceil(W/2) -> HxW."""
    c = plane.astype(np.int64)
    h2, w2 = c.shape
    if (h2, w2) != ((height + 1) // 2, (width + 1) // 2):
        raise ValueError(f"chroma plane {h2}x{w2} does not match a {height}x{width} picture")
    tmp = _interp2(c, height, axis=0)  # vertical first, kept at x64 (shift = bit_depth - 8 = 0)
    out = _interp2(tmp, width, axis=1)
    return np.clip((out + (1 << 11)) >> 12, 0, 255)  # shift = 20 - bit_depth


def pad_plane(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Replicate the last row and column up to ``height`` x ``width`` (bpgenc ``image_pad``)."""
    h, w = plane.shape
    return np.pad(plane, ((0, height - h), (0, width - w)), mode="edge")


def min_cu_size(height: int, width: int) -> int:
    """x265's minimum CU size for a picture: bpgenc's 8, or 16 when a side is below 16 pixels.

    This x265 refuses pictures with a side below 16, so such a picture is padded to 16; a .bpg decoder
    derives the coded size from the header's by rounding it up to the minimum CU size (the compact SPS
    has no picture size and no crop window), so the minimum CU size must then be 16 as well."""
    return BPG_CB_SIZE if min(height, width) >= X265_MIN_SIDE else X265_MIN_SIDE


def round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def padded_size(height: int, width: int) -> tuple[int, int]:
    """Coded picture size: a multiple of 8 like bpgenc; of 16 when a side is below 16 (``min_cu_size``)."""
    cb = min_cu_size(height, width)
    return round_up(height, cb), round_up(width, cb)


def legacy_padded_size(height: int, width: int) -> tuple[int, int]:
    """Coded size of the raw-HEVC payloads written before the .bpg files: a multiple of 8, at least 16."""
    return max(X265_MIN_SIDE, round_up(height, BPG_CB_SIZE)), max(X265_MIN_SIDE, round_up(width, BPG_CB_SIZE))


def bpg_planes(rgb: np.ndarray, chroma: str) -> list[np.ndarray]:
    """The three uint8 planes bpgenc hands to x265: converted, decimated (4:2:0) and padded."""
    h, w, _ = rgb.shape
    y, cb, cr = rgb_to_ycbcr(rgb)
    if chroma == "420":
        cb, cr = downsample_chroma(cb), downsample_chroma(cr)
    ph, pw = padded_size(h, w)
    sub = 2 if chroma == "420" else 1
    planes = [pad_plane(y, ph, pw), pad_plane(cb, ph // sub, pw // sub), pad_plane(cr, ph // sub, pw // sub)]
    return [p.astype(np.uint8) for p in planes]


def rgb_from_planes(planes: Sequence[np.ndarray], height: int, width: int, chroma: str) -> np.ndarray:
    """Decoded (padded) planes -> cropped HxWx3 uint8 RGB, as bpgdec outputs it."""
    y = planes[0][:height, :width]
    if chroma == "420":
        h2, w2 = (height + 1) // 2, (width + 1) // 2
        cb = upsample_chroma(planes[1][:h2, :w2], height, width)
        cr = upsample_chroma(planes[2][:h2, :w2], height, width)
    else:
        cb, cr = planes[1][:height, :width], planes[2][:height, :width]
    return ycbcr_to_rgb(y, cb, cr)


# --- x265 through PyAV -----------------------------------------------------------------------------
#: QP 0 .. QP_MAX_MAX = 69: the length of each of x265's two lambda tables
X265_LAMBDA_QPS = 70


def bundled_x265_lambdas(qp: int) -> tuple[float, float]:
    """(lambda, lambda2) of the x265 that bpgenc 0.9.8 bundles (x265/source/common/constants.cpp, 8-bit):
    lambda = 2^(QP/6 - 2) and lambda2 = 0.85 * lambda^2. x265 4.x keeps lambda but its lambda2 is
    0.038 * exp(0.234 * QP), 0.76 (QP 19) to 0.81 (QP 44) times the old one: at the same QP it spends
    more bits for more PSNR, which is most of the gap between the emulation and bpgenc."""
    lam = 2.0 ** (qp / 6.0 - 2.0)
    return lam, 0.85 * lam * lam


@dataclass(frozen=True)
class X265Emulation:
    """How the x265 4.x of the PyAV wheel stands in for the x265 bundled with bpgenc 0.9.8.

    bpgenc's x265_glue.c sets ``p->rc.qp = params->qp`` (no offset), so at ``-q Q`` the bundled x265
    codes the I slice at ``Q - 3`` (ipratio 1.4). ``qp_offset`` shifts that QP; ``bundled_lambda``
    gives x265 4.x the old lambda tables through ``--lambda-file`` (``bundled_x265_lambdas``), times
    ``lambda_scale``; ``params`` are extra x265-params tokens. What each choice gives against real
    bpgenc is measured by ``scripts/calibrate_bpg.py`` (results/bpg_calibration/).
    """

    qp_offset: int = 0
    bundled_lambda: bool = False
    lambda_scale: float = 1.0
    params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.lambda_scale != 1.0 and not self.bundled_lambda:
            raise ValueError("lambda_scale scales the bundled x265's lambda tables: set bundled_lambda")

    def label(self) -> str:
        parts = [f"qp=q{self.qp_offset:+d}" if self.qp_offset else "qp=q"]
        if self.bundled_lambda:
            parts.append("bpgenc's x265 lambdas" + (f" x{self.lambda_scale:g}" if self.lambda_scale != 1.0 else ""))
        return ", ".join(parts + list(self.params))


#: The emulation the ``bpg`` codecs use. Measured against real bpgenc 0.9.8 on the 12 reference photos
#: (scripts/calibrate_bpg.py, results/bpg_calibration/): bpgenc's own QP with its x265's lambdas is the
#: closest candidate. Before, QP q+1 with x265 4.x's lambdas wrote 2.9 % (4:2:0) / 3.8 % (4:4:4) fewer
#: bytes at 0.08 / 0.20 dB lower PSNR (BD-rate -1.5 % / +0.2 %); QP q with 4.x's lambdas, 9-10 % more.
#: Now: +1.2 % / +0.6 % bytes, +0.02 / -0.02 dB, BD-rate +0.4 % / +0.6 %; within 1 % bytes and 0.035 dB
#: per q for q 22..37, the residual (more bytes) is at q 42 and 47 (README, "BPG and the classical anchors").
EMULATION = X265Emulation(qp_offset=0, bundled_lambda=True)
#: its measured gaps, for provenance.json
EMULATION_MEASURED = ("BD-rate vs bpgenc 0.9.8 on 12 photos: +0.37 % (4:2:0), +0.58 % (4:4:4); mean bytes +1.2 % / "
                      "+0.6 %, PSNR +0.02 / -0.02 dB (scripts/calibrate_bpg.py)")

_lambda_file_loaded: str | None = None  # x265 keeps --lambda-file tables for the rest of the process
_lambda_dir: Path | None = None
_lambda_files: dict[float, Path] = {}


def x265_lambda_file(scale: float = 1.0) -> Path:
    """A ``--lambda-file``: the bundled x265's lambda and lambda2 tables, lambda times ``scale``.

    Written once per process into a private temporary folder (removed at exit)."""
    global _lambda_dir
    path = _lambda_files.get(scale)
    if path is not None and path.is_file():
        return path
    if _lambda_dir is None or not _lambda_dir.is_dir():
        _lambda_dir = Path(tempfile.mkdtemp(prefix="rdp-bench-x265-"))
        atexit.register(shutil.rmtree, _lambda_dir, True)
    lams = [bundled_x265_lambdas(qp) for qp in range(X265_LAMBDA_QPS)]
    path = _lambda_dir / f"lambda-{len(_lambda_files)}.txt"
    if ":" in str(path):
        raise RuntimeError(f"bpg: x265-params cannot name a lambda file whose path has a ':' ({path}); set TMPDIR")
    path.write_text(f"# lambda and lambda2 of the x265 bundled with libbpg 0.9.8, lambda x {scale!r} (rdp_bench)\n"
                    + " ".join(f"{scale * lam:.10g}" for lam, _ in lams) + "\n"
                    + " ".join(f"{scale * scale * lam2:.10g}" for _, lam2 in lams) + "\n")
    _lambda_files[scale] = path
    return path


def x265_params(q: int, emulation: X265Emulation | None = None, min_cu: int = BPG_CB_SIZE) -> str:
    """x265 settings of bpgenc 0.9.8 (x265_glue.c) for ``-q q -b 8`` in a single still picture.

    ``min_cu``: x265's minimum CU size, bpgenc's 8 unless the picture has a side below 16 (``min_cu_size``)."""
    global _lambda_file_loaded
    emu = emulation or EMULATION
    tokens = [
        f"qp={q + emu.qp_offset}",  # CQP rate control
        "keyint=1", "frames=1",  # intra only, one picture
        "info=0",  # no version SEI (bEmitInfoSEI = 0)
        "rect=1", "amp=1",  # bEnableRectInter / bEnableAMP (bpgdec's SPS requires AMP)
        "repeat-headers=1",
        "log-level=error",
    ]
    if min_cu != BPG_CB_SIZE:
        tokens.append(f"min-cu-size={min_cu}")
    if emu.bundled_lambda:
        path = x265_lambda_file(emu.lambda_scale)
        tokens.append(f"lambda-file={path}")
        _lambda_file_loaded = str(path)
    elif _lambda_file_loaded:
        # libx265 overwrites its global tables when it reads a lambda file and never restores them
        raise RuntimeError(f"bpg: x265 in this process runs with the lambda tables of {_lambda_file_loaded}; "
                           "an emulation with x265's own tables needs a fresh process")
    return ":".join(tokens + list(emu.params))


def expected_slice_qp(q: int, emulation: X265Emulation | None = None) -> int:
    """The slice QP x265 uses for an I picture in CQP mode: qp - 6*log2(ipratio), rounded down after +0.5."""
    emu = emulation or EMULATION
    return int(q + emu.qp_offset - 6.0 * math.log2(X265_DEFAULT_IPRATIO) + 0.5)


def x265_encode(planes: Sequence[np.ndarray], q: int, chroma: str, emulation: X265Emulation | None = None,
                min_cu: int = BPG_CB_SIZE) -> bytes:
    """x265's Annex-B stream (VPS, SPS, PPS, slice) for the padded planes of ``bpg_planes``."""
    import av

    h, w = planes[0].shape
    if h % min_cu or w % min_cu:
        raise ValueError(f"x265 planes {h}x{w} are not a multiple of the minimum CU size {min_cu}")
    pix_fmt = "yuv420p" if chroma == "420" else "yuv444p"
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix_fmt
    ctx.time_base = fractions.Fraction(1, 25)  # bpgenc's dummy frame rate
    # Metadata only (VUI, dropped from the .bpg size): tell HEVC decoders the samples are full-range
    # BT.601. Our decoder reads the raw planes and never converts them.
    ctx.color_range, ctx.colorspace = AVCOL_RANGE_JPEG, AVCOL_SPC_SMPTE170M
    ctx.options = {"preset": "veryslow", "tune": "ssim", "x265-params": x265_params(q, emulation, min_cu)}
    frame = av.VideoFrame(w, h, pix_fmt)
    # Fill the planes ourselves: from_ndarray rejects 4:2:0 pictures whose H/2 is odd, and nothing
    # here must convert the full-range samples.
    for plane, data in zip(frame.planes, planes):
        if (plane.height, plane.width) != data.shape:
            raise RuntimeError(f"x265 plane is {plane.height}x{plane.width}, data {data.shape}")
        rows = np.zeros((plane.height, plane.line_size), dtype=np.uint8)
        rows[:, : plane.width] = data
        plane.update(rows.tobytes())
    packets = ctx.encode(frame) + ctx.encode(None)
    stream = b"".join(bytes(p) for p in packets)
    if not stream:
        raise RuntimeError("x265 produced no bitstream")
    return stream


def hevc_decode(stream: bytes, chroma: str) -> list[np.ndarray]:
    """Decode one HEVC picture to its raw planes (no range or colour conversion)."""
    import av

    ctx = av.CodecContext.create("hevc", "r")
    # HEVC has no checksum of its own (the container's CRC covers the bytes): at least make FFmpeg
    # fail on the syntax errors it detects instead of concealing them.
    ctx.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
    try:
        frames = ctx.decode(av.Packet(stream)) + ctx.decode(None)
    except av.error.FFmpegError as exc:
        raise BitstreamError(f"bpg: the HEVC decoder refused the stream: {exc}") from exc
    if len(frames) != 1:
        raise BitstreamError(f"bpg: HEVC payload decoded to {len(frames)} pictures, expected 1")
    frame = frames[0]
    expected = "yuv420p" if chroma == "420" else "yuv444p"
    if frame.format.name not in (expected, expected.replace("yuv", "yuvj")):
        raise BitstreamError(f"bpg: HEVC picture is {frame.format.name}, expected {expected}")
    planes = []
    for plane in frame.planes:
        raw = np.frombuffer(bytes(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
        planes.append(raw[:, : plane.width].copy())
    return planes


# --- HEVC bitstream parsing and the .bpg file ----------------------------------------------------------
def split_nal_units(stream: bytes) -> list[tuple[int, int, int]]:
    """Annex-B NAL units as (start of start code, start of NAL header, end), like bpgenc's find_nal_end."""
    units: list[tuple[int, int, int]] = []
    pos, n = 0, len(stream)
    while pos < n:
        if stream.startswith(b"\x00\x00\x00\x01", pos):
            header = pos + 4
        elif stream.startswith(b"\x00\x00\x01", pos):
            header = pos + 3
        else:
            raise BitstreamError(f"bpg: no HEVC start code at byte {pos}")
        nxt = stream.find(b"\x00\x00\x01", header)
        if nxt < 0:
            end = n
        else:
            end = nxt - 1 if nxt - 1 >= header and stream[nxt - 1] == 0 else nxt
        units.append((pos, header, end))
        pos = end
    return units


def nal_type(stream: bytes, header: int) -> int:
    return (stream[header] >> 1) & 0x3F


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise BitstreamError("bpg: HEVC header ends early")
        v = 0
        for b in self.bits[self.pos : self.pos + n]:
            v = (v << 1) | int(b)
        self.pos += n
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("bpg: bad Exp-Golomb code")
        return (1 << zeros) - 1 + (self.u(zeros) if zeros else 0)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def put(self, n: int, v: int) -> None:
        self.bits.extend((v >> (n - 1 - i)) & 1 for i in range(n))

    def ue(self, v: int) -> None:
        v += 1
        n = v.bit_length()
        self.put(n - 1, 0)
        self.put(n, v)

    def nbytes(self) -> int:
        return (len(self.bits) + 7) // 8


def parse_sps(nal: bytes) -> dict[str, int]:
    """The SPS fields bpgenc's ``build_modified_sps`` reads, with its restrictions enforced."""
    r = _BitReader(_unescape(nal))
    r.u(16)  # NAL header
    if r.u(4) != 0 or r.u(3) != 0:
        raise BitstreamError("bpg: VPS id 0 and one sub-layer expected")
    r.u(1)
    r.u(2 + 1 + 5 + 32 + 4 + 43 + 1 + 8)  # profile_tier_level (general part)
    s: dict[str, int] = {}
    if r.ue() != 0:
        raise BitstreamError("bpg: SPS id 0 expected")
    s["chroma_format_idc"] = r.ue()
    if s["chroma_format_idc"] == 3:
        r.u(1)
    s["width"], s["height"] = r.ue(), r.ue()
    s["conformance_window"] = r.u(1)
    if s["conformance_window"]:
        for _ in range(4):
            r.ue()
    s["bit_depth_luma"], s["bit_depth_chroma"] = r.ue() + 8, r.ue() + 8
    if r.ue() + 4 != 8:
        raise BitstreamError("bpg: log2_max_poc_lsb must be 8")
    r.u(1)
    r.ue(), r.ue(), r.ue()
    s["log2_min_cb_size"] = r.ue() + 3
    s["log2_diff_max_min_cb_size"] = r.ue()
    s["log2_min_tb_size"] = r.ue() + 2
    s["log2_diff_max_min_tb_size"] = r.ue()
    depth_inter, s["max_transform_hierarchy_depth_intra"] = r.ue(), r.ue()
    if depth_inter != s["max_transform_hierarchy_depth_intra"]:
        raise BitstreamError("bpg: transform hierarchy depths differ")
    if r.u(1):
        raise BitstreamError("bpg: scaling lists are not allowed")
    if not r.u(1):
        raise BitstreamError("bpg: amp_enabled_flag must be set")
    s["sao_enabled"] = r.u(1)
    s["pcm_enabled"] = r.u(1)
    if s["pcm_enabled"]:
        s["pcm_bits"] = r.u(8)
        s["pcm_min"], s["pcm_diff"], s["pcm_loop_filter_disabled"] = r.ue(), r.ue(), r.u(1)
    if r.ue() != 0 or r.u(1) != 0:
        raise BitstreamError("bpg: no reference picture sets allowed")
    if not r.u(1):
        raise BitstreamError("bpg: sps_temporal_mvp_enabled_flag must be set")
    s["strong_intra_smoothing"] = r.u(1)
    if r.u(1):  # VUI
        if r.u(1) and r.u(8) == 255:
            r.u(32)
        if r.u(1):
            r.u(1)
        if r.u(1):  # video signal type: bpgenc's x265 writes none; it is not part of the compact SPS
            r.u(4)
            if r.u(1):
                r.u(24)
        if r.u(1):
            r.ue(), r.ue()
        r.u(3)
        if r.u(1):
            raise BitstreamError("bpg: default_display_window_flag must be 0")
        if r.u(1):
            r.u(64)
            if r.u(1):
                r.ue()
            if r.u(1):
                raise BitstreamError("bpg: HRD parameters are not allowed")
        if r.u(1):
            r.u(3)
            for _ in range(5):
                r.ue()
    _read_sps_extensions(r, s, "unsupported SPS extensions")
    return s


def _read_sps_extensions(r, s: dict, where: str) -> None:
    """The SPS extension flags, shared by the HEVC SPS and bpg's compact SPS (only the range extension is allowed)."""
    s["sps_extension"] = r.u(1)
    s["range_extension"] = s["range_extension_flags"] = 0
    if s["sps_extension"]:
        s["range_extension"] = r.u(1)
        if r.u(7):
            raise BitstreamError(f"bpg: {where}")
        if s["range_extension"]:
            s["range_extension_flags"] = r.u(9)


def compact_sps(s: dict[str, int]) -> bytes:
    """bpgenc's compact SPS ("hevc_header") built from the parsed SPS."""
    w = _BitWriter()
    w.ue(s["log2_min_cb_size"] - 3)
    w.ue(s["log2_diff_max_min_cb_size"])
    w.ue(s["log2_min_tb_size"] - 2)
    w.ue(s["log2_diff_max_min_tb_size"])
    w.ue(s["max_transform_hierarchy_depth_intra"])
    w.put(1, s["sao_enabled"])
    w.put(1, s["pcm_enabled"])
    if s["pcm_enabled"]:
        w.put(8, s["pcm_bits"])
        w.ue(s["pcm_min"])
        w.ue(s["pcm_diff"])
        w.put(1, s["pcm_loop_filter_disabled"])
    w.put(1, s["strong_intra_smoothing"])
    w.put(1, s["sps_extension"])
    if s["sps_extension"]:
        w.put(1, s["range_extension"])
        w.put(7, 0)
        if s["range_extension"]:
            w.put(9, s["range_extension_flags"])
    w.bits += [0] * (-len(w.bits) % 8)
    return np.packbits(np.array(w.bits, dtype=np.uint8)).tobytes()


def ue7(v: int) -> bytes:
    """BPG's big-endian 7-bit variable-length integer (bpgenc ``put_ue``)."""
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    return bytes(reversed(out))


def read_ue7(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """(value, position after it) of a ue7 at ``pos``, as libbpg's ``get_ue`` reads it: canonical (no leading
    0x80 byte), at most 5 bytes, at most ``BPG_MAX_DATA_SIZE``."""
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            raise BitstreamError(f"bpg: the .bpg file ends inside its {what}")
        byte = data[pos + i]
        if i == 0 and byte == 0x80:
            raise BitstreamError(f"bpg: non-canonical {what} in the .bpg file")
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            if value > BPG_MAX_DATA_SIZE:
                raise BitstreamError(f"bpg: {what} {value} in the .bpg file is out of range")
            return value, pos + i + 1
    raise BitstreamError(f"bpg: malformed {what} in the .bpg file (over 5 bytes)")


@dataclass(frozen=True)
class BPGHeader:
    """The picture header of a .bpg file (libbpg ``bpg_decode_header``), up to the HEVC data."""

    pixel_format: int  # 0 grey, 1 4:2:0, 2 4:2:2, 3 4:4:4, 4/5 4:2:0/4:2:2 with MPEG-2 chroma siting
    alpha1: int
    bit_depth: int
    color_space: int  # 0 YCbCr (BT.601), 1 RGB, 2 YCgCo, 3 BT.709, 4 BT.2020
    has_extension: int
    alpha2: int
    limited_range: int
    animated: int
    width: int
    height: int
    picture_data_length: int  # 0: up to the end of the file
    extension: bytes  # the extension data, unparsed (metadata: EXIF, ICC profile, XMP, thumbnail, animation)
    hevc_offset: int  # where the HEVC data starts

    def hevc_data(self, data: bytes) -> bytes:
        end = len(data) if self.picture_data_length == 0 else self.hevc_offset + self.picture_data_length
        return data[self.hevc_offset : end]


def bpg_header(width: int, height: int, chroma: str) -> bytes:
    """The picture header bpgenc 0.9.8 writes for an 8-bit full-range BT.601 YCbCr picture without alpha,
    animation or extension data (bpgenc.c ``bpg_encoder_encode``): magic, format/alpha1/bit depth,
    colour space/extension/alpha2/limited range/animation, ue7 width, ue7 height, ue7 picture_data_length 0."""
    flags1 = (BPG_FORMATS[chroma] << 5) | (0 << 4) | (8 - 8)
    flags2 = (BPG_CS_YCBCR << 4) | (0 << 3) | (0 << 2) | (0 << 1) | 0
    return BPG_MAGIC + bytes([flags1, flags2]) + ue7(width) + ue7(height) + ue7(0)


def parse_bpg_header(data: bytes) -> BPGHeader:
    """The header of a .bpg file with libbpg's checks (``bpg_decode_header``); extension data is skipped."""
    if len(data) < 6 or not data.startswith(BPG_MAGIC):
        raise BitstreamError("bpg: not a .bpg file (no BPG magic)")
    flags1, flags2 = data[4], data[5]
    fmt, alpha1, bit_depth = flags1 >> 5, (flags1 >> 4) & 1, (flags1 & 0xF) + 8
    color_space, has_ext, alpha2 = flags2 >> 4, (flags2 >> 3) & 1, (flags2 >> 2) & 1
    if fmt > 5 or bit_depth > 14 or color_space > 4 or (fmt == 0 and (color_space or (alpha2 and not alpha1))):
        raise BitstreamError(f"bpg: invalid .bpg picture header (format {fmt}, bit depth {bit_depth}, "
                             f"colour space {color_space})")
    width, pos = read_ue7(data, 6, "width")
    height, pos = read_ue7(data, pos, "height")
    if width == 0 or height == 0:
        raise BitstreamError("bpg: the .bpg header declares an empty picture")
    length, pos = read_ue7(data, pos, "picture data length")
    extension = b""
    if has_ext:
        ext_len, pos = read_ue7(data, pos, "extension data length")
        if pos + ext_len > len(data):
            raise BitstreamError("bpg: the .bpg extension data runs past the end of the file")
        extension, pos = data[pos : pos + ext_len], pos + ext_len
    if pos + length > len(data):
        raise BitstreamError(f"bpg: the .bpg header declares {length} bytes of picture data, "
                             f"{len(data) - pos} follow")
    return BPGHeader(fmt, alpha1, bit_depth, color_space, has_ext, alpha2, (flags2 >> 1) & 1, flags2 & 1,
                     width, height, length, extension, pos)


def check_bpg_declared(header: BPGHeader, height: int, width: int, chroma: str, codec: str = "bpg") -> None:
    """Refuse a .bpg file this codec did not write, before anything is decoded: another size than the
    container's, another chroma format, or features bpgenc's ``-f FMT -c ycbcr -b 8`` never writes."""
    if (header.height, header.width) != (height, width):
        raise BitstreamError(f"{codec}: the .bpg file declares {header.width}x{header.height}, "
                             f"the container {width}x{height}")
    if header.animated:
        raise BitstreamError(f"{codec}: animated .bpg files are not decoded")
    if header.alpha1 or header.alpha2:
        raise BitstreamError(f"{codec}: .bpg files with an alpha plane are not decoded")
    if header.pixel_format != BPG_FORMATS[chroma]:
        raise BitstreamError(f"{codec}: the .bpg file has pixel format {header.pixel_format}, "
                             f"this codec writes {BPG_FORMATS[chroma]} ({chroma})")
    if header.bit_depth != 8 or header.color_space != BPG_CS_YCBCR or header.limited_range:
        raise BitstreamError(f"{codec}: the .bpg file is not 8-bit full-range BT.601 YCbCr (bit depth "
                             f"{header.bit_depth}, colour space {header.color_space}, limited range "
                             f"{header.limited_range})")


def bpg_file(stream: bytes, height: int, width: int, chroma: str) -> bytes:
    """The .bpg file bpgenc 0.9.8 writes for this x265 Annex-B stream of a ``width`` x ``height`` picture.

    The picture header (``bpg_header``); then the HEVC data as bpgenc's ``build_modified_hevc`` writes it:
    ue7 of the compact SPS's length, the compact SPS (``compact_sps``, from x265's SPS; the VPS and the full
    SPS are dropped), then every NAL unit after the SPS as x265 wrote it, the first one without its
    start code. bpgdec infers the coded size from the header's (rounded up to the minimum CU size), so the
    SPS must code exactly that size, without a crop window.
    """
    units = split_nal_units(stream)
    types = [nal_type(stream, hdr) for _, hdr, _ in units]
    if len(units) < 4 or types[:3] != [32, 33, 34] or {32, 33} & set(types[3:]):
        raise BitstreamError(f"bpg: expected one VPS, SPS, then PPS, slice NAL units, got types {types[:8]}")
    sps = parse_sps(stream[units[1][1] : units[1][2]])
    cb = 1 << sps["log2_min_cb_size"]
    coded = (round_up(width, cb), round_up(height, cb))
    if sps["conformance_window"] or (sps["width"], sps["height"]) != coded:
        raise BitstreamError(f"bpg: the SPS codes {sps['width']}x{sps['height']} (crop window "
                             f"{sps['conformance_window']}), a .bpg file of {width}x{height} needs {coded[0]}x{coded[1]}")
    if sps["chroma_format_idc"] != CHROMA_FORMAT_IDC[chroma] or (sps["bit_depth_luma"], sps["bit_depth_chroma"]) != (8, 8):
        raise BitstreamError("bpg: the SPS declares another chroma format or bit depth than 8-bit " + chroma)
    msps = compact_sps(sps)
    return bpg_header(width, height, chroma) + ue7(len(msps)) + msps + stream[units[2][1] :]


def parse_compact_sps(data: bytes) -> dict[str, int]:
    """The fields of bpgenc's compact SPS, checked against the limits of HEVC (and of FFmpeg's decoder)."""
    r = _BitReader(data)
    s: dict[str, int] = {}
    s["log2_min_cb_size"] = r.ue() + 3
    s["log2_diff_max_min_cb_size"] = r.ue()
    s["log2_min_tb_size"] = r.ue() + 2
    s["log2_diff_max_min_tb_size"] = r.ue()
    s["max_transform_hierarchy_depth_intra"] = r.ue()
    s["sao_enabled"], s["pcm_enabled"] = r.u(1), r.u(1)
    if s["pcm_enabled"]:
        s["pcm_bits"] = r.u(8)
        s["pcm_min"], s["pcm_diff"], s["pcm_loop_filter_disabled"] = r.ue(), r.ue(), r.u(1)
    s["strong_intra_smoothing"] = r.u(1)
    _read_sps_extensions(r, s, "unknown SPS extensions in the compact SPS")
    if (r.pos + 7) // 8 != len(data):
        raise BitstreamError(f"bpg: the compact SPS is {len(data)} bytes, its fields {(r.pos + 7) // 8}")
    ctb = s["log2_min_cb_size"] + s["log2_diff_max_min_cb_size"]
    max_tb = s["log2_min_tb_size"] + s["log2_diff_max_min_tb_size"]
    ok = (3 <= s["log2_min_cb_size"] and 4 <= ctb <= 6 and s["log2_min_tb_size"] < s["log2_min_cb_size"]
          and max_tb <= min(ctb, 5) and s["max_transform_hierarchy_depth_intra"] <= ctb - s["log2_min_tb_size"])
    if s["pcm_enabled"]:
        pcm_max = s["pcm_min"] + 3 + s["pcm_diff"]
        ok = ok and (s["pcm_bits"] >> 4) < 8 and (s["pcm_bits"] & 15) < 8 and s["pcm_min"] + 3 <= 5 \
            and pcm_max <= min(ctb, 5)
    if not ok:
        raise BitstreamError(f"bpg: the compact SPS is out of HEVC's limits: {s}")
    return s


def _escape(rbsp: bytes) -> bytes:
    """HEVC emulation prevention: 0x03 after every two zero bytes followed by a byte <= 3."""
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _profile_tier_level(w: _BitWriter, chroma: str) -> None:
    """general profile_tier_level of one sub-layer: Main (4:2:0) or the RExt Main 4:4:4 profile, level 6.2."""
    profile = 1 if chroma == "420" else 4
    w.put(2, 0), w.put(1, 0), w.put(5, profile)  # profile space, tier, profile idc
    w.put(32, (1 << (31 - profile)) | ((1 << 29) if profile == 1 else 0))  # compatibility (Main: Main10 too)
    w.put(4, 0b1001)  # progressive, not interlaced, not non-packed, frame only
    # Main 4:4:4: max_12bit, max_10bit, max_8bit set, max_422/420/monochrome, intra, one picture clear,
    # lower_bit_rate set (A.3.5); Main: all 43 bits reserved zero
    w.put(43, (0b111000001 << 34) if profile == 4 else 0)
    w.put(1, 0)
    w.put(8, 186)  # level 6.2: the largest; FFmpeg's decoder does not enforce levels


def _nal(nal_type_: int, w: _BitWriter) -> bytes:
    w.put(1, 1)  # rbsp_stop_one_bit, then alignment
    w.bits += [0] * (-len(w.bits) % 8)
    rbsp = np.packbits(np.array(w.bits, dtype=np.uint8)).tobytes()
    return b"\x00\x00\x00\x01" + bytes([nal_type_ << 1, 1]) + _escape(rbsp)


def hevc_parameter_sets(s: dict[str, int], width: int, height: int, chroma: str) -> bytes:
    """A VPS and an SPS (Annex B) for FFmpeg's stock HEVC decoder, equivalent to what libbpg's patched
    decoder derives from a compact SPS (hevc_ps.c, ``USE_MSPS``): one layer and sub-layer, one picture
    buffer, log2_max_poc_lsb 8, no reference picture sets, no scaling lists, AMP and temporal MVP set,
    no VUI, no crop window; ``width`` x ``height`` is the coded size."""
    v = _BitWriter()
    v.put(4, 0), v.put(1, 1), v.put(1, 1), v.put(6, 0), v.put(3, 0), v.put(1, 1), v.put(16, 0xFFFF)
    _profile_tier_level(v, chroma)
    v.put(1, 1), v.ue(0), v.ue(0), v.ue(0)  # sub-layer ordering info: 1 picture buffer, no reordering
    v.put(6, 0), v.ue(0), v.put(1, 0), v.put(1, 0)  # max layer id, one layer set, no timing, no extension
    w = _BitWriter()
    w.put(4, 0), w.put(3, 0), w.put(1, 1)  # VPS id, one sub-layer, temporal id nesting
    _profile_tier_level(w, chroma)
    w.ue(0), w.ue(CHROMA_FORMAT_IDC[chroma])
    if chroma == "444":
        w.put(1, 0)  # separate_colour_plane_flag
    w.ue(width), w.ue(height), w.put(1, 0)  # no conformance window
    w.ue(0), w.ue(0), w.ue(8 - 4)  # bit depths 8, log2_max_pic_order_cnt_lsb 8
    w.put(1, 1), w.ue(0), w.ue(0), w.ue(0)
    w.ue(s["log2_min_cb_size"] - 3), w.ue(s["log2_diff_max_min_cb_size"])
    w.ue(s["log2_min_tb_size"] - 2), w.ue(s["log2_diff_max_min_tb_size"])
    w.ue(s["max_transform_hierarchy_depth_intra"]), w.ue(s["max_transform_hierarchy_depth_intra"])
    w.put(1, 0), w.put(1, 1), w.put(1, s["sao_enabled"]), w.put(1, s["pcm_enabled"])  # no scaling list, AMP
    if s["pcm_enabled"]:
        w.put(8, s["pcm_bits"]), w.ue(s["pcm_min"]), w.ue(s["pcm_diff"]), w.put(1, s["pcm_loop_filter_disabled"])
    w.ue(0), w.put(1, 0), w.put(1, 1)  # no short-term RPS, no long-term pictures, temporal MVP
    w.put(1, s["strong_intra_smoothing"]), w.put(1, 0)  # no VUI
    w.put(1, s["sps_extension"])
    if s["sps_extension"]:
        w.put(1, s["range_extension"]), w.put(7, 0)  # no multilayer, 3D, SCC or other extensions
        if s["range_extension"]:
            w.put(9, s["range_extension_flags"])
    return _nal(32, v) + _nal(33, w)


def bpg_to_hevc(data: bytes, header: BPGHeader, chroma: str) -> tuple[bytes, tuple[int, int]]:
    """An Annex-B stream for FFmpeg's HEVC decoder from a .bpg file, as libbpg's decoder builds one (libbpg.c
    ``hevc_decode_start``), and the coded (height, width). Header-level checks only: the NAL units after
    the compact SPS must be a PPS, then intra (IRAP) slices or SEI, of layer 0 (no alpha plane); none may
    be a VPS or SPS, which would replace the parameter sets built here from the header's picture size."""
    hevc = header.hevc_data(data)
    n, pos = read_ue7(hevc, 0, "compact SPS length")
    if pos + n > len(hevc):
        raise BitstreamError("bpg: the .bpg file ends inside its compact SPS")
    s = parse_compact_sps(hevc[pos : pos + n])
    cb = 1 << s["log2_min_cb_size"]
    coded_h, coded_w = round_up(header.height, cb), round_up(header.width, cb)
    nals = b"\x00\x00\x00\x01" + hevc[pos + n :]  # the first NAL unit is stored without its start code
    units = split_nal_units(nals)
    types = []
    for _, hdr, end in units:
        if end - hdr < 3:
            raise BitstreamError("bpg: an empty NAL unit in the .bpg file")
        if nals[hdr] & 0x80 or nals[hdr] & 1 or nals[hdr + 1] >> 3:
            raise BitstreamError("bpg: a NAL unit of another layer (alpha) or with its forbidden bit set")
        types.append(nal_type(nals, hdr))
    vcl = [t for t in types if t < 32]
    if types[0] != 34 or not vcl or any(not 16 <= t <= 21 for t in vcl) or {32, 33} & set(types):
        raise BitstreamError(f"bpg: expected a PPS, then intra slices after the compact SPS, got NAL types {types[:8]}")
    return hevc_parameter_sets(s, coded_w, coded_h, chroma) + nals, (coded_h, coded_w)


def decode_bpg(data: bytes, height: int, width: int, chroma: str, codec: str = "bpg") -> np.ndarray:
    """A .bpg file of this codec's kind -> HxWx3 uint8 RGB, the pixels bpgdec 0.9.8 outputs.

    The header is checked against the container's size and the codec's format before anything is decoded
    (``check_bpg_declared``); the HEVC data goes to FFmpeg in parameter sets built from that header."""
    header = parse_bpg_header(data)
    check_bpg_declared(header, height, width, chroma, codec)
    stream, coded = bpg_to_hevc(data, header, chroma)
    planes = hevc_decode(stream, chroma)
    if planes[0].shape != coded:
        raise BitstreamError(f"{codec}: HEVC picture is {planes[0].shape}, expected {coded[0]}x{coded[1]}")
    return rgb_from_planes(planes, height, width, chroma)


def check_hevc_declared(stream: bytes, height: int, width: int, chroma: str) -> None:
    """Refuse a legacy raw-HEVC payload whose SPS (every one: a later SPS would replace the first) declares
    another coded size (``legacy_padded_size``), chroma format or bit depth than the container implies.
    Parses headers only.
    """
    units = split_nal_units(stream)
    types = [nal_type(stream, hdr) for _, hdr, _ in units]
    if len(units) < 4 or types[:3] != [32, 33, 34]:
        raise BitstreamError(f"bpg: expected VPS, SPS, PPS, slice NAL units, got types {types[:8]}")
    want = legacy_padded_size(height, width)[::-1]
    for (_, hdr, end), kind in zip(units, types):
        if kind != 33:
            continue
        sps = parse_sps(stream[hdr:end])
        if (sps["width"], sps["height"]) != want:
            raise BitstreamError(f"bpg: SPS declares a {sps['width']}x{sps['height']} picture, "
                                 f"the header implies {want[0]}x{want[1]}")
        if sps["chroma_format_idc"] != CHROMA_FORMAT_IDC[chroma] or sps["bit_depth_luma"] != 8 or sps["bit_depth_chroma"] != 8:
            raise BitstreamError("bpg: SPS declares another chroma format or bit depth than 8-bit " + chroma)


def decode_legacy_hevc(stream: bytes, height: int, width: int, chroma: str, codec: str = "bpg") -> np.ndarray:
    """A payload of the emulation before it wrote .bpg files (checkpoint ``x265-pyav-bpglambda``): the raw
    Annex-B stream, the picture padded to ``legacy_padded_size``. Decoded as then, to the same pixels."""
    check_hevc_declared(stream, height, width, chroma)  # before FFmpeg sizes its picture buffers
    planes = hevc_decode(stream, chroma)
    ph, pw = legacy_padded_size(height, width)
    if planes[0].shape != (ph, pw):
        raise BitstreamError(f"{codec}: HEVC picture is {planes[0].shape}, expected {ph}x{pw}")
    return rgb_from_planes(planes, height, width, chroma)


def slice_qp(stream: bytes) -> dict[str, int]:
    """init_qp + slice_qp_delta of the first slice, and whether CU-level QP deltas are enabled."""
    units = split_nal_units(stream)
    types = [nal_type(stream, hdr) for _, hdr, _ in units]
    sps = parse_sps(stream[units[types.index(33)][1] : units[types.index(33)][2]])
    _, h, e = units[types.index(34)]
    p = _BitReader(_unescape(stream[h:e]))
    p.u(16)
    p.ue(), p.ue()
    p.u(1)  # dependent_slice_segments_enabled_flag
    output_flag_present = p.u(1)
    extra_bits = p.u(3)
    p.u(1), p.u(1)  # sign data hiding, cabac_init_present
    p.ue(), p.ue()
    init_qp = 26 + p.se()
    p.u(1), p.u(1)  # constrained_intra_pred, transform_skip
    cu_qp_delta = p.u(1)
    slice_index = next(i for i, t in enumerate(types) if t < 32)
    _, h, e = units[slice_index]
    t = types[slice_index]
    if not 16 <= t <= 21:
        raise BitstreamError(f"bpg: first slice is not an IRAP picture (type {t})")
    r = _BitReader(_unescape(stream[h:e]))
    r.u(16)
    if not r.u(1):
        raise BitstreamError("bpg: first slice segment flag not set")
    r.u(1)  # no_output_of_prior_pics_flag
    r.ue()  # slice_pic_parameter_set_id
    r.u(extra_bits)
    slice_type = r.ue()
    if output_flag_present:
        r.u(1)
    if t not in (19, 20):  # IDR pictures carry no POC / RPS
        raise BitstreamError("bpg: only IDR pictures are supported by this parser")
    if sps["sao_enabled"]:
        r.u(1)
        if sps["chroma_format_idc"] != 0:
            r.u(1)
    if slice_type != 2:
        raise BitstreamError("bpg: intra slice expected")
    return {"slice_qp": init_qp + r.se(), "cu_qp_delta_enabled": cu_qp_delta}


# --- the codec --------------------------------------------------------------------------------------
class BPG(Codec):
    name: ClassVar[str] = "bpg"
    description: ClassVar[str] = "BPG 0.9.8 (x265 veryslow, tune ssim, CQP), 4:2:0, bpgenc/bpgdec filters"
    chroma: ClassVar[str] = "420"
    #: bpgenc's -q (0..51, lower = more bits); --target-bpp bisects it
    rate_control: ClassVar[RateControl] = RateControl("q", 0, 51, more_bits_when_higher=False)
    OPTIONS: ClassVar[dict[str, Option]] = {
        "backend": Option(str, "auto", "bpgenc/bpgdec binaries, PyAV's libx265, or auto (binaries when found)",
                          choices=("auto", "binary", "pyav")),
    }

    def __init__(self, device: str | None = None, backend: str = "auto", **options: Any) -> None:
        super().__init__(device="cpu", **options)
        if backend not in ("auto", "binary", "pyav"):
            raise ValueError(f"bpg: backend must be auto, binary or pyav, not {backend!r}")
        self.backend = backend

    # -- availability and provenance --
    @staticmethod
    def binaries() -> tuple[str | None, str | None]:
        """bpgenc/bpgdec built by ``rdp-bench install bpg`` (the cache ``bin/``), else those on PATH."""
        from rdp_bench.codecs.bpg_install import cache_bin_dir

        built = cache_bin_dir()
        if all(os.access(built / n, os.X_OK) for n in ("bpgenc", "bpgdec")):
            return str(built / "bpgenc"), str(built / "bpgdec")
        return shutil.which("bpgenc"), shutil.which("bpgdec")

    def uses_binary(self) -> bool:
        enc, dec = self.binaries()
        if self.backend == "binary" and not (enc and dec):
            raise RuntimeError("bpg: backend='binary' but bpgenc/bpgdec are not on PATH")
        return self.backend != "pyav" and bool(enc and dec)

    @classmethod
    def availability(cls) -> Availability:
        enc, dec = cls.binaries()
        if enc and dec:
            return Availability(True)
        try:
            import av
        except ImportError:
            return Availability(False, "needs bpgenc/bpgdec on PATH or PyAV (pip install av) with libx265")
        if "libx265" not in av.codecs_available or "hevc" not in av.codecs_available:
            return Availability(False, "this PyAV build lacks libx265 or the hevc decoder; install bpgenc/bpgdec")
        return Availability(True)

    #: the emulation's checkpoint id: it changes whenever the emulation's settings or its payload change, so
    #: rows of another emulation are never reused or mixed with these. ``x265-pyav-bpglambda`` (the same
    #: settings, payload = the raw HEVC stream, 62-64 bytes more than the .bpg file) is retired.
    EMULATION_ID: ClassVar[str] = "x265-pyav-bpglambda-bpgfile"

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        return "bpgenc-binary" if self.uses_binary() else self.EMULATION_ID

    def report_note(self) -> str:
        """What a report says about results of this codec: which backend made them and, for the emulation,
        its measured gap to real bpgenc (``EMULATION_MEASURED``). Recorded in provenance.json as
        ``report_note``, which ``rdp_bench.reports`` prints where the codec is the anchor."""
        if self.uses_binary():
            return f"{self.name}: the real bpgenc/bpgdec 0.9.8 binaries"
        return (f"{self.name}: the x265 4.x/PyAV emulation of bpgenc 0.9.8, not bpgenc itself; measured "
                f"{EMULATION_MEASURED}")

    def provenance(self) -> dict[str, Any]:
        bpp = "bpp is the payload, the .bpg file"
        if self.uses_binary():
            enc, dec = self.binaries()
            return {"backend": "bpgenc/bpgdec binaries", "bpgenc": enc, "bpgdec": dec,
                    "bpgenc_options": f"-q Q -f {self.chroma} -e x265 -c ycbcr -b 8", "bpp_column": bpp + " bpgenc wrote",
                    "report_note": self.report_note()}
        import av

        return {
            "backend": "x265 through PyAV, bpgenc 0.9.8 pre/post-processing and .bpg file reproduced in Python",
            "pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "x265_options": {"preset": "veryslow", "tune": "ssim", "x265-params": ":".join(
                [f"qp=Q{EMULATION.qp_offset:+d}" if EMULATION.qp_offset else "qp=Q"]
                + [t if not t.startswith("lambda-file=") else "lambda-file=<the bundled x265's tables>"
                   for t in x265_params(0).split(":")[1:]])},
            "emulation": EMULATION.label(),
            "measured_against_bpgenc_0.9.8": EMULATION_MEASURED,
            "bpp_column": bpp + " bpgenc 0.9.8 would write for the x265 stream (header, compact SPS, NAL units)",
            "report_note": self.report_note(),
        }

    # -- rate points --
    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"q{q}", {"q": q}, id=BPG_RATE_IDS[q]) for q in BPG_QUALITIES]

    # -- encode --
    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[bytes]:
        q = int(rate_point.params["q"])
        binary = self.uses_binary()
        return [self._encode_binary(rgb, q) if binary else self.encode_rgb(rgb, q)
                for rgb in (tensor_to_uint8(img) for img in images)]

    def encode_hevc(self, rgb: np.ndarray, q: int) -> bytes:
        """x265's Annex-B HEVC stream for an HxWx3 uint8 image at bpgenc quality ``q`` (0..51)."""
        if not 0 <= q <= 51:
            raise ValueError(f"bpg: q must be in 0..51, got {q}")
        h, w, _ = rgb.shape
        return x265_encode(bpg_planes(rgb, self.chroma), q, self.chroma, min_cu=min_cu_size(h, w))

    def encode_rgb(self, rgb: np.ndarray, q: int) -> bytes:
        """The emulation's .bpg file for an HxWx3 uint8 image at bpgenc quality ``q`` (0..51)."""
        h, w, _ = rgb.shape
        return bpg_file(self.encode_hevc(rgb, q), h, w, self.chroma)

    def _encode_binary(self, rgb: np.ndarray, q: int) -> bytes:
        from PIL import Image

        enc, _ = self.binaries()
        with tempfile.TemporaryDirectory(prefix="rdp-bpg-") as tmp:
            src, dst = Path(tmp) / "in.png", Path(tmp) / "out.bpg"
            Image.fromarray(rgb).save(src)
            cmd = [enc, "-q", str(q), "-f", self.chroma, "-e", "x265", "-c", "ycbcr", "-b", "8", "-o", str(dst), str(src)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
            return dst.read_bytes()

    # -- decode --
    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        images = []
        for rec in records:
            rgb = self.decode_rgb(rec.payload, rec.height, rec.width)
            if rgb.shape != (rec.height, rec.width, 3):
                raise BitstreamError(f"{self.name}: decoded {rgb.shape[:2]}, header says {rec.height}x{rec.width}")
            images.append(uint8_to_tensor(rgb))
        return images

    def decode_rgb(self, payload: bytes, height: int, width: int) -> np.ndarray:
        """A payload -> HxWx3 uint8 RGB. A .bpg file (either backend's, or any bpgenc ``-f FMT -c ycbcr -b 8``
        output of this size) is checked against the container first, then decoded by bpgdec when this
        codec runs the binaries, else in Python (the same pixels). A raw HEVC stream is a payload of the
        retired emulation id ``x265-pyav-bpglambda``: still decoded (``decode_legacy_hevc``), so reports and
        re-runs on old run folders can read their stored bitstreams; its rows keep their own id."""
        if payload.startswith(BPG_MAGIC):
            header = parse_bpg_header(payload)
            check_bpg_declared(header, height, width, self.chroma, self.name)  # before anything is decoded
            if self.backend != "pyav" and all(self.binaries()):
                return self._decode_binary(payload)
            return decode_bpg(payload, height, width, self.chroma, self.name)
        if payload.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")):
            return decode_legacy_hevc(payload, height, width, self.chroma, self.name)
        raise BitstreamError(f"{self.name}: payload is neither a .bpg file nor an HEVC Annex-B stream")

    def _decode_binary(self, data: bytes) -> np.ndarray:
        from PIL import Image

        _, dec = self.binaries()
        with tempfile.TemporaryDirectory(prefix="rdp-bpg-") as tmp:
            src, dst = Path(tmp) / "in.bpg", Path(tmp) / "out.png"
            src.write_bytes(data)
            res = subprocess.run([dec, "-o", str(dst), str(src)], capture_output=True, timeout=600)
            if res.returncode != 0 or not dst.exists():
                raise BitstreamError(f"{self.name}: bpgdec failed: {res.stderr.decode(errors='replace')[:200]}")
            with Image.open(dst) as im:
                return np.asarray(im.convert("RGB"))


class BPG444(BPG):
    name: ClassVar[str] = "bpg444"
    description: ClassVar[str] = "BPG 0.9.8 (x265 veryslow, tune ssim, CQP), 4:4:4"
    chroma: ClassVar[str] = "444"
