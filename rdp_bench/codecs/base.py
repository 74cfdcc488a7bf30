"""The one interface every codec implements.

A subclass provides ``rate_points`` and two batch methods on payloads; the base class wraps each
payload in the rdp-bench container (codec name, rate point, image size, CRC) so that decoding needs
nothing but the bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch

from rdp_bench.container import DEFAULT_MAX_PIXELS, BitstreamError, Container


@dataclass(frozen=True)
class RatePoint:
    """One operating point of a codec. ``params`` are codec-specific (quality, lambda, QP, ...)."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    #: the stable number a bitstream's header carries for this point (a learned codec's weights table,
    #: ``rdp_bench.codecs.zoo``); None: the point's position in ``rate_table()`` (a sweep fixed in code)
    id: int | None = field(default=None, compare=False)


#: label prefix of a rate-matched point (``--target-bpp 0.1`` -> ``bpp0.1``)
TARGET_PREFIX = "bpp"


@dataclass(frozen=True)
class RateControl:
    """A codec's tunable rate knob (the parameter its sweep varies), for ``--target-bpp``.

    ``low``/``high`` bound the parameter; ``more_bits_when_higher`` says which way the rate goes;
    ``log_scale`` bisects a continuous knob in log space (a knob spanning decades, like a ratio)."""

    param: str
    low: float
    high: float
    integer: bool = True
    more_bits_when_higher: bool = True
    log_scale: bool = False
    prefix: str = "q"

    def value(self, v: float) -> int | float:
        """``v`` clamped to the knob's range, as the knob takes it (integers; 4 significant digits)."""
        v = min(max(v, self.low), self.high)
        return int(round(v)) if self.integer else float(f"{v:.4g}")

    def point(self, v: float) -> RatePoint:
        v = self.value(v)
        return RatePoint(f"{self.prefix}{v:g}", {self.param: v})


def fixed_rate_refusal(codec: str) -> str:
    """The one line ``--target-bpp`` answers for a codec without a tunable rate."""
    return (f"--target-bpp: {codec} has fixed rate points (one model per point) and no quality knob to search; "
            "run it without --target-bpp, or use a codec with a tunable rate (jpeg, webp, avif, avif420, jxl, "
            "jpeg2000, bpg, bpg444)")


def target_label(bpp: float) -> str:
    return f"{TARGET_PREFIX}{bpp:g}"


def target_of(point: RatePoint) -> float | None:
    """The target bpp of a rate-matched point, None for an ordinary rate point (HiFiC's and MS-ILLM's
    points also carry a ``target_bpp``, their training target: only the ``bpp<target>`` label marks a match)."""
    value = point.params.get("target_bpp")
    if value is None or point.label != target_label(float(value)):
        return None
    return float(value)


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Encoded:
    """A container plus extra per-image numbers the codec knows (estimated bpp, BPG-equivalent bytes, ...)."""

    bitstream: bytes
    extras: dict[str, Any] = field(default_factory=dict)


class CodecUnavailable(RuntimeError):
    """The codec cannot run here (missing weights, binary, ...); the message says what to provide."""


def select_device(preference: str | None = None) -> torch.device:
    """``None``/"auto" picks CUDA when present, else CPU."""
    if preference in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


#: no codec here spends more than this per pixel (24 bits per colour sample, 8x raw RGB) plus a fixed
#: allowance for headers; a longer payload is not an image of the header's size
MAX_PAYLOAD_BYTES_PER_PIXEL = 24
PAYLOAD_ALLOWANCE = 1 << 20


def check_bounds(codec: str, rec: Container, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a container before decoding when its header asks for too many pixels, or its payload is
    implausibly long for the declared size (both would make a decoder allocate or work without bound)."""
    pixels = rec.height * rec.width
    if pixels > max_pixels:
        raise BitstreamError(f"{codec}: header declares {rec.width}x{rec.height} = {pixels / 1e6:.1f} MP, over the "
                             f"{max_pixels / 1e6:g} MP decoding limit (--max-pixels)")
    if len(rec.payload) > PAYLOAD_ALLOWANCE + MAX_PAYLOAD_BYTES_PER_PIXEL * pixels:
        raise BitstreamError(f"{codec}: {len(rec.payload)}-byte payload is too long for a "
                             f"{rec.width}x{rec.height} image")


class Codec(ABC):
    """Base class: subclasses set ``name`` and implement the payload methods.

    Images are 3xHxW float tensors in [0, 1]; a batch is a sequence of them (sizes may differ, the
    harness groups equal shapes so batched codecs can stack them).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: True when decoding benefits from a GPU (diffusion); the Ray executor asks for one then.
    wants_gpu: ClassVar[bool] = False
    #: ``--max-pixels``: a container whose header declares more pixels is refused before any decoding
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: the knob ``--target-bpp`` searches; None for codecs with fixed rate points (learned models)
    rate_control: ClassVar[RateControl | None] = None

    def __init__(self, device: str | None = None, **options: Any) -> None:
        self.device = select_device(device)
        self.options = options

    # --- what a subclass provides -------------------------------------------------------
    @abstractmethod
    def rate_points(self) -> list[RatePoint]:
        """Rate points ordered from low to high rate."""

    @abstractmethod
    def encode_payloads(
        self, images: Sequence[torch.Tensor], rate_point: RatePoint
    ) -> list[bytes | tuple[bytes, dict[str, Any]]]:
        """Encode a batch; each entry is the payload, optionally with an extras dict."""

    @abstractmethod
    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        """Decode validated containers (all of this codec) back to images of the recorded size."""

    @classmethod
    def availability(cls) -> Availability:
        """Whether this codec can run here; override to check weights or binaries."""
        return Availability(True)

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        """Identifies the model behind a rate point (sha256 of the weights); results are keyed by it."""
        return "none"

    def provenance(self) -> dict[str, Any]:
        """Extra facts recorded in the run's provenance (weights source, licences, binary versions)."""
        return {}

    def rate_table(self) -> list[RatePoint]:
        """Every rate point the codec declares, whether or not it can run here; ids index this table.

        Codecs whose points need files override it (and ``rate_point_problem``); ``rate_points()`` then
        lists only the points that can run."""
        return self.rate_points()

    def rate_point_problem(self, rate_point: RatePoint) -> str:
        """'' when ``rate_point`` can run here, else one line saying why not (which file goes where)."""
        return ""

    # --- the public interface --------------------------------------------------------------
    def rate_point(self, key: int | str | RatePoint) -> RatePoint:
        """A rate point by label or stable id (``rate_id``); a declared point that cannot run here raises
        ``CodecUnavailable`` with the reason, an unknown one ``KeyError``."""
        if isinstance(key, RatePoint):
            return key
        table = self.rate_table()
        if isinstance(key, int):
            found = [p for p in table if self.rate_id(p, table) == key]
            if not found:
                raise KeyError(f"{self.name}: unknown rate id {key}; known: "
                               f"{', '.join(f'{self.rate_id(p, table)} ({p.label})' for p in table)}")
            return self._runnable(found[0])
        for point in table:
            if point.label == key:
                return self._runnable(point)
        if self.rate_control is not None and key.startswith(TARGET_PREFIX):
            try:
                return self.target_point(float(key[len(TARGET_PREFIX):]))
            except ValueError:
                pass
        raise KeyError(f"{self.name}: unknown rate point {key!r}; known: {[p.label for p in table]}")

    def _runnable(self, point: RatePoint) -> RatePoint:
        problem = self.rate_point_problem(point)
        if problem:
            raise CodecUnavailable(problem)
        return point

    def target_point(self, bpp: float) -> RatePoint:
        """The rate-matched point ``bpp<target>``: per image, the knob value whose bitstream is nearest ``bpp``."""
        if self.rate_control is None:
            raise ValueError(fixed_rate_refusal(self.name))
        if not (bpp > 0 and bpp == bpp and bpp != float("inf")):
            raise ValueError(f"--target-bpp: targets must be positive numbers of bits per pixel, got {bpp!r}")
        return RatePoint(target_label(bpp), {"target_bpp": float(bpp)})

    def rate_id(self, rate_point: RatePoint, table: list[RatePoint] | None = None) -> int:
        """The stable id a stream of this rate point carries: the point's declared ``id``, else its position
        in ``rate_table()``; -1 for a rate-matched point (its streams carry the id of the sweep point
        nearest the setting found, see ``rdp_bench.bench.ratematch``)."""
        if target_of(rate_point) is not None:
            return -1
        if rate_point.id is not None:
            return rate_point.id
        return [p.label for p in (self.rate_table() if table is None else table)].index(rate_point.label)

    def encode_detailed(self, images: Sequence[torch.Tensor], rate: int | str | RatePoint) -> list[Encoded]:
        point = self.rate_point(rate)
        for img in images:
            if img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"{self.name}: expected 3xHxW RGB tensors, got shape {tuple(img.shape)}")
        if target_of(point) is not None:
            from rdp_bench.bench.ratematch import encode_at_target

            return [encode_at_target(self, img, target_of(point)) for img in images]
        rid = self.rate_id(point)
        outputs = self.encode_payloads(images, point)
        if len(outputs) != len(images):
            raise RuntimeError(f"{self.name}: encoded {len(outputs)} payloads for {len(images)} images")
        encoded = []
        for img, out in zip(images, outputs):
            payload, extras = out if isinstance(out, tuple) else (out, {})
            _, h, w = img.shape
            encoded.append(Encoded(Container(self.name, rid, h, w, bytes(payload)).pack(), dict(extras)))
        return encoded

    def encode(self, images: Sequence[torch.Tensor], rate: int | str | RatePoint) -> list[bytes]:
        return [e.bitstream for e in self.encode_detailed(images, rate)]

    def decode(self, bitstreams: Sequence[bytes]) -> list[torch.Tensor]:
        records = [Container.unpack(b, expected_codec=self.name) for b in bitstreams]
        ids = {self.rate_id(p): p for p in self.rate_table()}
        for rec in records:
            if rec.rate_id not in ids:
                raise BitstreamError(f"{self.name}: rate point id {rec.rate_id} does not exist "
                                     f"(known: {', '.join(map(str, sorted(ids)))})")
            self._runnable(ids[rec.rate_id])  # a missing model is CodecUnavailable, not a bad stream
            check_bounds(self.name, rec, self.max_pixels)
        try:
            images = self.decode_payloads(records)
        except (BitstreamError, CodecUnavailable, MemoryError, FileNotFoundError, torch.cuda.OutOfMemoryError):
            raise  # bad bytes, or the machine (missing weights, memory, files): keep the real cause
        except Exception as exc:  # a payload that passed the CRC but the codec cannot parse
            raise BitstreamError(f"{self.name}: payload could not be decoded: {exc}") from exc
        for rec, img in zip(records, images):
            if tuple(img.shape) != (3, rec.height, rec.width):
                raise BitstreamError(
                    f"{self.name}: decoded shape {tuple(img.shape)} differs from header {rec.height}x{rec.width}"
                )
        return images
