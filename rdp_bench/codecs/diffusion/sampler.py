"""DDIM sampling for an x̂0-predicting denoiser, kept apart from the network.

A decode loop reads like the paper::

    x = sampler.initial_noise(shape, seeds, gamma, device)
    for t, t_prev in sampler.timesteps:
        x0 = denoiser(x, t, context).clamp(-1, 1)
        x = sampler.step(x, x0, t, t_prev)

The timesteps are CDC's: ``steps`` training indices spaced evenly over [0, T-1] (``[T-1]`` for one
step), visited from the largest down; after the last one (t = 0) comes t_prev = -1, where ᾱ = 1, so
the final step returns x̂0 itself. With ``steps=1`` the whole decode is a single x̂0 prediction.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import torch

from rdp_bench.codecs.diffusion.schedule import alpha_bar


def stream_noise_seed(stream: bytes, decode_seed: int = 0) -> int:
    """The initial-noise seed of one image: CRC32 of the latent stream both ends hold.

    ``decode_seed`` (``rdp-bench run --seeds K``) draws another sample from the same stream; seed 0 is
    the stream's own noise, so single-seed results never change. Other seeds run the CRC on, over the
    seed's bytes, so every (stream, seed) pair gets its own generator."""
    seed = zlib.crc32(stream)
    if decode_seed:
        seed = zlib.crc32(int(decode_seed).to_bytes(8, "little", signed=False), seed)
    return seed & 0x7FFFFFFF


class DDIMSampler:
    def __init__(self, alphas_cumprod: torch.Tensor, steps: int, eta: float = 0.0) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float32)
        self.num_timesteps = int(self.alphas_cumprod.numel())
        self.steps = int(steps)
        self.eta = float(eta)
        if steps == 1:
            indices = [self.num_timesteps - 1]
        else:
            indices = torch.linspace(0, self.num_timesteps - 1, steps).long().tolist()
        self.indices: list[int] = indices
        prev = [-1, *indices[:-1]]
        #: (t, t_prev) pairs in decoding order
        self.timesteps: list[tuple[int, int]] = list(zip(reversed(indices), reversed(prev)))

    def time_input(self, t: int, batch: int, device: torch.device | str) -> torch.Tensor:
        """The denoiser's time input for CDC's ``embd_type="01"``: t / T, shape (batch, 1)."""
        return torch.full((batch, 1), t / self.num_timesteps, device=device)

    def step(self, x_t: torch.Tensor, x0_pred: torch.Tensor, t: int, t_prev: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t -> x_{t_prev} given the prediction of x0 (deterministic when eta = 0)."""
        a_t, a_prev = alpha_bar(self.alphas_cumprod, t), alpha_bar(self.alphas_cumprod, t_prev)
        eps = (x_t * math.sqrt(1.0 / a_t) - x0_pred) / math.sqrt(1.0 / a_t - 1.0)
        sigma = 0.0
        if self.eta > 0 and t_prev >= 0:
            sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        x = math.sqrt(a_prev) * x0_pred + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = x + sigma * noise
        return x

    @staticmethod
    def initial_noise(shape: Sequence[int], seed: int | Sequence[int], gamma: float = 0.8,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """gamma · N(0, I) from a seeded CPU generator, one generator per batch item.

        Seeding per item makes an image's noise independent of the batch it is decoded in.
        """
        batch = shape[0]
        seeds = [int(seed)] * batch if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
        items = [torch.randn(tuple(shape[1:]), generator=torch.Generator().manual_seed(s)) for s in seeds]
        return (torch.stack(items) * gamma).to(device=device, dtype=dtype)
