"""The one interface every codec implements.

A subclass provides ``rate_points`` and two batch methods on payloads; the base class wraps each
payload in the rdp-bench container (format v2: the codec's registered id, the rate point's stable id,
image size, CRC; ``rdp_bench.container``) so that decoding needs nothing but the bytes.

A codec with learned weights (``weights_sha256`` not None) has its payload start with a fingerprint of
them, the first ``FINGERPRINT_BYTES`` bytes of their sha256, added and checked here: a stream decoded
against other weights is refused (``WeightsMismatch``) naming both fingerprints, instead of decoding to a
wrong image. The fingerprint is part of the payload, so ``bpp`` counts it (64 bits per image).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

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


#: bytes of the weights fingerprint at the head of a learned codec's payload (of the weights' sha256)
FINGERPRINT_BYTES = 8


class WeightsMismatch(BitstreamError):
    """A stream made with other weights than the decoder has (its fingerprint differs)."""


class CodecUnavailable(RuntimeError):
    """The codec cannot run here (missing weights, binary, ...); the message says what to provide."""


class CodecOptionError(ValueError):
    """An option a codec does not take, or a value it cannot use; the message names codec, option and what it takes."""


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a file or folder path"}


@dataclass(frozen=True)
class Option:
    """One codec option: its type, default, help and (optionally) the values or range it takes.

    Values arrive typed (Python callers) or as text (``--codec-option KEY=VALUE``); ``parse`` turns either
    into ``type`` or raises ``CodecOptionError`` saying what was given and what is expected."""

    type: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def expects(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        text = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.minimum is not None and self.maximum is not None:
            return f"{text} in {self.minimum:g}..{self.maximum:g}"
        if self.minimum is not None:
            return f"{text} >= {self.minimum:g}"
        return text

    def parse(self, codec: str, name: str, value: Any) -> Any:
        if value is None:  # "not given": the codec's own default applies
            return None
        bad = CodecOptionError(f"{codec}: option {name} got {value!r}; expected {self.expects()}")
        try:
            if self.type is bool:
                if isinstance(value, str):
                    if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise bad
                    value = value.strip().lower() in ("1", "true", "yes")
                elif not isinstance(value, bool):
                    raise bad
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise bad
                value = int(str(value).strip()) if isinstance(value, str) else int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise bad
                value = float(value)
                if value != value or value in (float("inf"), float("-inf")):
                    raise bad
            elif self.type is Path:
                if not isinstance(value, (str, Path)) or not str(value):
                    raise bad
                value = str(value)  # kept as text: options travel in tasks and provenance JSON
            else:
                value = self.type(value)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CodecOptionError):
                raise
            raise bad from None
        if self.choices is not None and value not in self.choices:
            raise bad
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise bad
        return value


#: ``amp``, the same for every codec that has a mixed-precision path (``supports_amp``)
AMP_OPTION = Option(str, None, "bf16 or fp16: mixed precision for the diffusion network on GPU (--amp)",
                    choices=("bf16", "fp16"))


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
    #: True when the codec has a mixed-precision path (``amp`` option, ``--amp``); others ignore ``--amp``
    supports_amp: ClassVar[bool] = False
    #: True when a stream decodes to a sample whose noise the decoder chooses (a diffusion decode with no
    #: side information about its noise); ``decode(..., seed=k)`` then draws sample k and ``--seeds K``
    #: decodes each stream K times. Other codecs decode one image per stream.
    seeded_decode: ClassVar[bool] = False
    #: the options the codec takes (``--codec-option NAME=VALUE``), by name; a subclass adds to its parents'
    #: (``declared_options`` merges them), and nothing else is accepted
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init__(self, device: str | None = None, **options: Any) -> None:
        self.device = select_device(device)
        # the options a subclass's signature did not take; an undeclared one is an error, not ignored
        self.options = self.validate_options(options)

    # --- options -----------------------------------------------------------------------------
    @classmethod
    def declared_options(cls) -> dict[str, Option]:
        merged: dict[str, Option] = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get("OPTIONS", {}))
        return merged

    @classmethod
    def validate_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` typed and checked against ``declared_options``; ``CodecOptionError`` (one line naming
        the codec, the option and what it takes) for an unknown option or a bad value."""
        declared = cls.declared_options()
        out = {}
        for key, value in options.items():
            if key not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise CodecOptionError(f"{cls.name} has no option {key!r}; its options: {known}")
            out[key] = declared[key].parse(cls.name, key, value)
        return out

    @classmethod
    def availability_for_options(cls, options: Mapping[str, Any]) -> Availability:
        """Whether the codec can run here with these (validated) options, e.g. ``checkpoint=FILE``."""
        return cls.availability()

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
        """Decode validated containers (all of this codec) back to images of the recorded size.

        A ``seeded_decode`` codec takes ``seed: int = 0`` as well (the sample to draw)."""

    @classmethod
    def availability(cls) -> Availability:
        """Whether this codec can run here; override to check weights or binaries."""
        return Availability(True)

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        """Identifies the model behind a rate point (sha256 of the weights); results are keyed by it."""
        return "none"

    def weights_sha256(self, rate_point: RatePoint) -> str | None:
        """sha256 (hex) of the weights that make and read ``rate_point``'s streams (for a codec whose decode
        needs several files, a sha256 over theirs); None for a codec without learned weights. Its first
        ``FINGERPRINT_BYTES`` head every payload of the point."""
        return None

    def weights_fingerprint(self, rate_point: RatePoint) -> bytes:
        """The payload's leading bytes that name the weights (b'' for a codec without weights)."""
        sha = self.weights_sha256(rate_point)
        if sha is None:
            return b""
        try:
            return bytes.fromhex(sha)[:FINGERPRINT_BYTES]
        except ValueError:  # "missing": no file to take a sum of
            raise CodecUnavailable(f"{self.name} {rate_point.label}: no weights to fingerprint ({sha})") from None

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
        """A rate point by label or stable id (``rate_id``; a negative number counts from the end of
        ``rate_points()``, as a list index); a declared point that cannot run here raises
        ``CodecUnavailable`` with the reason, an unknown one ``KeyError``."""
        if isinstance(key, RatePoint):
            return key
        table = self.rate_table()
        if isinstance(key, int) and key < 0:  # -1: the highest-rate point that can run here (never a stream's id)
            return self.rate_points()[key]
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
        fingerprint = self.weights_fingerprint(point)
        outputs = self.encode_payloads(images, point)
        if len(outputs) != len(images):
            raise RuntimeError(f"{self.name}: encoded {len(outputs)} payloads for {len(images)} images")
        encoded = []
        for img, out in zip(images, outputs):
            payload, extras = out if isinstance(out, tuple) else (out, {})
            _, h, w = img.shape
            container = Container(self.name, rid, h, w, fingerprint + bytes(payload))
            encoded.append(Encoded(container.pack(), dict(extras)))
        return encoded

    def encode(self, images: Sequence[torch.Tensor], rate: int | str | RatePoint) -> list[bytes]:
        return [e.bitstream for e in self.encode_detailed(images, rate)]

    def decode(self, bitstreams: Sequence[bytes], seed: int = 0) -> list[torch.Tensor]:
        """Images from containers; ``seed`` picks the sample of a ``seeded_decode`` codec (0: the stream's own)."""
        if seed and not self.seeded_decode:
            raise ValueError(f"{self.name} decodes one image per stream; only seeded decoders take seed={seed}")
        records = [Container.unpack(b, expected_codec=self.name) for b in bitstreams]
        ids = {self.rate_id(p): p for p in self.rate_table()}
        for rec in records:
            if rec.rate_id not in ids:
                raise BitstreamError(f"{self.name}: rate point id {rec.rate_id} does not exist "
                                     f"(known: {', '.join(map(str, sorted(ids)))})")
            self._runnable(ids[rec.rate_id])  # a missing model is CodecUnavailable, not a bad stream
            check_bounds(self.name, rec, self.max_pixels)
        records = [self._without_fingerprint(rec, ids[rec.rate_id]) for rec in records]
        try:
            images = self.decode_payloads(records, seed=seed) if self.seeded_decode else self.decode_payloads(records)
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

    def own_payload(self, bitstream: bytes) -> bytes:
        """The codec's own payload of a stream: the container checked, the weights fingerprint checked and removed."""
        rec = Container.unpack(bitstream, expected_codec=self.name)
        return self._without_fingerprint(rec, self.rate_point(rec.rate_id)).payload

    def _without_fingerprint(self, rec: Container, point: RatePoint) -> Container:
        """``rec`` with the weights fingerprint checked and taken off its payload."""
        expected = self.weights_fingerprint(point)
        if not expected:
            return rec
        found = rec.payload[: len(expected)]
        if len(found) < len(expected):
            raise BitstreamError(f"{self.name}: {len(rec.payload)}-byte payload is too short to hold the "
                                 f"{len(expected)}-byte weights fingerprint")
        if found != expected:
            raise WeightsMismatch(
                f"{self.name} {point.label}: the stream was made with weights {found.hex()}, this decoder has "
                f"{expected.hex()}; decode it with the checkpoint that made it, or encode again (a stream from an older rdp-bench, "
                "whose payloads had no fingerprint, needs encoding again too)")
        return dataclasses.replace(rec, payload=rec.payload[len(expected):])
