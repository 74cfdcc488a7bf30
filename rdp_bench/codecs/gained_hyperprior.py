"""A variable-rate mean-scale hyperprior: CompressAI's ``mbt2018-mean`` plus gain units.

The layout is CompressAI's ``MeanScaleHyperprior`` (``g_a``, ``h_a``, ``h_s``, ``g_s``,
``entropy_bottleneck``, ``gaussian_conditional``: same module names and shapes), so the project's
hyperprior coder treats it like any zoo model. Two extra parameters, ``gain`` and ``inv_gain``
(one row of M channel gains per rate level), make one network serve every rate point: the encoder
codes ``g_a(x) * gain[l]`` and the decoder synthesises from ``ŷ * inv_gain[l]`` (Cui et al.,
"Asymmetric Gained Deep Image Compression With Continuous Rate Adaptation", CVPR 2021). All the
training budget then goes into one transform pair instead of being split over separately trained
rate points, which is what a few CPU-hours can afford.

Training uses noise for the rate terms and straight-through rounding for what the decoders see
(``round(y - μ) + μ``), so the synthesis learns on the values it will decode.
"""

from __future__ import annotations

import bisect
import copy
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import torch
from compressai.models import MeanScaleHyperprior
from torch import nn

from rdp_bench.codecs.checkpoints import with_architecture_constants
from rdp_bench.codecs.hyperprior_coder import HyperpriorParts

#: CompressAI's λ for MSE models (loss = λ·255²·MSE + bpp), lowest rate first; 0.0009 extends it down.
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0009, 0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483)


@dataclass(frozen=True)
class GainedHyperpriorConfig:
    N: int = 64
    M: int = 128
    lambdas: tuple[float, ...] = field(default=DEFAULT_LAMBDAS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GainedHyperpriorConfig":
        d = dict(d)
        if "lambdas" in d:
            d["lambdas"] = tuple(float(v) for v in d["lambdas"])
        return cls(**d)

    @property
    def levels(self) -> int:
        return len(self.lambdas)


class GainedMeanScaleHyperprior(MeanScaleHyperprior):
    """``mbt2018-mean`` with one gain vector per rate level (see the module docstring)."""

    #: image side multiple the transforms need (y at 1/16, z at 1/64)
    pad_multiple = 64

    def __init__(self, config: GainedHyperpriorConfig = GainedHyperpriorConfig()) -> None:
        super().__init__(N=config.N, M=config.M)
        self.config = config
        # Geometric start: higher levels spread y over more quantisation bins (more bits).
        init = torch.logspace(-1.0, 1.0, config.levels, base=2.0)[:, None].repeat(1, config.M)
        self.gain = nn.Parameter(init.clone())
        self.inv_gain = nn.Parameter(1.0 / init)

    def load_state_dict(self, state_dict, strict: bool = True):  # type: ignore[override]
        """Load weights, keeping this module's own architecture constants (fp16 files flush them to 0)."""
        return super().load_state_dict(with_architecture_constants(self, state_dict), strict=strict)

    def _gains(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gain.abs()[level][:, :, None, None]
        inv = self.inv_gain.abs()[level][:, :, None, None]
        return g, inv

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        """x in [0, 1], ``level`` (B,) rate-level indices -> x̂, likelihoods and the gained latents."""
        gain, inv_gain = self._gains(level)
        y = self.g_a(x) * gain
        z = self.h_a(y).float()
        # Under bf16 autocast (GPU training) the transforms run in bf16; the entropy models and the
        # rounding stay in float32, where the likelihood tails keep their precision.
        with torch.autocast(x.device.type, enabled=False):
            y = y.float()
            _, z_likelihoods = self.entropy_bottleneck(z)
            z_offset = self.entropy_bottleneck._get_medians()
            z_hat = z + (torch.round(z - z_offset) + z_offset - z).detach()
        scales, means = self.h_s(z_hat).float().chunk(2, 1)
        with torch.autocast(x.device.type, enabled=False):
            _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
            y_hat = y + (torch.round(y - means) + means - y).detach()
            y_dec = y_hat * inv_gain
        return {"x_hat": self.g_s(y_dec).float(), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
                "y_dec": y_dec}

    def lambdas_for(self, level: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.config.lambdas, dtype=torch.float32, device=level.device)[level]


def with_levels(model: GainedMeanScaleHyperprior, new_lambdas: Sequence[float]) -> GainedMeanScaleHyperprior:
    """A copy of ``model`` with rate levels added at ``new_lambdas``: the levels stay in ascending λ (= rate), every
    weight of the existing levels is copied unchanged, and a new level's gain and inv_gain rows start log-linear in
    log λ through the two nearest existing levels (interpolated between them, extrapolated beyond the ends)."""
    old = model.config.lambdas
    added = sorted({float(v) for v in new_lambdas})
    if not all(0 < v < math.inf for v in added):
        raise ValueError(f"rate levels need a positive λ, got {added}")
    present = [v for v in added if v in old]
    if present:
        raise ValueError(f"λ {', '.join(map(str, present))} is already a rate level (the model has {list(old)})")
    if len(old) < 2:
        raise ValueError("placing a new level needs two existing ones to interpolate from")
    lambdas = tuple(sorted((*old, *added)))
    grown = copy.deepcopy(model)
    grown.config = replace(model.config, lambdas=lambdas)
    grown.gain = nn.Parameter(_rows_at(model.gain.detach(), old, lambdas))
    grown.inv_gain = nn.Parameter(_rows_at(model.inv_gain.detach(), old, lambdas))
    return grown


def _rows_at(rows: torch.Tensor, old: tuple[float, ...], lambdas: tuple[float, ...]) -> torch.Tensor:
    """``rows`` (one per λ of ``old``) at ``lambdas``: the old ones copied, new ones log-linear in log λ."""
    log_rows = rows.abs().double().log()
    out = []
    for lam in lambdas:
        if lam in old:
            out.append(rows[old.index(lam)].clone())
            continue
        hi = min(max(bisect.bisect(old, lam), 1), len(old) - 1)
        t = (math.log(lam) - math.log(old[hi - 1])) / (math.log(old[hi]) - math.log(old[hi - 1]))
        out.append(torch.lerp(log_rows[hi - 1], log_rows[hi], t).exp().to(rows.dtype))
    return torch.stack(out)


class GainedParts(HyperpriorParts):
    """The coder's view of one rate level: gains applied after g_a and before g_s."""

    def __init__(self, model: GainedMeanScaleHyperprior, level: int) -> None:
        super().__init__(model)
        if not 0 <= level < model.config.levels:
            raise ValueError(f"rate level {level} out of range 0..{model.config.levels - 1}")
        self.level = level

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.g_a(x) * self.model.gain.abs()[self.level][None, :, None, None]

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.model.g_s(y_hat * self.model.inv_gain.abs()[self.level][None, :, None, None])
