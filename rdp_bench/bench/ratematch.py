"""Rate matching (``rdp-bench run --target-bpp 0.1,0.2,0.4``): per image, the codec setting nearest a bpp.

For a codec with a tunable rate (``Codec.rate_control``: JPEG/WebP/AVIF quality, JPEG XL distance,
JPEG 2000 ratio, BPG q) the knob is bisected on the *real* bitstream of each trial encode: bpp is
``8 x len(payload) / (H x W)``, the codec's own bytes without the container's framing, as everywhere else. The search assumes the
rate grows monotonically with the knob (in its direction), brackets the target between two settings and
halves the bracket: an integer knob until the two settings are adjacent, a continuous one for
``CONTINUOUS_STEPS`` halvings or until a trial lands within ``CONTINUOUS_TOLERANCE`` of the target.
Every trial is kept, and the one whose bpp is nearest the target wins (ties: the smaller bitstream), so
a knob that is not quite monotone can only make the answer better than the bracket's ends. A target
outside what the knob can reach gives the nearest end (the row's ``bpp`` says how far it is).

The chosen setting is recorded in the row (``rate_params``, with ``target_bpp``; ``search_encodes`` is
the number of trial encodes), and the stream's container carries the index of the sweep rate point whose
setting is nearest (the decoders of these codecs do not depend on it). ``encoding_time`` is the whole
search, per image.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from rdp_bench.codecs.base import Codec, Encoded, RateControl
from rdp_bench.container import Container

#: halvings of a continuous knob's bracket (in log space for log-scale knobs: 1/2**16 of the range)
CONTINUOUS_STEPS = 16
#: a continuous search stops once a trial is this close to the target (relative)
CONTINUOUS_TOLERANCE = 0.002


def nearest_rate_id(codec: Codec, value: float) -> int:
    """Index of the sweep rate point whose knob setting is nearest ``value`` (log distance on log knobs)."""
    rc = codec.rate_control
    assert rc is not None
    settings = [float(p.params[rc.param]) for p in codec.rate_points()]
    scale = (lambda v: math.log(max(v, 1e-12))) if rc.log_scale else (lambda v: v)  # noqa: E731
    return min(range(len(settings)), key=lambda i: abs(scale(settings[i]) - scale(value)))


class _Trials:
    """Trial encodes of one image, one per knob setting."""

    def __init__(self, codec: Codec, image: torch.Tensor) -> None:
        self.codec, self.image = codec, image
        self.rc: RateControl = codec.rate_control  # type: ignore[assignment]
        self.results: dict[int | float, tuple[bytes, dict[str, Any], float]] = {}

    def bpp(self, value: float) -> float:
        v = self.rc.value(value)
        if v not in self.results:
            out = self.codec.encode_payloads([self.image], self.rc.point(v))[0]
            payload, extras = out if isinstance(out, tuple) else (out, {})
            _, h, w = self.image.shape
            container = Container(self.codec.name, nearest_rate_id(self.codec, v), h, w, bytes(payload)).pack()
            self.results[v] = (container, dict(extras), 8.0 * len(payload) / (h * w))
        return self.results[v][2]

    def nearest(self, target: float) -> int | float:
        return min(self.results, key=lambda v: (abs(self.results[v][2] - target), self.results[v][2]))


def _midpoint(rc: RateControl, a: float, b: float) -> float:
    if rc.integer:
        return (a + b) // 2 if a < b else (a + b + 1) // 2  # strictly between two non-adjacent integers
    if rc.log_scale:
        return math.sqrt(a * b)
    return (a + b) / 2


def search(codec: Codec, image: torch.Tensor, target: float) -> tuple[int | float, _Trials]:
    """The knob setting whose real bitstream of ``image`` is nearest ``target`` bpp, and every trial made."""
    rc = codec.rate_control
    if rc is None:
        codec.target_point(target)  # raises the one-line explanation
    trials = _Trials(codec, image)
    # few (a) and many (b) bits: the ends of the knob in the direction of rate. The ends are tried only
    # when the bracket closes on them (a knob's extreme, e.g. BPG q0, can be slow and is rarely needed)
    a, b = (rc.low, rc.high) if rc.more_bits_when_higher else (rc.high, rc.low)
    a, b = rc.value(a), rc.value(b)
    for _ in range(200 if rc.integer else CONTINUOUS_STEPS):
        if rc.integer and abs(a - b) <= 1:
            break
        mid = rc.value(_midpoint(rc, a, b))
        if mid in (a, b):
            break
        got = trials.bpp(mid)
        if got < target:
            a = mid
        else:
            b = mid
        if not rc.integer and abs(got - target) <= CONTINUOUS_TOLERANCE * target:
            break
    if rc.integer:
        trials.bpp(a), trials.bpp(b)  # the two adjacent settings around the target
    elif not trials.results:
        trials.bpp(a)
    return trials.nearest(target), trials


def encode_at_target(codec: Codec, image: torch.Tensor, target: float) -> Encoded:
    """The container of ``image`` at the setting nearest ``target`` bpp, with what the row records."""
    value, trials = search(codec, image, target)
    container, extras, _ = trials.results[value]
    rc = codec.rate_control
    params = {rc.param: value, "target_bpp": float(target)}
    return Encoded(container, {**extras, "rate_params": json.dumps(params, sort_keys=True),
                               "target_bpp": float(target), "search_encodes": len(trials.results)})
