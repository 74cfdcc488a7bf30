"""CorrDiff's networks on the bundled hyperprior: the privileged decoder D and the score network.

* **Compressor and D.** The bundled variable-rate hyperprior (``GainedMeanScaleHyperprior``) codes ŷ,
  and its own synthesis ``g_s(ŷ · inv_gain)`` is the privileged end-to-end decoder D. CorrDiff's
  corrected output mixes the diffusion estimate with D(ŷ) at the MSE optimum, so D bounds its PSNR:
  the MSE-trained hyperprior is the best D the budget can buy, and one network serves every rate.
* **Score network.** A small conditional UNet in CDC's x0-parameterisation, conditioned on D itself:
  D(ŷ) at full resolution and ``g_s``'s activations at 1/2, 1/4 and 1/8 (through 1×1 adapters).
  It predicts a *residual* on D(ŷ), ``x̂0 = D(ŷ) + UNet(x_t, t, context)``, with a zero-initialised
  last layer: an untrained network decodes exactly D(ŷ), and training only has to learn what MSE
  decoding leaves out (texture), which a few CPU-hours can afford. This is our choice where the
  paper is silent on the parameterisation; it keeps the paper's loop and the γ correction unchanged.

Images are in [-1, 1] here (the diffusion's scale); the hyperprior works in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rdp_bench.codecs.diffusion.schedule import NUM_TIMESTEPS, schedule_buffers

#: g_s module indices after which CompressAI's mbt2018-mean synthesis is at 1/8, 1/4 and 1/2 of the image
GS_TAPS = (1, 3, 5)


@dataclass(frozen=True)
class ScoreNetConfig:
    #: widths at 1/2, 1/4 and 1/8 of the image (the net works on 2×2 pixel blocks, see ``ScoreNet``)
    widths: tuple[int, ...] = (48, 96, 128)
    #: residual blocks per level on the way down (the way up has one per level)
    blocks: int = 1
    #: channels of g_s's activations (the hyperprior's N)
    decoder_channels: int = 64
    num_timesteps: int = NUM_TIMESTEPS
    #: CDC clamps the x̂0 loss weight (the SNR) at this value
    loss_weight_max: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScoreNetConfig":
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(int(v) for v in d["widths"])
        return cls(**d)


@dataclass
class DecoderOutput:
    """D(ŷ) in [-1, 1] (not clamped) and the score network's context, finest first."""

    x0_e: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)


def privileged_decoder(g_s: nn.Sequential, y_dec: torch.Tensor) -> DecoderOutput:
    """Run the hyperprior's synthesis on ŷ · inv_gain, keeping the activations the score net reads."""
    taps = {}
    h = y_dec
    for i, layer in enumerate(g_s):
        h = layer(h)
        if i in GS_TAPS:
            taps[i] = h
    return DecoderOutput(h * 2.0 - 1.0, [taps[i] for i in reversed(GS_TAPS)])


class _TimeEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim))

    def forward(self, time01: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=time01.device, dtype=torch.float32) * (-math.log(1000.0) / half))
        angles = time01.reshape(-1, 1).float() * 1000.0 * freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1))


class _ResBlock(nn.Module):
    """conv-SiLU-conv with a time-dependent scale and shift in between (no normalisation: cheaper on CPU)."""

    def __init__(self, cin: int, cout: int, time_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.film = nn.Linear(time_dim, cout * 2)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(t)[:, :, None, None].chunk(2, 1)
        h = F.silu(self.conv1(F.silu(x)))
        h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class ScoreNet(nn.Module):
    """``forward(x_t, time01, context) -> x̂0``: a small UNet predicting a residual on D(ŷ).

    x_t and D(ŷ) are stacked and folded into 2×2 pixel blocks (``PixelUnshuffle``), so the finest
    level runs at half resolution: 4× fewer positions than CDC's UNet for the same width, which is
    what lets it train on two CPU cores. ``g_s``'s activations join each level through 1×1 adapters.
    """

    def __init__(self, config: ScoreNetConfig = ScoreNetConfig()) -> None:
        super().__init__()
        self.config = config
        w = list(config.widths)
        time_dim = w[0]
        self.time = _TimeEmbedding(time_dim)
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(6 * 4, w[0], 3, padding=1))
        self.adapters = nn.ModuleList(nn.Conv2d(config.decoder_channels, c, 1) for c in w)
        self.down = nn.ModuleList()
        for c in w:
            self.down.append(nn.ModuleList(_ResBlock(c, c, time_dim) for _ in range(config.blocks)))
        self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(w[:-1], w[1:]))
        self.mid = _ResBlock(w[-1], w[-1], time_dim)
        self.up = nn.ModuleList(_ResBlock(w[i + 1] + w[i], w[i], time_dim) for i in reversed(range(len(w) - 1)))
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(w[0], 3 * 4, 3, padding=1), nn.PixelShuffle(2))
        nn.init.zeros_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)
        for name, buf in schedule_buffers(config.num_timesteps).items():
            self.register_buffer(name, buf, persistent=False)

    @property
    def pad_multiple(self) -> int:
        return 2 ** len(self.config.widths)

    def context(self, decoded: DecoderOutput) -> list[torch.Tensor]:
        """[D(ŷ) clamped to [-1, 1], adapted g_s features at 1/2, 1/4, 1/8]."""
        return [decoded.x0_e.clamp(-1.0, 1.0), *(a(f) for a, f in zip(self.adapters, decoded.features))]

    def forward(self, x_t: torch.Tensor, time01: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        x0_e, *features = context
        t = self.time(time01)
        h = self.stem(torch.cat([x_t, x0_e], dim=1))
        skips = []
        for i, blocks in enumerate(self.down):
            h = h + features[i]
            for block in blocks:
                h = block(h, t)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        h = self.mid(h, t)
        for block in self.up:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), t)
        return x0_e + self.head(h)

    def training_loss(self, x: torch.Tensor, decoded: DecoderOutput) -> tuple[torch.Tensor, dict[str, float]]:
        """CDC's x0 objective, E_t[min(SNR_t, 5) · ‖x − x̂0(x_t, t, context)‖²], for x in [-1, 1]."""
        b = x.shape[0]
        t = torch.randint(0, self.config.num_timesteps, (b,), device=x.device)
        noise = torch.randn_like(x)
        sa = self.train_sqrt_alphas_cumprod[t].view(b, 1, 1, 1)
        so = self.train_sqrt_one_minus_alphas_cumprod[t].view(b, 1, 1, 1)
        x0 = self(sa * x + so * noise, t.float().unsqueeze(-1) / self.config.num_timesteps, self.context(decoded))
        weight = self.train_snr[t].clamp(max=self.config.loss_weight_max)
        err = ((x0.float() - x).square().mean(dim=(1, 2, 3)) * weight).mean()
        return err, {"loss": err.item()}


__all__ = ["DecoderOutput", "GS_TAPS", "ScoreNet", "ScoreNetConfig", "privileged_decoder"]
