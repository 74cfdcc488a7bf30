"""CDC's ``ResnetCompressor``: analysis/synthesis transforms with a mean-scale hyperprior.

* ``enc``: ResnetBlock + stride-2 conv per level -> latent y at 1/16 resolution.
* ``hyper_enc`` / ``hyper_dec``: hyper-latent z at 1/64 resolution; ``hyper_dec(ẑ)`` gives the mean and
  scale (clamped to >= 0.1) of a Gaussian for each element of y.
* ``dec``: ResnetBlock + transposed conv per level; its outputs, finest first, are the multi-scale
  context of the UNet.
* ``prior``: ``FlexiblePrior``, the learned factorized density of z (Ballé et al. 2018, appendix 6.1).

Quantisation is CDC's: ẑ = round(z - median) + median, ŷ = round(y - mean) + mean (uniform noise while
training). ``LatentCoder`` turns this into real range-coded strings with the shared entropy core; the
hyper path runs on CPU in float32, one image at a time, so encoder and decoder select identical CDF
tables whatever the device or batch size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rdp_bench.codecs.diffusion.layers import Downsample, ResnetBlock, Upsample

#: CDC lower-bounds the latent scales at 0.1
SCALE_MIN = 0.1
LIKELIHOOD_MIN = 1e-9


@dataclass(frozen=True)
class CompressorConfig:
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 3, 4)
    reverse_dim_mults: tuple[int, ...] = (4, 3, 2, 1)
    hyper_dims_mults: tuple[int, ...] = (4, 4, 4)
    channels: int = 3
    out_channels: int = 64

    @classmethod
    def official(cls) -> "CompressorConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "CompressorConfig":
        return cls(dim=12, hyper_dims_mults=(2, 2, 2), out_channels=12)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CompressorConfig":
        d = dict(d)
        for key in ("dim_mults", "reverse_dim_mults", "hyper_dims_mults"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @property
    def pad_multiple(self) -> int:
        """y is at 1/2^levels, z two more stride-2 convs below it."""
        return 2 ** (len(self.dim_mults) + len(self.hyper_dims_mults) - 1)

    @property
    def latent_factor(self) -> int:
        return 2 ** len(self.dim_mults)


# --- factorized prior ------------------------------------------------------------------------------

class PriorFunction(nn.Module):
    """One layer of the per-channel monotone MLP: x @ softplus(weight) + bias, for every channel in parallel."""

    def __init__(self, channels: int, in_features: int, out_features: int, init: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1, in_features, out_features), float(init)))
        self.bias = nn.Parameter(torch.empty(channels, 1, 1, 1, out_features).uniform_(-0.5, 0.5))

    def forward(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        return torch.matmul(x, F.softplus(w)) + b


class FlexiblePrior(nn.Module):
    """Learned per-channel CDF of the hyper-latent (the factorized prior of Ballé et al. 2018)."""

    def __init__(self, channels: int, dims: Sequence[int] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        dims = [1, *dims, 1]
        self.chain_len = len(dims) - 1
        scale = init_scale ** (1 / self.chain_len)
        self.affine = nn.ModuleList(
            PriorFunction(channels, dims[i], dims[i + 1], math.log(math.expm1(1 / scale / dims[i + 1])))
            for i in range(self.chain_len)
        )
        self.a = nn.ParameterList(
            nn.Parameter(torch.zeros(channels, 1, 1, 1, dims[i + 1])) for i in range(self.chain_len - 1)
        )
        self._medians = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @property
    def medians(self) -> torch.Tensor:
        return self._medians.detach()

    def logits_cdf(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """Logit of the CDF at ``x`` (NCHW), per channel."""
        h = x.transpose(0, 1).unsqueeze(-1)  # C, N, H, W, 1
        for i in range(self.chain_len - 1):
            h = self.affine[i](h, detach)
            a = self.a[i].detach() if detach else self.a[i]
            h = h + torch.tanh(a) * torch.tanh(h)
        return self.affine[-1](h, detach).squeeze(-1).transpose(0, 1)

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Probability of the unit bin around each value (computed on the side of the CDF that keeps precision)."""
        lower = self.logits_cdf(x - 0.5)
        upper = self.logits_cdf(x + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return p.clamp_min(LIKELIHOOD_MIN)

    def median_loss(self) -> torch.Tensor:
        """Pulls ``_medians`` to the median of the learned density (CDC's 'extra loss')."""
        return self.logits_cdf(self._medians, detach=True).abs().sum()

    def channel_cdf(self, values: torch.Tensor) -> torch.Tensor:
        """CDF for a ``channels x N`` tensor (the form ``FactorizedCoder.from_cdf_fn`` wants)."""
        x = values.to(self._medians.dtype).T[:, :, None, None]  # N, C, 1, 1
        return torch.sigmoid(self.logits_cdf(x)).reshape(values.shape[1], values.shape[0]).T


def gaussian_likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mass of N(mean, scale) on the unit bin around y (evaluated on the lower tail for precision)."""
    d = (y - mean).abs()
    upper = 0.5 * torch.erfc(-(0.5 - d) / (scale * math.sqrt(2.0)))
    lower = 0.5 * torch.erfc(-(-0.5 - d) / (scale * math.sqrt(2.0)))
    return (upper - lower).clamp_min(LIKELIHOOD_MIN)


# --- the compressor --------------------------------------------------------------------------------

class ResnetCompressor(nn.Module):
    def __init__(self, config: CompressorConfig = CompressorConfig()) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        dims = [config.channels, *(dim * m for m in config.dim_mults)]
        rdims = [*(dim * m for m in config.reverse_dim_mults), config.out_channels]
        if dims[-1] != rdims[0]:
            raise ValueError("dim_mults[-1] must equal reverse_dim_mults[0]")
        hdims = [dims[-1], *(dim * m for m in config.hyper_dims_mults)]
        rhdims = list(reversed([dims[-1] * 2, *(dim * m for m in config.hyper_dims_mults)]))
        self.latent_channels = dims[-1]
        self.hyper_channels = hdims[-1]

        self.enc = nn.ModuleList(
            nn.ModuleList([ResnetBlock(a, b, None, large=i == 0), Downsample(b)])
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))
        )
        pairs = list(zip(rdims[:-1], rdims[1:]))
        self.dec = nn.ModuleList()
        for i, (a, b) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.dec.append(nn.ModuleList([ResnetBlock(a, a if last else b), Upsample(a if last else b, b)]))
        hpairs = list(zip(hdims[:-1], hdims[1:]))
        self.hyper_enc = nn.ModuleList(
            nn.ModuleList([
                nn.Conv2d(a, b, 3, 1, 1) if i == 0 else nn.Conv2d(a, b, 5, 2, 2),
                nn.LeakyReLU(0.2) if i < len(hpairs) - 1 else nn.Identity(),
            ])
            for i, (a, b) in enumerate(hpairs)
        )
        rhpairs = list(zip(rhdims[:-1], rhdims[1:]))
        self.hyper_dec = nn.ModuleList(
            nn.ModuleList([
                nn.Conv2d(a, b, 3, 1, 1) if i == len(rhpairs) - 1 else nn.ConvTranspose2d(a, b, 5, 2, 2, 1),
                nn.LeakyReLU(0.2) if i < len(rhpairs) - 1 else nn.Identity(),
            ])
            for i, (a, b) in enumerate(rhpairs)
        )
        self.prior = FlexiblePrior(self.hyper_channels)

    # transforms ---------------------------------------------------------------------------------
    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> latent y."""
        for resnet, down in self.enc:
            x = down(resnet(x))
        return x

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        for conv, act in self.hyper_enc:
            y = act(conv(y))
        return y

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ẑ -> (mean, scale) of y."""
        for conv, act in self.hyper_dec:
            z_hat = act(conv(z_hat))
        mean, scale = z_hat.chunk(2, dim=1)
        return mean, scale.clamp(min=SCALE_MIN)

    def synthesis(self, y_hat: torch.Tensor) -> list[torch.Tensor]:
        """ŷ -> context features, finest resolution first (the UNet's order)."""
        out = []
        for resnet, up in self.dec:
            y_hat = up(resnet(y_hat))
            out.append(y_hat)
        return out[::-1]

    def quantize_z(self, z: torch.Tensor) -> torch.Tensor:
        med = self.prior.medians
        return torch.round(z - med) + med

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Training/evaluation pass: context features and the estimated bits per pixel of each image.

        In training mode the rate uses additive uniform noise and the context uses straight-through
        rounding (CDC's recipe); in eval mode everything is rounded as the real coder does.
        """
        b, _, h, w = x.shape
        y = self.analysis(x)
        z = self.hyper_analysis(y)
        z_hat = self.quantize_z(z)
        z_hat = z + (z_hat - z).detach()  # straight-through
        mean, scale = self.hyper_synthesis(z_hat)
        y_hat = torch.round(y - mean.detach()) + mean.detach()
        y_hat = y + (y_hat - y).detach()
        if self.training:
            z_rate = z + torch.empty_like(z).uniform_(-0.5, 0.5)
            y_rate = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            z_rate, y_rate = z_hat, y_hat
        bits = -torch.log2(self.prior.likelihood(z_rate)).sum(dim=(1, 2, 3))
        bits = bits - torch.log2(gaussian_likelihood(y_rate, mean, scale)).sum(dim=(1, 2, 3))
        return {"context": self.synthesis(y_hat), "bpp": bits / (h * w), "y_hat": y_hat, "z_hat": z_hat}

    def extra_loss(self) -> torch.Tensor:
        return self.prior.median_loss()


# --- real entropy coding ---------------------------------------------------------------------------

class LatentCoder:
    """Range coding of (ẑ, ŷ) for one compressor, with all table selection on CPU float32.

    Built once per model: the FlexiblePrior's CDF is tabulated (in float64, so the tails keep their
    precision) into per-channel tables; y uses a Gaussian scale table starting at CDC's minimum scale.
    """

    def __init__(self, compressor: ResnetCompressor) -> None:
        from rdp_bench.codecs.entropy import FactorizedCoder, GaussianLatentCoder, default_scale_table

        self.hyper_synthesis_cpu = _cpu_hyper_synthesis(compressor)
        prior64 = copy.deepcopy(compressor.prior).to("cpu", torch.float64).eval()
        self.z_coder = FactorizedCoder.from_cdf_fn(
            prior64.channel_cdf, compressor.hyper_channels, medians=prior64.medians.float().reshape(-1)
        )
        self.y_coder = GaussianLatentCoder(default_scale_table(SCALE_MIN, 256.0, 64))
        self.prior_cpu = copy.deepcopy(compressor.prior).to("cpu", torch.float32).eval()
        self.latent_channels = compressor.latent_channels
        self.hyper_channels = compressor.hyper_channels

    @torch.no_grad()
    def params_from_z(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, scale of y from ẑ, one image at a time on CPU float32 (identical at both ends)."""
        outs = [self.hyper_synthesis_cpu(z_hat[i : i + 1].to("cpu", torch.float32)) for i in range(z_hat.shape[0])]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    @torch.no_grad()
    def encode(self, y: torch.Tensor, z: torch.Tensor) -> tuple[list[bytes], list[bytes], torch.Tensor, torch.Tensor]:
        """-> (z strings, y strings, ŷ on CPU, estimated bits per image)."""
        y = y.to("cpu", torch.float32)
        z_hat = self.z_coder.quantize(z)
        mean, scale = self.params_from_z(z_hat)
        z_strings = self.z_coder.compress(z)
        y_strings = self.y_coder.compress(y, scale, mean)
        y_hat = torch.round(y - mean) + mean
        bits = -torch.log2(self.prior_cpu.likelihood(z_hat)).sum(dim=(1, 2, 3))
        bits = bits - torch.log2(gaussian_likelihood(y_hat, mean, scale)).sum(dim=(1, 2, 3))
        return z_strings, y_strings, y_hat, bits

    @torch.no_grad()
    def decode(self, z_strings: Sequence[bytes], y_strings: Sequence[bytes], z_shape: tuple[int, int]) -> torch.Tensor:
        """-> ŷ on CPU float32."""
        z_hat = self.z_coder.decompress(z_strings, z_shape)
        mean, scale = self.params_from_z(z_hat)
        return self.y_coder.decompress(y_strings, scale, mean)


class _HyperSynthesis(nn.Module):
    def __init__(self, compressor: ResnetCompressor) -> None:
        super().__init__()
        self.hyper_dec = copy.deepcopy(compressor.hyper_dec)

    def forward(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ResnetCompressor.hyper_synthesis(self, z_hat)  # same code path as the model's


def _cpu_hyper_synthesis(compressor: ResnetCompressor) -> nn.Module:
    return _HyperSynthesis(compressor).to("cpu", torch.float32).eval()
