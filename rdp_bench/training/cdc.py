"""CDC training recipe (Yang & Mandt 2023), sized for the bundled tiny checkpoints.

Objective (ρ = 0, no LPIPS term): λ·bpp + E_t[min(SNR_t, 5)·||x − x̂0(x_t, t, ŷ)||²] on images scaled
to [-1, 1], t uniform over the 8193 cosine-schedule steps, uniform-noise rate proxy, straight-through
rounding for the context, plus the FlexiblePrior median loss. An EMA of the weights is what we save
(as CDC does).

Phases: one ``base`` model at a middle λ, then a short fine-tune per target λ starting from it. Each
phase is bounded by CPU minutes of the training process (the machine is shared; a wall-clock cap of
``max_wall_factor`` times the budget also applies) and optionally steps; the manifests record steps,
wall and CPU minutes and final losses honestly. Checkpoints: fp16 safetensors without the schedule buffers (they
are recomputed), written with ``rdp_bench.codecs.checkpoints.save_checkpoint``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from rdp_bench.codecs.checkpoints import load_state_dict, save_checkpoint
from rdp_bench.codecs.diffusion.model import CDCConfig, CDCModel, load_cdc_weights

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "cdc"
BASE_DIR = Path(__file__).resolve().parents[2] / ".traindata" / "cdc"
#: default target rate weights λ, low rate first
DEFAULT_LAMBDAS = (0.04, 0.016, 0.0064, 0.0025)


@dataclass
class TrainConfig:
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    base_lambda: float = 0.01
    base_minutes: float = 20.0
    finetune_minutes: float = 5.0
    max_steps: int | None = None  # per phase; for smoke tests
    crop: int = 64
    batch: int = 8
    lr: float = 5e-4
    finetune_lr: float = 2e-4
    ema_decay: float = 0.995
    threads: int = 1
    seed: int = 0
    arch: str = "tiny"
    out: Path = WEIGHTS_DIR
    base_out: Path = WEIGHTS_DIR
    init: Path | None = None  # start the base phase from this checkpoint (or skip it with base_minutes=0)
    save_every_minutes: float = 5.0
    #: fraction of the base phase over which λ ramps up from 0 (see ``train_phase``)
    rate_warmup: float = 0.5
    #: a phase also stops after this many times its budget in wall-clock minutes
    max_wall_factor: float = 4.0


def weight_name(lam: float) -> str:
    """File stem for a rate weight, dot-free so ``with_suffix`` keeps it whole (0.0064 -> cdc-tiny-l0p0064)."""
    return f"cdc-tiny-l{lam:g}".replace(".", "p")


def trainable_state_dict(model: CDCModel) -> dict[str, torch.Tensor]:
    """Weights without the schedule buffers (recomputed at load)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("train_")}


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))  # warm-up
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)


def _manifest(cfg: TrainConfig, model_cfg: CDCConfig, lam: float, phase: str, stats: dict, history: list) -> dict:
    return {
        "codec": "cdc",
        "variant": "tiny (rdp-bench), NOT the official CDC weights",
        "config": model_cfg.to_dict(),
        "lambda": lam,
        "phase": phase,
        "objective": "lambda*bpp + min(SNR,5)-weighted x0-MSE on [-1,1] images (CDC, rho=0) + prior median loss",
        "perceptual_term": "none (rho=0)",
        "training_data": f"{cfg.crop}x{cfg.crop} random crops of shared/photos (the 10 'samples' images held out)",
        "batch": cfg.batch,
        "steps": stats["steps"],
        "wall_minutes": round(stats["minutes"], 2),
        "cpu_minutes": round(stats["cpu_minutes"], 2),
        "total_steps_including_parents": stats["total_steps"],
        "total_wall_minutes_including_parents": round(stats["total_minutes"], 2),
        "total_cpu_minutes_including_parents": round(stats["total_cpu_minutes"], 2),
        "final_losses": stats["final"],
        "ema_decay": cfg.ema_decay,
        "rate_warmup": cfg.rate_warmup if phase == "base" else 0.0,
        "lr": cfg.lr if phase == "base" else cfg.finetune_lr,
        "device": "cpu, 1 thread" if cfg.threads == 1 else f"cpu, {cfg.threads} threads",
        "note": (f"Trained for {stats['total_minutes']:.1f} wall minutes ({stats['total_cpu_minutes']:.1f} CPU minutes) "
                 "in total on a shared CPU (a tiny model, far from converged); results are a smoke-scale "
                 "baseline, not the paper's numbers."),
        "history": history[-20:],
    }


def train_phase(model: CDCModel, lam: float, minutes: float, lr: float, cfg: TrainConfig, data,
                on_save: Callable[[EMA, dict], None] | None = None, log: Callable[[str], None] = print,
                ) -> tuple[EMA, dict, list]:
    """Train ``model`` in place at rate weight ``lam``; returns the EMA copy, stats and a loss history."""
    model.train()
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    last_save = t0
    step = 0
    window: dict[str, float] = {}
    history: list[dict] = []
    final: dict[str, float] = {}
    while True:
        elapsed = time.perf_counter() - t0
        # budgets are CPU minutes of this process (the machine is shared), with a wall-clock cap
        cpu_used = time.process_time() - cpu0
        if (cpu_used > minutes * 60 * cfg.threads or elapsed > cfg.max_wall_factor * minutes * 60
                or (cfg.max_steps is not None and step >= cfg.max_steps)):
            break
        x = data.sample(cfg.batch) * 2.0 - 1.0
        # rate warm-up: Adam normalises gradient scale, so even a small λ·bpp term alone drives the
        # encoder to a zero-information latent before the UNet has learnt to use the context;
        # ramp λ from 0 over the first ``rate_warmup`` fraction of the phase's CPU budget
        ramp = 1.0 if cfg.rate_warmup <= 0 else min(1.0, cpu_used / (cfg.rate_warmup * minutes * 60 * cfg.threads))
        loss, parts = model.training_loss(x, lam * ramp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        step += 1
        for k, v in parts.items():
            window[k] = window.get(k, 0.0) + v
        if step % 50 == 0:
            avg = {k: v / 50 for k, v in window.items()}
            window = {}
            final = avg
            history.append({"step": step, "minutes": round(elapsed / 60, 2),
                            "cpu_minutes": round((time.process_time() - cpu0) / 60, 2), **{k: round(v, 5) for k, v in avg.items()}})
            log(json.dumps(history[-1]))
        if on_save is not None and time.perf_counter() - last_save > cfg.save_every_minutes * 60:
            last_save = time.perf_counter()
            on_save(ema, {"steps": step, "minutes": (last_save - t0) / 60,
                          "cpu_minutes": (time.process_time() - cpu0) / 60, "final": final})
    if not final and window:
        final = {k: v / max(step % 50, 1) for k, v in window.items()}
    stats = {"steps": step, "minutes": (time.perf_counter() - t0) / 60, "cpu_minutes": (time.process_time() - cpu0) / 60,
             "final": final}
    return ema, stats, history


def load_model(path: Path, config: CDCConfig) -> CDCModel:
    return load_cdc_weights(CDCModel(config), load_state_dict(path))


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> list[Path]:
    from rdp_bench.training.data import CropBatches

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model_cfg = CDCConfig.tiny() if cfg.arch == "tiny" else CDCConfig.official()
    data = CropBatches(size=cfg.crop, seed=cfg.seed)
    model = CDCModel(model_cfg) if cfg.init is None else load_model(Path(cfg.init), model_cfg)
    base_path = Path(cfg.base_out) / "cdc-tiny-base.safetensors"
    base_stats = {"steps": 0, "minutes": 0.0, "cpu_minutes": 0.0}
    if cfg.init is not None and Path(cfg.init).with_suffix(".json").exists():
        parent = json.loads(Path(cfg.init).with_suffix(".json").read_text())
        base_stats = {"steps": parent.get("total_steps_including_parents", 0),
                      "minutes": parent.get("total_wall_minutes_including_parents", 0.0),
                      "cpu_minutes": parent.get("total_cpu_minutes_including_parents", 0.0)}

    def save(ema: EMA, stats: dict, path: Path, lam: float, phase: str, parent: dict, history: list) -> Path:
        stats = dict(stats, total_steps=parent["steps"] + stats["steps"], total_minutes=parent["minutes"] + stats["minutes"],
                     total_cpu_minutes=parent["cpu_minutes"] + stats["cpu_minutes"])
        out = save_checkpoint(trainable_state_dict(ema.model), path, _manifest(cfg, model_cfg, lam, phase, stats, history))
        log(f"saved {out} ({stats['total_minutes']:.1f} min in total)")
        return out

    if cfg.base_minutes > 0:
        log(f"base phase: lambda={cfg.base_lambda}, {cfg.base_minutes} min")
        hist: list = []
        ema, stats, hist = train_phase(
            model, cfg.base_lambda, cfg.base_minutes, cfg.lr, cfg, data,
            on_save=lambda e, s: save(e, s, base_path, cfg.base_lambda, "base", base_stats, hist), log=log)
        save(ema, stats, base_path, cfg.base_lambda, "base", base_stats, hist)
        base_model = ema.model
        base_stats = {k: base_stats[k] + stats[k] for k in ("steps", "minutes", "cpu_minutes")}
    else:
        base_model = model
    written = []
    for lam in cfg.lambdas:
        log(f"fine-tune: lambda={lam}, {cfg.finetune_minutes} min")
        student = copy.deepcopy(base_model).train()
        for p in student.parameters():
            p.requires_grad_(True)
        ema, stats, hist = train_phase(student, lam, cfg.finetune_minutes, cfg.finetune_lr,
                                       replace(cfg, rate_warmup=0.0), data, log=log)
        written.append(save(ema, stats, Path(cfg.out) / weight_name(lam), lam, "finetune", base_stats, hist))
    return written
