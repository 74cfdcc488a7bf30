"""Codec registry: one line per codec, imported lazily so a missing optional dependency only
disables that codec.  Add a codec by writing one module and one line in ``REGISTRY``."""

from __future__ import annotations

import importlib
from typing import Any

from rdp_bench.codecs.base import Availability, Codec, CodecUnavailable, Encoded, RatePoint, select_device

REGISTRY: dict[str, str] = {
    "jpeg": "rdp_bench.codecs.jpeg:JPEG",
    "hyperprior": "rdp_bench.codecs.hyperprior:Hyperprior",
    "hific": "rdp_bench.codecs.hific:HiFiC",
    "msillm": "rdp_bench.codecs.msillm:MSILLM",
    "bpg": "rdp_bench.codecs.bpg:BPG",
    "bpg444": "rdp_bench.codecs.bpg:BPG444",
    "webp": "rdp_bench.codecs.webp:WebP",
    "avif": "rdp_bench.codecs.avif:AVIF",
    "avif420": "rdp_bench.codecs.avif:AVIF420",
    "jxl": "rdp_bench.codecs.jxl:JXL",
    "jpeg2000": "rdp_bench.codecs.jpeg2000:JPEG2000",
    "cdc": "rdp_bench.codecs.cdc:CDC",
    "cdc-official": "rdp_bench.codecs.cdc:CDCOfficial",
    "cdc-official-lpips": "rdp_bench.codecs.cdc:CDCOfficialLPIPS",
    "corrdiff": "rdp_bench.codecs.corrdiff:CorrDiff",
    "corrdiff-diffusion-only": "rdp_bench.codecs.corrdiff:CorrDiffDiffusionOnly",
    "corrdiff-e2e": "rdp_bench.codecs.corrdiff:CorrDiffE2E",
}


def codec_class(name: str) -> type[Codec]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def codec_availability(name: str) -> Availability:
    try:
        return codec_class(name).availability()
    except ImportError as exc:
        return Availability(False, f"missing dependency: {exc}")


def get_codec(name: str, **options: Any) -> Codec:
    """Instantiate a registered codec; raises CodecUnavailable with the reason when it cannot run."""
    cls = codec_class(name)
    # codecs whose availability depends on options (e.g. checkpoint=FILE) provide availability_for_options
    check = getattr(cls, "availability_for_options", None)
    status = check(options) if check is not None else cls.availability()
    if not status:
        raise CodecUnavailable(f"codec {name!r} is unavailable: {status.reason}")
    return cls(**options)


def list_codecs() -> list[str]:
    return list(REGISTRY)


__all__ = [
    "Availability", "Codec", "CodecUnavailable", "Encoded", "RatePoint", "REGISTRY",
    "codec_availability", "codec_class", "get_codec", "list_codecs", "select_device",
]
