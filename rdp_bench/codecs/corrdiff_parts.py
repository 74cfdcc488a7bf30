"""CorrDiff building blocks: the privileged end-to-end decoder, the γ solvers, γ granularities and
quantizers, and the corrected DDIM sampling loop.

CorrDiff (Ma, Yang, Liu, ICML 2024) decodes with a conditional diffusion model, but at every DDIM step
the encoder -- which sees the original ``x`` -- mixes the diffusion estimate x̂0 with the image of a
privileged end-to-end decoder x0e = D(ŷ)::

    x̃0 = x̂0 + γ_t · (x0e − x̂0)

and writes the (quantized) γ_t it chose into the bitstream, so the decoder replays the same trajectory.
Everything here is independent of the networks that produce x̂0 and x0e: the loop takes any denoiser callable
and any sampler with the ``DDIMSampler`` interface of ``rdp_bench.codecs.diffusion`` (``timesteps``
pairs and ``step(x_t, x0, t, t_prev)``).

Conventions: images in the diffusion domain are in [-1, 1]; x̂0 and x0e are clamped to [-1, 1] before
mixing and x̃0 is clamped again after (so the DDIM update and the output stay in range). The mix is
computed with ``torch.lerp`` so that γ = 0 gives x̂0 and γ = 1 gives x0e *exactly*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rdp_bench.container import BitstreamError

#: Closed-form γ is clipped to this range before quantization: a nearly-zero ‖x0e − x̂0‖² can give a
#: huge ratio that only amplifies noise (and would overflow float16).
GAMMA_CLIP = 4.0
GRANULARITIES = ("scalar", "channel", "tile")
DEFAULT_TILE = 64


# ----------------------------------------------------------------------------------------------
# γ granularity: how many γ values per step and how they map onto pixels
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GammaLayout:
    """Where each γ of a step applies.

    ``scalar``: one γ per step (the paper's); ``channel``: one per RGB channel; ``tile``: one per
    ``tile``x``tile`` block of the *valid* image area (h x w); pixels of the padding beyond it use the
    nearest edge tile.
    """

    granularity: str = "scalar"
    tile: int = DEFAULT_TILE

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"gamma granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "tile" and not 8 <= self.tile <= 4096:
            raise ValueError(f"gamma tile size must be in 8..4096, got {self.tile}")

    def grid(self, h: int, w: int) -> tuple[int, int]:
        return (math.ceil(h / self.tile), math.ceil(w / self.tile))

    def count(self, h: int, w: int) -> int:
        """Number of γ values per step for a valid image area of h x w."""
        if self.granularity == "scalar":
            return 1
        if self.granularity == "channel":
            return 3
        gh, gw = self.grid(h, w)
        return gh * gw

    def group_sum(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Sum a B x 3 x H x W tensor over the valid area h x w within each γ group -> B x count."""
        t = t[..., :h, :w]
        b = t.shape[0]
        if self.granularity == "scalar":
            return t.reshape(b, -1).sum(1, keepdim=True)
        if self.granularity == "channel":
            return t.sum((2, 3))
        gh, gw = self.grid(h, w)
        t = F.pad(t.sum(1), (0, gw * self.tile - w, 0, gh * self.tile - h))
        return t.reshape(b, gh, self.tile, gw, self.tile).sum((2, 4)).reshape(b, gh * gw)

    def expand(self, gamma: torch.Tensor, height: int, width: int, h: int, w: int) -> torch.Tensor:
        """B x count γ -> a tensor broadcastable to B x 3 x height x width (height >= h, width >= w)."""
        b = gamma.shape[0]
        if self.granularity == "scalar":
            return gamma.reshape(b, 1, 1, 1)
        if self.granularity == "channel":
            return gamma.reshape(b, 3, 1, 1)
        gh, gw = self.grid(h, w)
        rows = torch.clamp(torch.arange(height, device=gamma.device) // self.tile, max=gh - 1)
        cols = torch.clamp(torch.arange(width, device=gamma.device) // self.tile, max=gw - 1)
        g = gamma.reshape(b, gh, gw)
        return g[:, rows][:, :, cols].unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# γ solvers
# ----------------------------------------------------------------------------------------------
def mix(x0_hat: torch.Tensor, x0_e: torch.Tensor, gamma_map: torch.Tensor) -> torch.Tensor:
    """x̃0 = x̂0 + γ (x0e − x̂0), exact at γ = 0 and γ = 1 (torch.lerp), clamped to [-1, 1]."""
    weight = gamma_map.to(x0_hat.dtype).expand_as(x0_hat)
    return torch.lerp(x0_hat, x0_e, weight).clamp(-1.0, 1.0)


def solve_gamma_mse(x: torch.Tensor, x0_hat: torch.Tensor, x0_e: torch.Tensor, layout: GammaLayout,
                    h: int | None = None, w: int | None = None) -> torch.Tensor:
    """Closed-form MSE-optimal γ per group: ⟨x − x̂0, x0e − x̂0⟩ / ‖x0e − x̂0‖² (before clamping x̃0).

    Returns B x count float32. A group whose ‖x0e − x̂0‖² is (numerically) zero gets γ = 0: both
    estimates agree there, so any γ gives the same x̃0 and 0 is the cheapest to reason about.
    Results are clipped to ±GAMMA_CLIP.
    """
    h = x.shape[-2] if h is None else h
    w = x.shape[-1] if w is None else w
    diff = (x0_e - x0_hat).float()
    num = layout.group_sum((x.float() - x0_hat.float()) * diff, h, w)
    den = layout.group_sum(diff * diff, h, w)
    safe = den > 1e-12 * max(1, h * w * 3)
    gamma = torch.where(safe, num / torch.where(safe, den, torch.ones_like(den)), torch.zeros_like(num))
    return gamma.clamp(-GAMMA_CLIP, GAMMA_CLIP)


def msssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − MS-SSIM on [0,1] images (SSIM when a side is under 161 px, where MS-SSIM is undefined).

    The documented fallback perceptual term: LPIPS needs AlexNet/VGG weights that are not available
    offline, and we never substitute a randomly initialised backbone.
    """
    from pytorch_msssim import ms_ssim, ssim

    if min(a.shape[-2:]) > 160:
        return 1.0 - ms_ssim(a, b, data_range=1.0)
    return 1.0 - ssim(a, b, data_range=1.0, win_size=min(11, (min(a.shape[-2:]) // 2) * 2 - 1))


def mse_plus_msssim(weight: float = 0.1) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Distortion ``MSE + weight · (1 − MS-SSIM)`` on images in [-1, 1] (MSE measured on [0, 1])."""

    def loss(x_tilde: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a, b = (x_tilde + 1) / 2, (x + 1) / 2
        return F.mse_loss(a, b) + weight * msssim_loss(a, b)

    return loss


def solve_gamma_gradient(x: torch.Tensor, x0_hat: torch.Tensor, x0_e: torch.Tensor, layout: GammaLayout,
                         loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int = 8,
                         lr: float = 0.05, h: int | None = None, w: int | None = None) -> torch.Tensor:
    """γ minimising ``loss_fn(x̃0, x)`` by a few Adam steps, started at the MSE closed form.

    Each image of the batch is optimised on its own loss; the best γ seen (including the start) is
    returned, so the result is never worse than the closed form on the objective.
    """
    h = x.shape[-2] if h is None else h
    w = x.shape[-1] if w is None else w
    x_c, hat_c, e_c = x[..., :h, :w].float(), x0_hat[..., :h, :w].float(), x0_e[..., :h, :w].float()
    start = solve_gamma_mse(x_c, hat_c, e_c, layout)
    best = start.clone()
    gamma = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([gamma], lr=lr)

    def per_image(g: torch.Tensor) -> torch.Tensor:
        mixed = mix(hat_c, e_c, layout.expand(g, h, w, h, w))
        return torch.stack([loss_fn(mixed[i : i + 1], x_c[i : i + 1]) for i in range(x_c.shape[0])])

    with torch.enable_grad():
        best_loss = per_image(best).detach()
        for _ in range(steps):
            opt.zero_grad()
            losses = per_image(gamma)
            losses.sum().backward()
            opt.step()
            with torch.no_grad():
                gamma.clamp_(-GAMMA_CLIP, GAMMA_CLIP)
                now = per_image(gamma)
                better = now < best_loss
                best = torch.where(better[:, None], gamma.detach(), best)
                best_loss = torch.where(better, now, best_loss)
    return best.detach()


# ----------------------------------------------------------------------------------------------
# γ quantizers: exact, serialisable representations
# ----------------------------------------------------------------------------------------------
class GammaQuantizer:
    """Maps float γ to integer codes and back; ``quantize`` = ``decode(encode(γ))`` exactly."""

    name: str = ""
    bits: int = 16

    def to_codes(self, gamma: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def from_codes(self, codes: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def quantize(self, gamma: torch.Tensor) -> torch.Tensor:
        return self.from_codes(self.to_codes(gamma)).reshape(gamma.shape).to(gamma.device)

    def to_bytes(self, gamma: torch.Tensor) -> bytes:
        return self.to_codes(gamma).astype(self._wire).tobytes()

    def from_bytes(self, data: bytes, count: int) -> torch.Tensor:
        """``count`` values from ``data`` (which must be exactly that long); non-finite -> BitstreamError."""
        need = count * self.bits // 8
        if len(data) != need:
            raise BitstreamError(f"gamma block has {len(data)} bytes, expected {need} for {count} {self.name} values")
        values = self.from_codes(np.frombuffer(data, dtype=self._wire))
        if not torch.isfinite(values).all():
            raise BitstreamError("gamma block holds a non-finite value")
        return values

    @property
    def _wire(self) -> str:
        return ">u2" if self.bits == 16 else "u1"


class Float16Gamma(GammaQuantizer):
    """IEEE half precision (the paper's choice: 16 bits per γ)."""

    name, bits = "float16", 16

    def to_codes(self, gamma: torch.Tensor) -> np.ndarray:
        return gamma.detach().float().clamp(-GAMMA_CLIP, GAMMA_CLIP).cpu().to(torch.float16).numpy().view(np.uint16).ravel()

    def from_codes(self, codes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(codes, dtype=np.uint16).view(np.float16).astype(np.float32))


class BFloat16Gamma(GammaQuantizer):
    """bfloat16: float32 with the low 16 mantissa bits dropped (round to nearest even, by torch)."""

    name, bits = "bfloat16", 16

    def to_codes(self, gamma: torch.Tensor) -> np.ndarray:
        b = gamma.detach().float().clamp(-GAMMA_CLIP, GAMMA_CLIP).cpu().to(torch.bfloat16)
        return b.view(torch.int16).numpy().view(np.uint16).ravel()

    def from_codes(self, codes: np.ndarray) -> torch.Tensor:
        hi = np.asarray(codes, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
        return torch.from_numpy(hi.view(np.float32).copy())


class Uniform8Gamma(GammaQuantizer):
    """8-bit uniform quantizer: γ = LOW + code · STEP with LOW = -0.5, STEP = 1/128, code 0..255,
    i.e. the grid [-0.5, 1.4921875]; values outside are clipped.

    The step is a power of two so that 0 (pure diffusion) and 1 (pure D(ŷ)) are exact grid points, and
    the range covers what the closed form gives in practice (γ mostly in [0, 1], with some overshoot
    when D(ŷ) and x̂0 err on the same side).
    """

    name, bits = "uint8", 8
    LOW, STEP = -0.5, 1.0 / 128.0

    def to_codes(self, gamma: torch.Tensor) -> np.ndarray:
        g = gamma.detach().float().cpu()
        codes = torch.round((g - self.LOW) / self.STEP).clamp(0, 255)
        return codes.to(torch.uint8).numpy().ravel()

    def from_codes(self, codes: np.ndarray) -> torch.Tensor:
        c = torch.from_numpy(np.asarray(codes, dtype=np.uint8).astype(np.float32))
        return c * np.float32(self.STEP) + np.float32(self.LOW)


QUANTIZERS: dict[str, type[GammaQuantizer]] = {q.name: q for q in (Float16Gamma, BFloat16Gamma, Uniform8Gamma)}
QUANTIZER_IDS = {"float16": 0, "bfloat16": 1, "uint8": 2}
GRANULARITY_IDS = {"scalar": 0, "channel": 1, "tile": 2}


def get_quantizer(name: str) -> GammaQuantizer:
    try:
        return QUANTIZERS[name]()
    except KeyError:
        raise ValueError(f"gamma precision must be one of {sorted(QUANTIZERS)}, got {name!r}") from None


# ----------------------------------------------------------------------------------------------
# The corrected sampling loop
# ----------------------------------------------------------------------------------------------
class SamplerLike(Protocol):
    timesteps: Sequence[tuple[int, int]]

    def step(self, x_t: torch.Tensor, x0_pred: torch.Tensor, t: int, t_prev: int) -> torch.Tensor: ...


Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class CorrectedResult:
    """The final x̃0 (B x 3 x H x W in [-1, 1]) and the quantized γ used at each step (B x N x count)."""

    image: torch.Tensor
    gammas: torch.Tensor


def corrected_sample(denoiser: Denoiser, x0_e: torch.Tensor, sampler: SamplerLike, noise: torch.Tensor, *,
                     target: torch.Tensor | None = None, gammas: torch.Tensor | None = None,
                     layout: GammaLayout = GammaLayout(), quantizer: GammaQuantizer | None = None,
                     solver: Callable[..., torch.Tensor] | None = None,
                     valid: tuple[int, int] | None = None) -> CorrectedResult:
    """Run the DDIM trajectory with the CorrDiff correction of x̂0 at every step.

    Exactly one of ``target`` (encoder: the original image in [-1, 1], γ_t is solved and quantized) and
    ``gammas`` (decoder: B x N x count quantized γ from the bitstream, replayed) is given. ``valid``
    (h, w) is the real image area inside a padded tensor; γ is solved and laid out on it only.
    ``solver(x, x0_hat, x0_e, layout, h=, w=)`` defaults to the MSE closed form.
    The result is the last step's x̃0 -- the image the decoder outputs.
    """
    if (target is None) == (gammas is None):
        raise ValueError("give exactly one of target (encoder) or gammas (decoder)")
    quantizer = quantizer or Float16Gamma()
    solver = solver or solve_gamma_mse
    height, width = noise.shape[-2:]
    h, w = valid or (height, width)
    steps = list(sampler.timesteps)
    if gammas is not None and gammas.shape[1] != len(steps):
        raise BitstreamError(f"bitstream has {gammas.shape[1]} gamma steps, the sampler runs {len(steps)}")
    x0_e = x0_e.clamp(-1.0, 1.0)
    x = noise
    used = []
    x_tilde = x0_e
    for i, (t, t_prev) in enumerate(steps):
        x0_hat = denoiser(x, t).clamp(-1.0, 1.0)
        if target is not None:
            gamma = quantizer.quantize(solver(target, x0_hat, x0_e, layout, h=h, w=w))
        else:
            gamma = gammas[:, i]
        gamma = gamma.to(device=x0_hat.device, dtype=torch.float32)
        used.append(gamma)
        x_tilde = mix(x0_hat, x0_e, layout.expand(gamma, height, width, h, w))
        x = sampler.step(x, x_tilde, t, t_prev)
    return CorrectedResult(x_tilde, torch.stack(used, 1) if used else torch.zeros(noise.shape[0], 0, 1))
