"""Deterministic real coding for any CompressAI-style hyperprior model.

A model plugs in through ``HyperpriorParts``: ``g_a`` (analysis), ``h_a``, ``h_s`` (giving the
scales, and the means for mean-scale models), ``g_s``, an ``entropy_bottleneck`` for ẑ and a
``gaussian_conditional`` for ŷ -- CompressAI's names. ``HyperpriorCoder`` then turns images into
``pack_strings([z string, y string])`` payloads and back:

* the hyper path (``h_a`` on the encoder side, ``h_s`` on both) runs on CPU in float32, one image
  at a time, so encoder and decoder pick identical CDF tables on any machine and batch size;
* ``g_a`` also runs per image on CPU float32, so the bitstream never depends on the batch or device;
* decoded latents are checked against the header's size and for range before synthesis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from rdp_bench.codecs.entropy import (FactorizedCoder, GaussianLatentCoder, bits_from_likelihoods, crop,
                                      pack_strings, pad_to_multiple, unpack_strings)
from rdp_bench.container import BitstreamError

#: decoded latents beyond this magnitude come only from corrupt strings
LATENT_LIMIT = 1e6
#: upper bound on the symbols one coded bit can carry: every CDF table has at least 4 entries (the
#: narrowest Gaussian, scale 0.11, spans 3 bins plus the escape symbol), so with 16-bit frequencies no
#: symbol costs less than -log2(1 - 3/65536) bits, i.e. one bit carries at most 15,141 of them
SYMBOLS_PER_BIT_MAX = 16384


class HyperpriorParts:
    """CompressAI's ``MeanScaleHyperprior`` wiring; override for other variants."""

    #: y and z are at 1/16 and 1/64 of the image
    pad_multiple = 64
    latent_stride = 16

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.g_a(x)

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        return self.model.h_a(y)

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (scales, means); ``means`` is None for zero-mean models."""
        scales, means = self.model.h_s(z_hat).chunk(2, 1)
        return scales, means

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.model.g_s(y_hat)


class ScaleHyperpriorParts(HyperpriorParts):
    """``bmshj2018-hyperprior``: h_a sees |y|, h_s gives scales only."""

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        return self.model.h_a(torch.abs(y))

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.h_s(z_hat), None


@dataclass
class Encoding:
    payloads: list[bytes]
    estimated_bits: torch.Tensor
    #: ŷ as the decoder will see it (CPU float32), for callers that decode right away
    y_hat: torch.Tensor


class HyperpriorCoder:
    """Real (z, y) strings for one model in eval mode; see the module docstring."""

    def __init__(self, parts: HyperpriorParts) -> None:
        self.parts = parts
        model = parts.model
        self.z_coder = FactorizedCoder.from_entropy_bottleneck(model.entropy_bottleneck)
        self.y_coder = GaussianLatentCoder.from_module(model.gaussian_conditional)
        self._cpu = _cpu_float_copy(model)
        self._cpu_parts = type(parts).__new__(type(parts))
        self._cpu_parts.__dict__.update(parts.__dict__, model=self._cpu)
        self._z_bottleneck = self._cpu.entropy_bottleneck
        self.latent_channels = _latent_channels(self._cpu)

    @torch.no_grad()
    def _params(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outs = [self._cpu_parts.hyper_synthesis(z) for z in z_hat.split(1)]
        scales = torch.cat([o[0] for o in outs])
        means = torch.cat([o[1] for o in outs]) if outs[0][1] is not None else None
        return scales, means

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> Encoding:
        """N x 3 x H x W in [0, 1] (one size) -> one payload per image."""
        padded, _ = pad_to_multiple(images.to("cpu", torch.float32), self.parts.pad_multiple)
        y = torch.cat([self._cpu_parts.analysis(x) for x in padded.split(1)])
        z = torch.cat([self._cpu_parts.hyper_analysis(v) for v in y.split(1)])
        z_strings = self.z_coder.compress(z)
        z_hat = self.z_coder.quantize(z)
        scales, means = self._params(z_hat)
        y_strings = self.y_coder.compress(y, scales, means)
        y_hat = torch.round(y - means) + means if means is not None else torch.round(y)
        bits = bits_from_likelihoods(self.y_coder.likelihood(y_hat, scales, means))
        _, z_lik = self._z_bottleneck(z_hat, training=False)
        bits = bits + bits_from_likelihoods(z_lik)
        return Encoding([pack_strings([zs, ys]) for zs, ys in zip(z_strings, y_strings)], bits, y_hat)

    @torch.no_grad()
    def decode_latents(self, payloads: Sequence[bytes], size: tuple[int, int]) -> torch.Tensor:
        """ŷ (CPU float32) of images of one size; corrupt or ill-fitting strings raise ``BitstreamError``."""
        m = self.parts.pad_multiple
        ph, pw = (-(-size[0] // m) * m, -(-size[1] // m) * m)
        parts = [unpack_strings(p, expected_count=2) for p in payloads]
        z_shape = (ph // m, pw // m)
        y_elements = self.latent_channels * (ph // self.parts.latent_stride) * (pw // self.parts.latent_stride)
        for z_str, y_str in parts:
            # Strings too short for the header's size are refused before any large tensor is built.
            if 8 * (len(z_str) + len(y_str)) * SYMBOLS_PER_BIT_MAX < y_elements:
                raise BitstreamError(f"payload of {len(z_str) + len(y_str)} bytes cannot describe a "
                                     f"{size[0]}x{size[1]} image")
        z_hat = self.z_coder.decompress([p[0] for p in parts], z_shape)
        scales, means = self._params(z_hat)
        y_hat = self.y_coder.decompress([p[1] for p in parts], scales, means)
        if not torch.isfinite(y_hat).all() or y_hat.abs().max() > LATENT_LIMIT:
            raise BitstreamError("decoded latents are out of range: the payload is corrupt")
        return y_hat

    @torch.no_grad()
    def synthesize(self, y_hat: torch.Tensor, size: tuple[int, int], device: torch.device | None = None) -> list[torch.Tensor]:
        """ŷ -> images cropped to ``size``, in [0, 1], one image at a time (batch-size invariant)."""
        parts = self._cpu_parts if device is None or device.type == "cpu" else self.parts
        dev = torch.device("cpu") if device is None else device
        out = [parts.synthesis(y.to(dev)).float().clamp(0, 1).cpu()[0] for y in y_hat.split(1)]
        return [crop(img, size) for img in out]


def _latent_channels(model: nn.Module) -> int:
    """M, from the Gaussian conditional's input: the last conv of g_a."""
    convs = [m for m in model.g_a.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


__all__ = ["Encoding", "HyperpriorCoder", "HyperpriorParts", "ScaleHyperpriorParts"]
