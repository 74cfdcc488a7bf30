"""Deterministic real coding for any CompressAI-style hyperprior model.

A model plugs in through ``HyperpriorParts``: ``g_a`` (analysis), ``h_a``, ``h_s`` (giving the
scales, and the means for mean-scale models), ``g_s``, an ``entropy_bottleneck`` for ẑ and a
``gaussian_conditional`` for ŷ -- CompressAI's names. ``HyperpriorCoder`` then turns images into
``pack_strings([z string, y string])`` payloads and back. Two variants extend it:

* ``FactorizedParts`` (``bmshj2018-factorized``): no hyperprior; ŷ itself is coded under the entropy
  bottleneck, payload ``pack_strings([y string])``;
* ``ContextParts`` (``mbt2018``, ``cheng2020-*``): a causal 5x5 masked-convolution context model joins
  ``h_s``'s output through ``entropy_parameters``, so ŷ is coded serially, one latent position at a time
  in raster order, on both sides with the same per-position computation (CompressAI's
  ``JointAutoregressiveHierarchicalPriors`` stream layout: one y string, the symbols in that order).

* the hyper path (``h_a`` on the encoder side, ``h_s`` on both) runs on CPU in float32, one image
  at a time, so encoder and decoder pick identical CDF tables on any machine and batch size;
* ``g_a`` also runs per image on CPU float32, so the bitstream never depends on the batch or device;
* decoded latents are checked against the header's size and for range before synthesis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rdp_bench.codecs.batching import batched, image_shape, record_group
from rdp_bench.codecs.entropy import (FactorizedCoder, GaussianLatentCoder, bits_from_likelihoods, crop,
                                      pack_strings, pad_to_multiple, unpack_strings)
from rdp_bench.container import BitstreamError, Container

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
    #: False: no hyper-latent, ŷ is coded by the entropy bottleneck (``FactorizedParts``)
    hyperprior = True
    #: True: ŷ's Gaussian parameters also depend on already-coded ŷ (``ContextParts``), coded serially
    autoregressive = False

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


class FactorizedParts(HyperpriorParts):
    """``bmshj2018-factorized``: ŷ = round(y - median) + median under the per-channel entropy bottleneck."""

    hyperprior = False

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        raise TypeError("a factorized model has no hyper-analysis")

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise TypeError("a factorized model has no hyper-synthesis")


class ContextParts(HyperpriorParts):
    """``mbt2018`` / ``cheng2020``: h_a sees y, h_s gives the hyper half of the entropy parameters, and
    ``context_prediction`` (a type-A masked 5x5 convolution) the causal half."""

    autoregressive = True
    context_kernel = 5

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.h_s(z_hat), None  # not scales yet: ``context_parameters`` makes them

    def context_parameters(self, hyper: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scales, means) of one latent position from its hyper parameters (1 x 2M x 1 x 1) and the
        ``context_kernel``-square window of ŷ around it (zeros where nothing is decoded yet)."""
        conv = self.model.context_prediction
        cached = self.__dict__.get("_masked_weight")
        if cached is None or cached[0] is not conv.weight:  # masked once per weight tensor, not per position
            cached = self.__dict__["_masked_weight"] = (conv.weight, conv.weight * conv.mask)
        context = F.conv2d(window, cached[1], bias=conv.bias)
        scales, means = self.model.entropy_parameters(torch.cat((hyper, context), dim=1)).chunk(2, 1)
        return scales, means


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
        # the entropy bottleneck codes ẑ, or ŷ itself in a factorized model (then there is no y_coder)
        self.z_coder = FactorizedCoder.from_entropy_bottleneck(model.entropy_bottleneck)
        self.y_coder = GaussianLatentCoder.from_module(model.gaussian_conditional) if parts.hyperprior else None
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
        if not self.parts.hyperprior:
            y_hat = self.z_coder.quantize(y)
            _, y_lik = self._z_bottleneck(y_hat, training=False)
            return Encoding([pack_strings([s]) for s in self.z_coder.compress(y)], bits_from_likelihoods(y_lik), y_hat)
        z = torch.cat([self._cpu_parts.hyper_analysis(v) for v in y.split(1)])
        z_strings = self.z_coder.compress(z)
        z_hat = self.z_coder.quantize(z)
        scales, means = self._params(z_hat)
        if self.parts.autoregressive:
            coded = [self._serial(p, y=v) for p, v in zip(scales.split(1), y.split(1))]
            y_strings = [c[0] for c in coded]
            y_hat, scales, means = (torch.cat([c[k] for c in coded]) for k in (1, 2, 3))
        else:
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
        y_shape = (ph // self.parts.latent_stride, pw // self.parts.latent_stride)
        if not self.parts.hyperprior:  # the bottleneck's decoder checks the strings against the grid
            y_hat = self.z_coder.decompress([unpack_strings(p, expected_count=1)[0] for p in payloads], y_shape)
            return self._checked(y_hat)
        parts = [unpack_strings(p, expected_count=2) for p in payloads]
        z_shape = (ph // m, pw // m)
        y_elements = self.latent_channels * y_shape[0] * y_shape[1]
        for z_str, y_str in parts:
            # Strings too short for the header's size are refused before any large tensor is built.
            if 8 * (len(z_str) + len(y_str)) * SYMBOLS_PER_BIT_MAX < y_elements:
                raise BitstreamError(f"payload of {len(z_str) + len(y_str)} bytes cannot describe a "
                                     f"{size[0]}x{size[1]} image")
        z_hat = self.z_coder.decompress([p[0] for p in parts], z_shape)
        scales, means = self._params(z_hat)
        if self.parts.autoregressive:
            y_hat = torch.cat([self._serial(h, string=p[1])[1] for h, p in zip(scales.split(1), parts)])
        else:
            y_hat = self.y_coder.decompress([p[1] for p in parts], scales, means)
        return self._checked(y_hat)

    @staticmethod
    def _checked(y_hat: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(y_hat).all() or y_hat.abs().max() > LATENT_LIMIT:
            raise BitstreamError("decoded latents are out of range: the payload is corrupt")
        return y_hat

    @torch.no_grad()
    def _serial(self, hyper: torch.Tensor, y: torch.Tensor | None = None, string: bytes | None = None
                ) -> tuple[bytes | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's ŷ under the context model, position by position in raster order: encodes ``y``
        (-> its string) or decodes ``string``; also returns ŷ, scales and means (1 x M x h x w).

        Encoder and decoder run this same loop, so each position's parameters come from identical
        inputs (ŷ decoded so far, zeros elsewhere) by identical operations: they select the same tables."""
        k = self.parts.context_kernel
        pad = k // 2
        _, _, h, w = hyper.shape
        c = self.latent_channels
        y_hat = torch.zeros(1, c, h + 2 * pad, w + 2 * pad)
        scales, means = torch.zeros(1, c, h, w), torch.zeros(1, c, h, w)
        symbols: list[torch.Tensor] = []
        indexes: list[torch.Tensor] = []
        decode = None if string is None else self.y_coder.tables.stream_decoder(string, c * h * w)
        for i in range(h):
            for j in range(w):
                s, mu = self._cpu_parts.context_parameters(hyper[:, :, i:i + 1, j:j + 1], y_hat[:, :, i:i + k, j:j + k])
                idx = self.y_coder.indexes(s)
                if decode is None:
                    q = self.y_coder.symbols(y[:, :, i:i + 1, j:j + 1], mu)
                    symbols.append(q.reshape(-1))
                    indexes.append(idx.reshape(-1))
                else:
                    q = decode(idx)
                y_hat[:, :, i + pad:i + pad + 1, j + pad:j + pad + 1] = q.reshape(1, c, 1, 1).float() + mu
                scales[:, :, i, j], means[:, :, i, j] = s[:, :, 0, 0], mu[:, :, 0, 0]
        out = None if decode is not None else self.y_coder.tables.encode(torch.cat(symbols), torch.cat(indexes))
        return out, y_hat[:, :, pad:pad + h, pad:pad + w], scales, means

    @torch.no_grad()
    def synthesize(self, y_hat: torch.Tensor, size: tuple[int, int], device: torch.device | None = None) -> list[torch.Tensor]:
        """ŷ -> images cropped to ``size``, in [0, 1], one image at a time (batch-size invariant)."""
        parts = self._cpu_parts if device is None or device.type == "cpu" else self.parts
        dev = torch.device("cpu") if device is None else device
        out = [parts.synthesis(y.to(dev)).float().clamp(0, 1).cpu()[0] for y in y_hat.split(1)]
        return [crop(img, size) for img in out]


def encode_images(coder: "HyperpriorCoder", images: Sequence[torch.Tensor]) -> list[tuple[bytes, dict[str, Any]]]:
    """Payloads of images of any sizes (one ``encode`` per size), each with its ``bpp_estimated``."""
    def encode(shape: tuple[int, ...], idx: list[int]) -> list[tuple[bytes, dict[str, Any]]]:
        enc = coder.encode(torch.stack([images[i] for i in idx]))
        pixels = shape[1] * shape[2]
        return [(p, {"bpp_estimated": float(bits) / pixels}) for p, bits in zip(enc.payloads, enc.estimated_bits)]

    return batched(images, image_shape, encode)


def decode_records(coder_for: Callable[[int], "HyperpriorCoder"], records: Sequence[Container]) -> list[torch.Tensor]:
    """Images of containers (their payloads without the fingerprint), one batch per rate id and size;
    ``coder_for(rate_id)`` gives the coder. Synthesis runs on the coder's CPU copy, so a GPU run decodes
    the same pixels."""
    def decode(key: tuple[int, int, int], idx: list[int]) -> list[torch.Tensor]:
        rate_id, h, w = key
        coder = coder_for(rate_id)
        return coder.synthesize(coder.decode_latents([records[i].payload for i in idx], (h, w)), (h, w))

    return batched(records, record_group, decode)


def _latent_channels(model: nn.Module) -> int:
    """M, from the Gaussian conditional's input: the last conv of g_a."""
    convs = [m for m in model.g_a.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


__all__ = ["ContextParts", "Encoding", "FactorizedParts", "HyperpriorCoder", "HyperpriorParts", "ScaleHyperpriorParts",
           "decode_records", "encode_images"]
