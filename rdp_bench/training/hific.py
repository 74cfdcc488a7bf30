"""HiFiC training recipe (Mentzer et al. 2020), sized for the bundled tiny checkpoints.

Phases, for every target rate r_t:

1. ``base``   (shared by all targets): MSE + rate pretraining,  λ_base·bpp + k_M·MSE.
2. ``rate``   fine-tune to the target: λ'·bpp + k_M·MSE + k_P·perceptual, with HiFiC's rate targeting
              λ' = λ_a if the batch's estimated bpp > r_t else λ_b.
3. ``gan``    adds β·GAN with a discriminator conditioned on the (upsampled) quantized latent ŷ,
              non-saturating loss, alternating generator / discriminator steps.

MSE is on the 0..255 scale (k_M = 0.075·2^-5 as in HiFiC). The perceptual term is LPIPS when its
backbone weights are available locally, otherwise ``1 - MS-SSIM`` (3 scales, 7 px window, so crops above 96 px fit);
the manifest records which. Phases are limited by CPU-minutes of this process (and optionally
steps); an optional wall-clock deadline shrinks them proportionally on a busy machine. The manifests
record steps, CPU time and wall time of every phase.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdp_bench.codecs.checkpoints import save_checkpoint
from rdp_bench.codecs.hific_arch import HiFiCAutoencoder, HiFiCConfig, parameter_count

K_M = 0.075 * 2**-5
K_P = 1.0
BETA = 0.15
#: HiFiC-style (λ_a, λ_b) per target bpp: a strong rate penalty above the target, a weak one below.
LAMBDAS = {0.1: (2.0**2, 2.0**-4), 0.2: (2.0**1, 2.0**-4), 0.4: (2.0**0, 2.0**-4), 0.8: (2.0**-2, 2.0**-5)}


def checkpoint_name(target: float) -> str:
    """``hific_tiny_0p10bpp`` for 0.1 bpp (no dot, so the name has a single suffix)."""
    return f"hific_tiny_{target:.2f}bpp".replace(".", "p")


def lambdas_for(target: float) -> tuple[float, float]:
    """(λ_a, λ_b) for a target: the table entry, else λ_a ∝ 1/target through the 0.4 bpp entry."""
    if target in LAMBDAS:
        return LAMBDAS[target]
    return (0.4 / target, 2.0**-4)


@dataclass
class TrainConfig:
    targets: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)
    crop: int = 128  # fine-tuning crops (the MS-SSIM fallback needs > 96 px)
    batch: int = 8
    base_crop: int = 64  # pretraining on smaller crops gives more updates per CPU-second
    base_batch: int = 8
    base_lambda: float = 0.002  # tiny: rate pressure early collapses the latents (Adam still trains the prior)
    # CPU-minutes per phase (process time, one thread); ``deadline`` (unix time) shrinks them all
    # proportionally so training ends in time on a shared machine.
    base_minutes: float = 20.0
    rate_minutes: float = 5.0
    gan_minutes: float = 4.0
    deadline: float | None = None
    max_steps: int | None = None  # per phase; for smoke tests
    lr: float = 1e-3
    finetune_lr: float = 1e-4
    threads: int = 1
    seed: int = 0
    arch: str = "tiny"


# --- perceptual term -----------------------------------------------------------------------------

def perceptual_loss() -> tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """LPIPS(alex) when its verified weights are already on disk; else 1 - MS-SSIM. Never downloads.

    The AlexNet file is found and sha256-checked like the lpips metric's (``metrics.weights``), and handed
    to lpips directly, so lpips never asks torchvision for (or loads an unchecked cached) backbone."""
    try:
        from rdp_bench.metrics.lpips_metric import build_lpips, lpips_linear_weights
        from rdp_bench.metrics.weights import ALEXNET, find_weights

        path, _ = find_weights(ALEXNET)
        if path is not None and lpips_linear_weights("alex").is_file():
            net = build_lpips("alex", path)
            return "lpips-alex", lambda x, y: net(x * 2 - 1, y * 2 - 1).mean()
    except Exception:  # noqa: BLE001 - any failure means LPIPS is not usable here
        pass
    from pytorch_msssim import ms_ssim

    weights = [0.0448, 0.2856, 0.3001]  # the first three MS-SSIM scale weights, renormalized by the library
    return "1-ms-ssim(3 scales, 7px window; LPIPS weights unavailable offline)", (
        lambda x, y: 1.0 - ms_ssim(x.clamp(0, 1), y, data_range=1.0, size_average=True, weights=weights, win_size=7)
    )


# --- conditional discriminator ---------------------------------------------------------------------

class ConditionalDiscriminator(nn.Module):
    """HiFiC's discriminator, scaled down: patch logits from the image and the upsampled latent ŷ."""

    def __init__(self, latent_features: int, width: int = 32, latent_proj: int = 12) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.project = nn.Conv2d(latent_features, latent_proj, 3, padding=1)
        chans = [3 + latent_proj, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        layers.append(sn(nn.Conv2d(chans[-1], 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(F.leaky_relu(self.project(latent), 0.2), size=image.shape[-2:], mode="nearest")
        return self.net(torch.cat([image * 2 - 1, cond], 1))


# --- training loop -------------------------------------------------------------------------------

@dataclass
class PhaseLog:
    name: str
    steps: int = 0
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # process CPU time (the machine is shared, so this is the honest training time)
    final: dict = field(default_factory=dict)


def _bpp(out, pixels: int) -> torch.Tensor:
    return out.bits().mean() / pixels


def _ema(stats: dict, key: str, value: float, decay: float = 0.98) -> None:
    stats[key] = value if key not in stats else decay * stats[key] + (1 - decay) * value


class HiFiCTrainer:
    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        from rdp_bench.training.data import CropBatches

        self.cfg = cfg
        self.log = log
        self.arch = HiFiCConfig.tiny() if cfg.arch == "tiny" else HiFiCConfig()
        self.data = CropBatches(size=cfg.crop, seed=cfg.seed)
        self.base_data = CropBatches(size=cfg.base_crop, seed=cfg.seed + 1)
        self.perceptual_name, self.perceptual = perceptual_loss()

    def _optimizers(self, model: HiFiCAutoencoder, lr: float):
        main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
        aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
        return torch.optim.Adam(main, lr=lr), torch.optim.Adam(aux, lr=1e-3)

    def _done(self, phase: PhaseLog, start: float, cpu_start: float, minutes: float, wall_limit: float | None) -> bool:
        if self.cfg.max_steps is not None and phase.steps >= self.cfg.max_steps:
            return True
        if wall_limit is not None and time.monotonic() - start >= wall_limit:
            return True
        return time.process_time() - cpu_start >= minutes * 60

    def _wall_limit(self, minutes: float) -> float | None:
        """This phase's share of the wall time left before the deadline (None: no deadline)."""
        if self.cfg.deadline is None:
            return None
        left = max(self.cfg.deadline - time.time(), 0.0)
        return left * minutes / max(self._planned_left, 1e-9)

    def run_phase(self, model: HiFiCAutoencoder, name: str, minutes: float, lr: float,
                  target: float | None = None, base_lambda: float | None = None,
                  disc: ConditionalDiscriminator | None = None) -> PhaseLog:
        model.train()
        opt, aux_opt = self._optimizers(model, lr)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9)) if disc is not None else None
        phase, stats = PhaseLog(name), {}
        wall_limit = self._wall_limit(minutes)
        self._planned_left -= minutes
        cpu_start = time.process_time()
        lam_a, lam_b = lambdas_for(target) if target is not None else (base_lambda, base_lambda)
        start = time.monotonic()
        crop, batch = (self.cfg.crop, self.cfg.batch) if target is not None else (self.cfg.base_crop, self.cfg.base_batch)
        data = self.data if crop == self.cfg.crop else self.base_data
        pixels = crop**2
        while not self._done(phase, start, cpu_start, minutes, wall_limit):
            x = data.sample(batch)
            out = model(x)
            bpp = _bpp(out, pixels)
            lam = lam_a if target is None or bpp.item() > target else lam_b
            mse = F.mse_loss(out.reconstruction * 255, x * 255)
            loss = lam * bpp + K_M * mse
            if target is not None:
                perc = self.perceptual(out.reconstruction, x)
                loss = loss + K_P * perc
                _ema(stats, "perceptual", perc.item())
            if disc is not None:
                g_adv = F.softplus(-disc(out.reconstruction, out.latent.detach())).mean()  # non-saturating
                loss = loss + BETA * g_adv
                _ema(stats, "gan_g", g_adv.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            aux_opt.zero_grad(set_to_none=True)
            model.aux_loss().backward()
            aux_opt.step()
            if disc is not None:
                y_hat = out.latent.detach()
                d_loss = F.softplus(-disc(x, y_hat)).mean() + F.softplus(disc(out.reconstruction.detach(), y_hat)).mean()
                disc_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                disc_opt.step()
                _ema(stats, "gan_d", d_loss.item())
            phase.steps += 1
            _ema(stats, "bpp_estimated", bpp.item())
            _ema(stats, "mse255", mse.item())
            _ema(stats, "loss", loss.item())
            if phase.steps % 50 == 0:
                psnr = 10 * math.log10(255**2 / max(stats["mse255"], 1e-9))
                self.log(f"[{name}] step {phase.steps} {time.monotonic() - start:.0f}s  "
                         + "  ".join(f"{k}={v:.4f}" for k, v in stats.items()) + f"  psnr~{psnr:.2f}")
        phase.seconds = time.monotonic() - start
        phase.cpu_seconds = time.process_time() - cpu_start
        phase.final = {k: round(v, 5) for k, v in stats.items()}
        return phase

    def manifest(self, target: float, phases: list[PhaseLog]) -> dict:
        total = sum(p.seconds for p in phases)
        cpu = sum(p.cpu_seconds for p in phases)
        from rdp_bench.training.data import training_photos

        return {
            "codec": "hific",
            "architecture": {"name": f"hific-{self.cfg.arch}", "config": self.arch.to_dict(),
                             "parameters": parameter_count(HiFiCAutoencoder(self.arch))},
            "target_bpp": target,
            "loss": {"lambda_a": lambdas_for(target)[0], "lambda_b": lambdas_for(target)[1], "base_lambda": self.cfg.base_lambda,
                     "k_M": K_M, "k_P": K_P, "beta": BETA, "mse_scale": "0..255",
                     "perceptual_term": self.perceptual_name, "gan": "non-saturating, conditional on upsampled y_hat"},
            "training_data": {"source": "shared/photos (samples held out)", "photos": len(training_photos()),
                              "crop": self.cfg.crop, "batch": self.cfg.batch,
                              "base_crop": self.cfg.base_crop, "base_batch": self.cfg.base_batch},
            "phases": [asdict(p) for p in phases],
            "steps": sum(p.steps for p in phases),
            "wall_seconds": round(total, 1),
            "cpu_seconds": round(cpu, 1),
            "final_losses": phases[-1].final,
            "note": (f"Tiny HiFiC trained for {cpu / 60:.1f} CPU-minutes ({total / 60:.1f} min wall clock, shared machine) on one CPU thread "
                     f"({phases[0].steps} pretraining steps of {self.cfg.base_batch}x{self.cfg.base_crop}px crops, "
                     f"{sum(p.steps for p in phases[1:])} fine-tuning steps of {self.cfg.batch}x{self.cfg.crop}px). "
                     "A demonstration checkpoint, far from the paper's HiFiC quality."),
            "license": "MIT (trained by rdp-bench on the photos listed in shared/photos/manifest.csv)",
        }

    def train(self, out_dir: Path, base_checkpoint: Path | None = None) -> list[Path]:
        import copy

        out_dir = Path(out_dir)
        cfg = self.cfg
        self.log(f"perceptual term: {self.perceptual_name}")
        self._planned_left = cfg.base_minutes + len(cfg.targets) * (cfg.rate_minutes + cfg.gan_minutes)
        base = HiFiCAutoencoder(self.arch)
        base_phase = self.run_phase(base, "base", cfg.base_minutes, cfg.lr, base_lambda=cfg.base_lambda)
        self.log(f"base done: {base_phase.steps} steps, {base_phase.final}")
        if base_checkpoint is not None:
            torch.save(base.state_dict(), base_checkpoint)
        written = []
        for target in cfg.targets:
            model = copy.deepcopy(base)
            rate = self.run_phase(model, f"rate@{target}", cfg.rate_minutes, cfg.finetune_lr, target=target)
            disc = ConditionalDiscriminator(self.arch.latent_features)
            gan = self.run_phase(model, f"gan@{target}", cfg.gan_minutes, cfg.finetune_lr, target=target, disc=disc)
            model.eval()
            model.hyper_bottleneck.update(force=True)
            path = save_checkpoint(model.state_dict(), out_dir / checkpoint_name(target),
                                   self.manifest(target, [base_phase, rate, gan]))
            self.log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
            written.append(path)
        return written


def train_hific(out_dir: Path, cfg: TrainConfig, log: Callable[[str], None] = print,
                base_checkpoint: Path | None = None) -> list[Path]:
    return HiFiCTrainer(cfg, log).train(out_dir, base_checkpoint)


__all__ = ["ConditionalDiscriminator", "HiFiCTrainer", "LAMBDAS", "lambdas_for", "TrainConfig", "perceptual_loss", "train_hific"]
