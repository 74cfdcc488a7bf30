"""The conditional UNet denoiser of CDC (x-parameterisation: it predicts the clean image x0).

Layout (level ``i`` of ``dim_mults``): two ``ResnetBlock``s, a residual linear attention, then a
downsample (none at the last level); the compressor's context feature of level ``i`` is concatenated
to the input of the first block of each of the first ``len(context)`` levels. A middle part, then
``len(dim_mults) - 1`` up levels fed by skip connections. The time input is ``t / T`` in [0, 1]
(CDC's ``embd_type="01"``) through a 2-layer MLP.

``UNetConfig.official()`` is the configuration of the published CDC checkpoints; ``UNetConfig.tiny()``
is the small one trained for the bundled rdp-bench checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from rdp_bench.codecs.diffusion.layers import (
    Downsample, LayerNorm, LinearAttention, PreNorm, Residual, ResnetBlock, Upsample,
)


@dataclass(frozen=True)
class UNetConfig:
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    context_channels: int = 64
    context_dim_mults: tuple[int, ...] = (1, 2, 3, 4)
    channels: int = 3
    embd_type: str = "01"

    @classmethod
    def official(cls) -> "UNetConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "UNetConfig":
        return cls(dim=12, dim_mults=(1, 2, 3, 3, 4), context_channels=12, context_dim_mults=(1, 2, 3, 4))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        for key in ("dim_mults", "context_dim_mults"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @property
    def downsample_factor(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.dim_mults) - 1)


class ConditionalUNet(nn.Module):
    """``forward(x_t, time01, context) -> x0`` with ``time01`` of shape (B, 1) holding t/T."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        if config.embd_type != "01":
            raise ValueError(f"only CDC's embd_type='01' is implemented, got {config.embd_type!r}")
        self.config = config
        self.embd_type = config.embd_type
        dim = config.dim
        dims = [config.channels, *(dim * m for m in config.dim_mults)]
        context_dims = [config.context_channels, *(dim * m for m in config.context_dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        levels = len(in_out)
        # levels that receive a context feature: all but the last, and at most len(context_dims) - 1
        self.context_levels = min(levels - 1, len(context_dims) - 1)
        time_dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(1, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

        self.downs = nn.ModuleList()
        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind == levels - 1
            extra = context_dims[ind] if ind < self.context_levels else 0
            self.downs.append(nn.ModuleList([
                ResnetBlock(dim_in + extra, dim_out, time_dim, large=ind == 0),
                ResnetBlock(dim_out, dim_out, time_dim),
                Residual(PreNorm(dim_out, LinearAttention(dim_out))),
                Downsample(dim_out) if not is_last else nn.Identity(),
            ]))

        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, time_dim)
        self.mid_attn = Residual(PreNorm(mid, LinearAttention(mid)))
        self.mid_block2 = ResnetBlock(mid, mid, time_dim)

        self.ups = nn.ModuleList()
        for dim_in, dim_out in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                ResnetBlock(dim_out * 2, dim_in, time_dim),
                ResnetBlock(dim_in, dim_in, time_dim),
                Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                Upsample(dim_in),
            ]))
        self.final_conv = nn.Sequential(LayerNorm(dim), nn.Conv2d(dim, config.channels, 7, padding=3))

    def forward(self, x: torch.Tensor, time01: torch.Tensor, context: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(context) < self.context_levels:
            raise ValueError(f"UNet expects {self.context_levels} context features, got {len(context)}")
        t = self.time_mlp(time01.reshape(-1, 1).to(x.dtype))
        skips = []
        for idx, (block1, block2, attn, down) in enumerate(self.downs):
            if idx < self.context_levels:
                x = torch.cat([x, context[idx]], dim=1)
            x = block1(x, t)
            x = block2(x, t)
            x = attn(x)
            skips.append(x)
            x = down(x)
        x = self.mid_block1(x, t)
        x = self.mid_attn(x)
        x = self.mid_block2(x, t)
        for block1, block2, attn, up in self.ups:
            x = torch.cat([x, skips.pop()], dim=1)
            x = block1(x, t)
            x = block2(x, t)
            x = attn(x)
            x = up(x)
        return self.final_conv(x)
