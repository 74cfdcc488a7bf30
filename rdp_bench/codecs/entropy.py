"""Real entropy coding for the learned codecs (HiFiC, MS-ILLM, CDC, CorrDiff).

Everything here is a thin, deterministic layer over CompressAI's rANS range coder
(``compressai.ans``) and CDF tables:

* ``GaussianLatentCoder`` codes a latent ``y`` given per-element scales (and means), the
  mean-scale hyperprior's conditional model (CompressAI ``GaussianConditional``).
* ``FactorizedCoder`` codes a hyper-latent ``z`` with one CDF table per channel, built from a
  CompressAI ``EntropyBottleneck`` or from any per-channel CDF function.
* ``pack_strings`` / ``unpack_strings`` frame several coder strings as one payload.

Determinism: the decoder must pick exactly the same CDF table for every element as the encoder did,
so all table selection and coding runs on CPU in float32 (as NeuralCompression does). Callers should
also compute the scales that select tables (hyper-synthesis) on CPU, one image at a time, so a batch
of 8 and a batch of 1 select identical tables.
"""

from __future__ import annotations

import math
import zlib
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from compressai._CXX import pmf_to_quantized_cdf
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from rdp_bench.container import BitstreamError

#: CompressAI's default scale table (0.11 .. 256, 64 log-spaced levels), used by HiFiC/MS-ILLM.
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64
PRECISION = 16  # bits of the quantized CDFs (CompressAI's entropy_coder_precision)
_MAX_STRINGS = 64
#: largest |symbol| a factorized string may decode to (latents beyond 2^24 come only from corrupt strings)
MAX_ESCAPED_SYMBOL = 1 << 24


def default_scale_table(lo: float = SCALES_MIN, hi: float = SCALES_MAX, levels: int = SCALES_LEVELS) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(lo), math.log(hi), levels))


# --- payload framing -----------------------------------------------------------------------------

def _put_uvarint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _get_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise BitstreamError("payload truncated inside a length field")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise BitstreamError("malformed length field in payload")


def pack_strings(parts: Sequence[bytes]) -> bytes:
    """``count, len_1..len_n`` (LEB128 varints), the strings, then a CRC32 of all of it.

    The CRC lets corrupt strings fail here with a ``BitstreamError`` instead of decoding to garbage
    (the range decoder itself cannot detect corruption).
    """
    if len(parts) > _MAX_STRINGS:
        raise ValueError(f"at most {_MAX_STRINGS} strings per payload, got {len(parts)}")
    out = bytearray()
    _put_uvarint(len(parts), out)
    for part in parts:
        _put_uvarint(len(part), out)
    for part in parts:
        out += part
    out += zlib.crc32(out).to_bytes(4, "big")
    return bytes(out)


def unpack_strings(data: bytes, expected_count: int | None = None) -> list[bytes]:
    """Inverse of ``pack_strings``; any malformed, truncated or corrupt input raises ``BitstreamError``."""
    data = bytes(data)
    if len(data) < 5:
        raise BitstreamError(f"payload too short ({len(data)} bytes)")
    body, crc = data[:-4], int.from_bytes(data[-4:], "big")
    if zlib.crc32(body) != crc:
        raise BitstreamError("payload checksum mismatch: the entropy-coded data is corrupt")
    count, pos = _get_uvarint(body, 0)
    if count > _MAX_STRINGS:
        raise BitstreamError(f"payload claims {count} strings (max {_MAX_STRINGS})")
    if expected_count is not None and count != expected_count:
        raise BitstreamError(f"payload has {count} strings, expected {expected_count}")
    lengths = []
    for _ in range(count):
        n, pos = _get_uvarint(body, pos)
        lengths.append(n)
    if pos + sum(lengths) != len(body):
        raise BitstreamError("payload string lengths do not add up to its size (truncated or padded)")
    parts = []
    for n in lengths:
        parts.append(body[pos : pos + n])
        pos += n
    return parts


# --- padding -------------------------------------------------------------------------------------

def pad_to_multiple(x: torch.Tensor, multiple: int = 64, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of an NCHW (or CHW) tensor to a multiple of ``multiple``; returns the original (h, w).

    Reflection padding (replicate when the image is too small to reflect) keeps the padded border
    cheap to code.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    squeeze = x.ndim == 3
    batch = x.unsqueeze(0) if squeeze else x
    use = mode if (mode != "reflect" or (ph < h and pw < w)) else "replicate"
    batch = F.pad(batch, (0, pw, 0, ph), mode=use)
    return (batch[0] if squeeze else batch), (h, w)


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo ``pad_to_multiple``: keep the top-left ``size`` pixels."""
    h, w = size
    return x[..., :h, :w]


# --- shared table coder --------------------------------------------------------------------------

class _Tables:
    """Quantized CDF tables in the list form the rANS coder wants, built once."""

    def __init__(self, quantized_cdf: torch.Tensor, cdf_lengths: torch.Tensor, offsets: torch.Tensor) -> None:
        self.cdfs: list[list[int]] = quantized_cdf.to(torch.int32).tolist()
        self.lengths: list[int] = cdf_lengths.reshape(-1).to(torch.int32).tolist()
        self.offsets: list[int] = offsets.reshape(-1).to(torch.int32).tolist()

    def encode(self, symbols: torch.Tensor, indexes: torch.Tensor) -> bytes:
        encoder = RansEncoder()
        return encoder.encode_with_indexes(
            symbols.reshape(-1).to(torch.int32).tolist(),
            indexes.reshape(-1).to(torch.int32).tolist(),
            self.cdfs, self.lengths, self.offsets,
        )

    def decode(self, string: bytes, indexes: torch.Tensor) -> torch.Tensor:
        flat = indexes.reshape(-1).to(torch.int32).tolist()
        # The rANS decoder reads forward without bounds checks; zero padding (one word per symbol, the
        # most it can consume) keeps a corrupt or truncated string from reading past the buffer.
        padded = bytes(string) + bytes(4 * len(flat) + 16)
        values = RansDecoder().decode_with_indexes(padded, flat, self.cdfs, self.lengths, self.offsets)
        return torch.tensor(values, dtype=torch.int32).reshape(indexes.shape)

    def stream_decoder(self, string: bytes, max_symbols: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Serial decoding of one string written by ``encode``: each call decodes the next symbols, one per
        index given (autoregressive models learn the next indexes from the symbols decoded so far).

        At most ``max_symbols`` symbols are read (the string is zero-padded for them, as in ``decode``).
        Each call hands the coder only the tables its indexes use: the full table list (up to ~200k
        numbers) would be converted on every call, which dominates serial decoding."""
        decoder = RansDecoder()
        decoder.set_stream(bytes(string) + bytes(4 * max_symbols + 16))

        def next_symbols(indexes: torch.Tensor) -> torch.Tensor:
            flat = indexes.reshape(-1).to(torch.int32).tolist()
            used = sorted(set(flat))
            local = {table: k for k, table in enumerate(used)}
            values = decoder.decode_stream([local[i] for i in flat], [self.cdfs[t] for t in used],
                                           [self.lengths[t] for t in used], [self.offsets[t] for t in used])
            return torch.tensor(values, dtype=torch.int32).reshape(indexes.shape)

        return next_symbols


def _as_cpu_float(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to("cpu", torch.float32)


# --- Gaussian conditional ------------------------------------------------------------------------

class GaussianLatentCoder:
    """Range coding of ``y`` under N(means, scales) convolved with U(-1/2, 1/2), CPU float32.

    ``compress`` / ``decompress`` take NCHW tensors and work per batch item (one string each).
    """

    def __init__(self, scale_table: torch.Tensor | Sequence[float] | None = None, tail_mass: float = 1e-9) -> None:
        table = default_scale_table() if scale_table is None else torch.as_tensor(scale_table, dtype=torch.float32)
        self.model = GaussianConditional(table.tolist(), tail_mass=tail_mass)
        self.model.update()
        self.tables = _Tables(self.model._quantized_cdf, self.model._cdf_length, self.model._offset)

    @classmethod
    def from_module(cls, module: GaussianConditional) -> "GaussianLatentCoder":
        """Use the scale table of an existing ``GaussianConditional`` (e.g. from a checkpoint)."""
        table = module.scale_table.detach().cpu().float()
        return cls(table if table.numel() else None, tail_mass=float(module.tail_mass))

    def indexes(self, scales: torch.Tensor) -> torch.Tensor:
        return self.model.build_indexes(_as_cpu_float(scales))

    def symbols(self, y: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
        y = _as_cpu_float(y)
        means = _as_cpu_float(means)
        return torch.round(y - means if means is not None else y).to(torch.int32)

    def compress(self, y: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None = None) -> list[bytes]:
        symbols = self.symbols(y, means)
        indexes = self.indexes(scales)
        return [self.tables.encode(symbols[i], indexes[i]) for i in range(symbols.shape[0])]

    def decompress(self, strings: Sequence[bytes], scales: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
        indexes = self.indexes(scales)
        if len(strings) != indexes.shape[0]:
            raise BitstreamError(f"{len(strings)} strings for a batch of {indexes.shape[0]}")
        values = torch.stack([self.tables.decode(s, indexes[i]) for i, s in enumerate(strings)]).float()
        means = _as_cpu_float(means)
        return values + means if means is not None else values

    def likelihood(self, y_hat: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
        """Model probability of each (already quantized) element, for estimated bits."""
        return self.model._likelihood(_as_cpu_float(y_hat), _as_cpu_float(scales), _as_cpu_float(means)).clamp_min(1e-9)


# --- factorized prior ----------------------------------------------------------------------------

class FactorizedCoder:
    """Range coding of a hyper-latent with one CDF table per channel (fully factorized prior).

    ``z`` is quantized around per-channel ``medians``: symbol = round(z - median), ẑ = symbol + median.
    """

    def __init__(self, quantized_cdf: torch.Tensor, cdf_lengths: torch.Tensor, offsets: torch.Tensor,
                 medians: torch.Tensor) -> None:
        self.medians = medians.detach().to("cpu", torch.float32).reshape(-1)
        self.channels = self.medians.numel()
        if quantized_cdf.shape[0] != self.channels:
            raise ValueError(f"{quantized_cdf.shape[0]} CDF tables for {self.channels} channels")
        self.tables = _Tables(quantized_cdf, cdf_lengths, offsets)
        # 1e-4: rANS state rounding can save up to ~4.4e-5 bits per symbol against -log2(p)
        self._min_bits_per_location = sum(
            max(0.0, -math.log2(max(b - a for a, b in zip(cdf[: n - 1], cdf[1:n])) / cdf[n - 1]) - 1e-4)
            for cdf, n in zip(self.tables.cdfs, self.tables.lengths)
        )

    @classmethod
    def from_entropy_bottleneck(cls, bottleneck: EntropyBottleneck) -> "FactorizedCoder":
        """Build the tables from a CompressAI ``EntropyBottleneck`` (copied to CPU float32 first)."""
        import copy

        eb = copy.deepcopy(bottleneck).to("cpu", torch.float32)
        eb.update(force=True)
        return cls(eb._quantized_cdf, eb._cdf_length, eb._offset, eb._get_medians().detach().reshape(-1))

    @classmethod
    def from_cdf_fn(cls, cdf_fn: Callable[[torch.Tensor], torch.Tensor], channels: int,
                    medians: torch.Tensor | None = None, tail_mass: float = 1e-9, max_range: int = 1024,
                    precision: int = PRECISION) -> "FactorizedCoder":
        """Build the tables from any per-channel CDF.

        ``cdf_fn(x)`` takes a ``channels x N`` float tensor of values and returns the CDF of each
        channel's distribution at those values (same shape). The support of channel ``c`` is the
        integers ``k`` around ``medians[c]`` (default 0) whose bins ``[k-1/2, k+1/2]`` are not in the
        outer ``tail_mass`` (at most ``max_range`` each side); values outside are escape-coded.
        """
        med = torch.zeros(channels) if medians is None else medians.detach().to("cpu", torch.float32).reshape(-1)
        ks = torch.arange(-max_range, max_range + 1, dtype=torch.float32)
        with torch.no_grad():
            upper = cdf_fn(med[:, None] + ks[None, :] + 0.5).to("cpu", torch.float64)
            lower = cdf_fn(med[:, None] + ks[None, :] - 0.5).to("cpu", torch.float64)
        pmf = (upper - lower).clamp_min(0.0)
        cdfs, lengths, offsets = [], [], []
        for c in range(channels):
            # Widest-needed support: bins below ``first`` / above ``last`` hold at most tail_mass/2 each.
            low_ok = torch.nonzero((lower[c] <= tail_mass / 2) & (ks <= 0)).reshape(-1)
            high_ok = torch.nonzero((1.0 - upper[c] <= tail_mass / 2) & (ks >= 0)).reshape(-1)
            first = int(low_ok.max()) if low_ok.numel() else 0
            last = int(high_ok.min()) if high_ok.numel() else len(ks) - 1
            p = pmf[c, first : last + 1]
            tail = float(lower[c, first]) + float(1.0 - upper[c, last])
            prob = torch.cat([p, torch.tensor([max(tail, 0.0)], dtype=torch.float64)]).float()
            cdfs.append(pmf_to_quantized_cdf(prob.tolist(), precision))
            offsets.append(int(ks[first]))
            lengths.append(len(cdfs[-1]))
        width = max(lengths)
        table = torch.zeros(channels, width, dtype=torch.int32)
        for c, q in enumerate(cdfs):
            table[c, : len(q)] = torch.tensor(q, dtype=torch.int32)
        return cls(table, torch.tensor(lengths), torch.tensor(offsets), med)

    def _indexes(self, shape: Sequence[int]) -> torch.Tensor:
        if shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {shape[0]}")
        return torch.arange(self.channels, dtype=torch.int32).reshape(-1, *([1] * (len(shape) - 1))).expand(*shape)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """ẑ as the decoder will see it (CPU float32)."""
        med = self.medians.reshape(1, -1, *([1] * (z.ndim - 2)))
        return torch.round(_as_cpu_float(z) - med) + med

    def compress(self, z: torch.Tensor) -> list[bytes]:
        z = _as_cpu_float(z)
        med = self.medians.reshape(1, -1, *([1] * (z.ndim - 2)))
        symbols = torch.round(z - med).to(torch.int32)
        indexes = self._indexes(z.shape[1:])
        return [self.tables.encode(symbols[i], indexes) for i in range(z.shape[0])]

    def min_bits(self, spatial_shape: Sequence[int]) -> float:
        """Fewest bits any string of this shape can take: each element costs at least -log2 of its
        channel's most probable symbol (the quantized CDFs give every symbol at least 1/2^16)."""
        return math.prod(spatial_shape) * self._min_bits_per_location

    def decompress(self, strings: Sequence[bytes], spatial_shape: Sequence[int]) -> torch.Tensor:
        """Decode hyper-latents of ``spatial_shape`` (from the container's H x W) and verify each string.

        The shape comes from the header, not the string, so a string is only accepted when it is long
        enough for that many symbols (checked before any tensor is sized) and is exactly the encoding
        of what it decoded to (re-encoded and compared): a header that claims another size, or a
        corrupt hyper string, raises ``BitstreamError`` instead of decoding to an image of the wrong
        size. This pins the latent grid, whose size follows from the hyper-latent's.
        """
        need = self.min_bits(spatial_shape)
        for s in strings:
            if need > 8 * len(s) + 64:  # 64: the coder's final state flush can hold a few bits for free
                raise BitstreamError(f"hyper-latent string of {len(s)} bytes cannot hold the {tuple(spatial_shape)} "
                                     f"grid the header implies (at least {need / 8:.0f} bytes)")
        indexes = self._indexes((self.channels, *spatial_shape))
        med = self.medians.reshape(-1, *([1] * len(spatial_shape)))
        out = []
        for s in strings:
            symbols = self.tables.decode(s, indexes)
            # corrupt escape codes decode to huge values, and re-encoding one whose raw value overflows
            # int32 never ends in the rANS coder: such a string is refused before the check
            if symbols.numel() and int(symbols.abs().max()) > MAX_ESCAPED_SYMBOL:
                raise BitstreamError("hyper-latent string decodes to out-of-range symbols (it is corrupt)")
            if self.tables.encode(symbols, indexes) != bytes(s):
                raise BitstreamError("hyper-latent string does not match the image size in the header "
                                     "(or is corrupt)")
            out.append(symbols.float() + med)
        return torch.stack(out)


def bits_from_likelihoods(likelihoods: torch.Tensor) -> torch.Tensor:
    """Estimated bits per batch item: -sum(log2 p)."""
    return -torch.log2(likelihoods.clamp_min(1e-9)).flatten(1).sum(1)


__all__ = [
    "FactorizedCoder", "GaussianLatentCoder", "bits_from_likelihoods", "crop", "default_scale_table",
    "pack_strings", "pad_to_multiple", "unpack_strings",
]
