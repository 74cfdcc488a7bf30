"""Codec registry: one line per codec, imported lazily so a missing optional dependency only
disables that codec.  Add a codec by writing one module, one line in ``REGISTRY`` and its id in
``CODEC_IDS``."""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from rdp_bench.codecs.base import (
    Availability, Codec, CodecOptionError, CodecUnavailable, Encoded, Option, RatePoint, select_device,
)

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
    # CompressAI's pretrained zoo (baselines): one module per architecture, MSE and MS-SSIM models
    "bmshj2018-factorized": "rdp_bench.codecs.bmshj2018_factorized:BMSHJ2018Factorized",
    "bmshj2018-factorized-msssim": "rdp_bench.codecs.bmshj2018_factorized:BMSHJ2018FactorizedMSSSIM",
    "bmshj2018-hyperprior": "rdp_bench.codecs.bmshj2018_hyperprior:BMSHJ2018Hyperprior",
    "bmshj2018-hyperprior-msssim": "rdp_bench.codecs.bmshj2018_hyperprior:BMSHJ2018HyperpriorMSSSIM",
    "mbt2018-mean": "rdp_bench.codecs.mbt2018_mean:MBT2018Mean",
    "mbt2018-mean-msssim": "rdp_bench.codecs.mbt2018_mean:MBT2018MeanMSSSIM",
    "mbt2018": "rdp_bench.codecs.mbt2018:MBT2018",
    "mbt2018-msssim": "rdp_bench.codecs.mbt2018:MBT2018MSSSIM",
    "cheng2020-anchor": "rdp_bench.codecs.cheng2020_anchor:Cheng2020Anchor",
    "cheng2020-anchor-msssim": "rdp_bench.codecs.cheng2020_anchor:Cheng2020AnchorMSSSIM",
    "cheng2020-attn": "rdp_bench.codecs.cheng2020_attn:Cheng2020Attention",
    "cheng2020-attn-msssim": "rdp_bench.codecs.cheng2020_attn:Cheng2020AttentionMSSSIM",
}

#: the number a format-v2 bitstream's header carries for its codec (``rdp_bench.container``). Assigned once,
#: never changed and never reused: a new codec takes the next free number; a removed codec's id moves to
#: ``RETIRED_CODEC_IDS`` (so its old streams are named, not taken for another codec's). 0 is never assigned.
CODEC_IDS: dict[str, int] = {
    "jpeg": 1,
    "hyperprior": 2,
    "hific": 3,
    "msillm": 4,
    "bpg": 5,
    "bpg444": 6,
    "webp": 7,
    "avif": 8,
    "avif420": 9,
    "jxl": 10,
    "jpeg2000": 11,
    "cdc": 12,
    "cdc-official": 13,
    "cdc-official-lpips": 14,
    "corrdiff": 15,
    "corrdiff-diffusion-only": 16,
    "corrdiff-e2e": 17,
    "bmshj2018-factorized": 18,
    "bmshj2018-factorized-msssim": 19,
    "bmshj2018-hyperprior": 20,
    "bmshj2018-hyperprior-msssim": 21,
    "mbt2018-mean": 22,
    "mbt2018-mean-msssim": 23,
    "mbt2018": 24,
    "mbt2018-msssim": 25,
    "cheng2020-anchor": 26,
    "cheng2020-anchor-msssim": 27,
    "cheng2020-attn": 28,
    "cheng2020-attn-msssim": 29,
}
#: ids of codecs that were removed: reserved forever, id -> the codec's name
RETIRED_CODEC_IDS: dict[int, str] = {}


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


def get_codec(name: str, device: str | None = None, **options: Any) -> Codec:
    """Instantiate a registered codec. Its options are checked first (``CodecOptionError`` names the
    option and what it takes); ``CodecUnavailable`` with the reason when it cannot run here."""
    cls = codec_class(name)
    options = cls.validate_options(options)
    status = cls.availability_for_options(options)
    if not status:
        raise CodecUnavailable(f"codec {name!r} is unavailable: {status.reason}")
    return cls(device=device, **options)


def route_codec_options(codecs: list[str], options: Mapping[str, Any], amp: str | None = None) -> dict[str, dict[str, Any]]:
    """The options of a run, per codec: ``NAME=VALUE`` goes to every codec of the run that declares NAME,
    ``codec:NAME=VALUE`` to that codec only; ``amp`` to the codecs with ``supports_amp`` (others ignore it).

    An option no codec of the run takes, or a bad value, raises ``CodecOptionError`` before any work."""
    classes = {name: codec_class(name) for name in codecs}
    routed: dict[str, dict[str, Any]] = {name: {} for name in codecs}
    for key, value in options.items():
        target, _, option = key.rpartition(":")
        if target:
            if target not in classes:
                raise CodecOptionError(f"option {key!r} names codec {target!r}, which is not in this run "
                                       f"({', '.join(codecs)})")
            routed[target][option] = value
            continue
        takers = [n for n, cls in classes.items() if option in cls.declared_options()]
        if not takers:
            known = "; ".join(f"{n}: {', '.join(sorted(c.declared_options())) or 'none'}" for n, c in classes.items())
            raise CodecOptionError(f"no codec of this run takes option {option!r} (options: {known})")
        for name in takers:
            routed[name][option] = value
    if amp:
        for name, cls in classes.items():
            if cls.supports_amp:
                routed[name].setdefault("amp", amp)
    return {name: classes[name].validate_options(opts) for name, opts in routed.items()}


def options_for(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a flat options dict that codec ``name`` declares (provenance written before options
    were recorded per codec)."""
    declared = codec_class(name).declared_options()
    return {k: v for k, v in options.items() if k in declared}


def list_codecs() -> list[str]:
    return list(REGISTRY)


__all__ = [
    "Availability", "CODEC_IDS", "Codec", "CodecOptionError", "CodecUnavailable", "Encoded", "Option",
    "RETIRED_CODEC_IDS", "RatePoint", "REGISTRY",
    "codec_availability", "codec_class", "get_codec", "list_codecs", "options_for", "route_codec_options",
    "select_device",
]
