"""Building blocks shared by the UNet and the compressor.

Module and parameter names follow the CDC reference implementation so that its checkpoints load
unchanged (``block1.block.0.weight``, ``fn.norm.g``, ...).
"""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm(nn.Module):
    """Normalisation over the channel axis of an NCHW tensor (per pixel), with gain ``g`` and bias ``b``."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.g + self.b


class Block(nn.Module):
    """conv -> channel LayerNorm -> ReLU (7x7 conv for the first block of a network)."""

    def __init__(self, dim: int, dim_out: int, large: bool = False) -> None:
        super().__init__()
        k = 7 if large else 3
        self.block = nn.Sequential(nn.Conv2d(dim, dim_out, k, padding=k // 2), LayerNorm(dim_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    """Two ``Block``s with a residual path; the time embedding is added between them."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int | None = None, large: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(time_emb_dim, dim_out)) if time_emb_dim else None
        self.block1 = Block(dim, dim_out, large)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)
        if self.mlp is not None and time_emb is not None:
            h = h + self.mlp(time_emb)[:, :, None, None]
        return self.block2(h) + self.res_conv(x)


class LinearAttention(nn.Module):
    """Single-head linear attention: keys softmaxed over positions, cost linear in the pixel count."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.to_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.to_qkv(x).reshape(b, 3, c, h * w).unbind(1)
        k = k.softmax(dim=-1)
        context = torch.bmm(k, v.transpose(1, 2))  # b x c(k) x c(v)
        out = torch.bmm(context.transpose(1, 2), q * self.scale)
        return self.to_out(out.reshape(b, c, h, w))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class Downsample(nn.Module):
    def __init__(self, dim_in: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out or dim_in, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim_in: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(dim_in, dim_out or dim_in, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
