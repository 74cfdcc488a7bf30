"""Noise schedule of CDC: the cosine schedule (Nichol & Dhariwal 2021) over 8193 training steps."""

from __future__ import annotations

import numpy as np
import torch

#: number of training timesteps of the published CDC models
NUM_TIMESTEPS = 8193


def cosine_betas(num_timesteps: int = NUM_TIMESTEPS, s: float = 0.008) -> np.ndarray:
    """β_t from ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), clipped to [0, 0.999], in float64."""
    n = num_timesteps + 1
    t = np.linspace(0, n, n)
    f = np.cos(((t / n) + s) / (1 + s) * np.pi * 0.5) ** 2
    f = f / f[0]
    return np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)


def cosine_alphas_cumprod(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 (float32, as the models store it)."""
    return torch.tensor(np.cumprod(1.0 - cosine_betas(num_timesteps)), dtype=torch.float32)


def schedule_buffers(num_timesteps: int = NUM_TIMESTEPS) -> dict[str, torch.Tensor]:
    """The buffers CDC's ``GaussianDiffusion`` registers (and its checkpoints carry), by name."""
    betas = cosine_betas(num_timesteps)
    ac = np.cumprod(1.0 - betas)
    as32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return {
        "train_snr": as32(ac / (1 - ac)),
        "train_betas": as32(betas),
        "train_alphas_cumprod": as32(ac),
        "train_sqrt_alphas_cumprod": as32(np.sqrt(ac)),
        "train_sqrt_one_minus_alphas_cumprod": as32(np.sqrt(1.0 - ac)),
        "train_sqrt_recip_alphas_cumprod": as32(np.sqrt(1.0 / ac)),
        "train_sqrt_recipm1_alphas_cumprod": as32(np.sqrt(1.0 / ac - 1)),
    }


def alpha_bar(alphas_cumprod: torch.Tensor, t: int) -> float:
    """ᾱ_t as a Python float; t = -1 means 'before the first step' (ᾱ = 1, the clean image)."""
    return 1.0 if t < 0 else float(alphas_cumprod[t])
