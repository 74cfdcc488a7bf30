"""``CDCModel``: compressor + conditional UNet + schedule buffers, in the layout of CDC's
``GaussianDiffusion`` (so ``state_dict()`` keys are ``denoise_fn.*``, ``context_fn.*``, ``train_*``).

Official checkpoints are ``{"ema": <ema_pytorch.EMA state_dict>}`` files whose keys carry the
prefixes ``ema_model.`` / ``online_model.``; ``extract_ema_state_dict`` keeps the EMA model and drops
the LPIPS-VGG weights (``loss_fn_vgg.*``) that the ρ = 0.9 files also carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from rdp_bench.codecs.diffusion.compressor import CompressorConfig, ResnetCompressor
from rdp_bench.codecs.diffusion.schedule import NUM_TIMESTEPS, schedule_buffers
from rdp_bench.codecs.diffusion.unet import ConditionalUNet, UNetConfig

EMA_PREFIX = "ema_model."
SKIPPED_PREFIXES = ("loss_fn_vgg.", "ae_fn.")


@dataclass(frozen=True)
class CDCConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    compressor: CompressorConfig = field(default_factory=CompressorConfig)
    num_timesteps: int = NUM_TIMESTEPS
    #: CDC clamps the x̂0 loss weight (the SNR) at this value ("use_weight5")
    loss_weight_max: float = 5.0

    @classmethod
    def official(cls) -> "CDCConfig":
        return cls(UNetConfig.official(), CompressorConfig.official())

    @classmethod
    def tiny(cls) -> "CDCConfig":
        return cls(UNetConfig.tiny(), CompressorConfig.tiny())

    def to_dict(self) -> dict[str, Any]:
        return {"unet": self.unet.to_dict(), "compressor": self.compressor.to_dict(),
                "num_timesteps": self.num_timesteps, "loss_weight_max": self.loss_weight_max}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CDCConfig":
        return cls(UNetConfig.from_dict(d["unet"]), CompressorConfig.from_dict(d["compressor"]),
                   int(d.get("num_timesteps", NUM_TIMESTEPS)), float(d.get("loss_weight_max", 5.0)))

    @property
    def pad_multiple(self) -> int:
        return max(self.compressor.pad_multiple, self.unet.downsample_factor)


class CDCModel(nn.Module):
    def __init__(self, config: CDCConfig = CDCConfig()) -> None:
        super().__init__()
        self.config = config
        self.denoise_fn = ConditionalUNet(config.unet)
        self.context_fn = ResnetCompressor(config.compressor)
        for name, buf in schedule_buffers(config.num_timesteps).items():
            self.register_buffer(name, buf)

    @property
    def num_timesteps(self) -> int:
        return self.config.num_timesteps

    def denoise(self, x_t: torch.Tensor, time01: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        """x̂0 prediction (not clamped)."""
        return self.denoise_fn(x_t, time01, context)

    def training_loss(self, x: torch.Tensor, rate_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
        """CDC's objective for one batch of images in [-1, 1]:

        L = λ·bpp + E_t[min(SNR_t, 5) · ||x − x̂0(x_t, t, context)||²]   (+ the prior's median loss,
        which only moves the medians). Returns the loss and its parts for logging.
        """
        b = x.shape[0]
        # under a caller's bf16 autocast (GPU training) only the UNet runs in bf16: the compressor, its
        # likelihoods and the prior's median loss stay float32, where the likelihood tails keep their precision
        with torch.autocast(x.device.type, enabled=False):
            out = self.context_fn(x)
            extra = self.context_fn.extra_loss()
        t = torch.randint(0, self.num_timesteps, (b,), device=x.device)
        noise = torch.randn_like(x)
        sa = self.train_sqrt_alphas_cumprod[t].view(b, 1, 1, 1)
        so = self.train_sqrt_one_minus_alphas_cumprod[t].view(b, 1, 1, 1)
        x_t = sa * x + so * noise
        x0 = self.denoise_fn(x_t, t.float().unsqueeze(-1) / self.num_timesteps, out["context"])
        weight = self.train_snr[t].clamp(max=self.config.loss_weight_max)
        err = (F.mse_loss(x0.float(), x, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()
        bpp = out["bpp"].mean()
        loss = rate_weight * bpp + err + extra
        return loss, {"loss": loss.item(), "diffusion": err.item(), "bpp": bpp.item(), "median_loss": extra.item()}


def extract_ema_state_dict(raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights in an official file (or in an already plain state dict).

    Accepts ``{"ema": sd}`` or ``sd``; keeps ``ema_model.*`` (prefix removed) when present, drops
    ``online_model.*``, the EMA bookkeeping (``step``, ``initted``) and the LPIPS/AE weights.
    """
    sd = raw.get("ema", raw) if isinstance(raw, Mapping) else raw
    if not isinstance(sd, Mapping):
        raise ValueError("checkpoint is not a state dict")
    has_ema = any(k.startswith(EMA_PREFIX) for k in sd)
    out = {}
    for key, value in sd.items():
        if has_ema:
            if not key.startswith(EMA_PREFIX):
                continue
            key = key[len(EMA_PREFIX):]
        if key.startswith(SKIPPED_PREFIXES) or not isinstance(value, torch.Tensor):
            continue
        out[key] = value
    return out


def load_cdc_weights(model: CDCModel, raw: Mapping[str, Any]) -> CDCModel:
    """Load an official or rdp-bench state dict strictly (every key and shape must match)."""
    sd = extract_ema_state_dict(raw)
    own = model.state_dict()
    # rdp-bench files leave out the schedule buffers; they are recomputed from the config
    sd = {**{k: v for k, v in own.items() if k.startswith("train_") and k not in sd}, **sd}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shapes:
        raise ValueError(
            f"checkpoint does not fit this CDC config: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), shape mismatches {bad_shapes[:3]}"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    return model
