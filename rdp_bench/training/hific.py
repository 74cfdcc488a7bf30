"""HiFiC training recipe (Mentzer et al. 2020), sized for the bundled tiny checkpoints.

Phases, run in order as one resumable job (``training/job.py``):

1. ``base``   (shared by all targets): MSE + rate pretraining,  λ_base·bpp + k_M·MSE, the generator fed the
   noisy latent (``base_quantization``);
2. per target r_t, ``rate@r_t``: fine-tune from the base to the target, now on rounded latents
   (straight-through) as at test time: λ'·bpp + k_M·MSE + k_P·perceptual,
   with HiFiC's rate targeting λ' = λ_a if the batch's estimated bpp > r_t else λ_b;
3. then ``gan@r_t``: adds β·GAN with a discriminator conditioned on the (upsampled) quantized latent ŷ,
   non-saturating loss, alternating generator / discriminator steps.

With ``init_targets`` (and no base phase) each target starts from its own finished checkpoint instead, so
``--base-steps 0 --rate-steps 0`` continues GAN fine-tuning of the bundled models; the discriminator is not
bundled and starts fresh in every job, as it does in HiFiC's GAN stage.

MSE is on the 0..255 scale (k_M = 0.075·2^-5 as in HiFiC). The perceptual term is LPIPS when its
backbone weights are available locally, otherwise ``1 - MS-SSIM`` (3 scales, 7 px window, so crops above
96 px fit); the manifest records which. Training crops come from the shared photos minus the validation
photos and ``samples`` (``split_photos``); the validation curve (bpp, PSNR, MS-SSIM, KID at phase ends) is
measured on the held-out validation photos. ``rdp-bench train hific`` continues a killed run from
``state.pt``; ``--export`` writes each finished target's EMA weights as a bundled checkpoint.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdp_bench.codecs.checkpoints import save_checkpoint
from rdp_bench.codecs.hific_arch import HiFiCAutoencoder, parameter_count
from rdp_bench.training.configs import HiFiCJobConfig  # re-exported: the config's old home
from rdp_bench.training.job import (DEFAULT_JOBS_DIR, CsvLog, job_data, resume_clock, Log, Stopwatch,
                                    atomic_torch_save, cpu_copy, ema_update, gpu_autocast, open_job, plot_curves,
                                    record_parent, warm_start_lineage, StepRecorder)

K_M = 0.075 * 2**-5
K_P = 1.0
BETA = 0.15
#: HiFiC-style (λ_a, λ_b) per target bpp: a strong rate penalty above the target, a weak one below.
LAMBDAS = {0.1: (2.0**2, 2.0**-4), 0.2: (2.0**1, 2.0**-4), 0.4: (2.0**0, 2.0**-4), 0.8: (2.0**-2, 2.0**-5)}


def checkpoint_name(target: float) -> str:
    """``hific_tiny_0p10bpp`` for 0.1 bpp (no dot, so the name has a single suffix)."""
    return f"hific_tiny_{target:.2f}bpp".replace(".", "p")


def target_init(init_targets: str, target: float) -> Path:
    """The checkpoint a target's first phase starts from in an ``init_targets`` job."""
    return Path(init_targets) / f"{checkpoint_name(target)}.safetensors"


def _parent_record(target: float) -> str:
    return f"parent-{checkpoint_name(target)}.json"


def lambdas_for(target: float) -> tuple[float, float]:
    """(λ_a, λ_b) for a target: the table entry, else λ_a ∝ 1/target through the 0.4 bpp entry."""
    if target in LAMBDAS:
        return LAMBDAS[target]
    return (0.4 / target, 2.0**-4)


# --- perceptual term -----------------------------------------------------------------------------

def perceptual_loss(device: str = "cpu") -> tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """LPIPS(alex) (on ``device``) when its verified weights are already on disk; else 1 - MS-SSIM. Never downloads.

    The AlexNet file is found and sha256-checked like the lpips metric's (``metrics.weights``), and handed
    to lpips directly, so lpips never asks torchvision for (or loads an unchecked cached) backbone."""
    try:
        from rdp_bench.metrics.lpips_metric import build_lpips, lpips_linear_weights
        from rdp_bench.metrics.weights import ALEXNET, find_weights

        path, _ = find_weights(ALEXNET)
        if path is not None and lpips_linear_weights("alex").is_file():
            net = build_lpips("alex", path).to(device)
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


# --- the resumable job ---------------------------------------------------------------------------

def _bpp(out, pixels: int) -> torch.Tensor:
    return out.bits().mean() / pixels


@torch.no_grad()
def validate(model: HiFiCAutoencoder, images: list[torch.Tensor], kid: Callable | None = None) -> dict[str, float]:
    """Estimated bpp, PSNR and MS-SSIM (8-bit output) on the validation crops, run on the model's device; KID when
    ``kid`` is given."""
    from pytorch_msssim import ms_ssim

    model.eval()
    device = next(model.parameters()).device
    bpps, psnrs, msssims, recs = [], [], [], []
    for x in images:
        out = model(x.to(device))
        x_hat = out.reconstruction.clamp(0, 1).mul(255).round().div(255).cpu()
        bpps.append(out.bits().item() / (x.shape[-2] * x.shape[-1]))
        psnrs.append(10 * math.log10(1 / max(F.mse_loss(x_hat, x).item(), 1e-10)))
        msssims.append(ms_ssim(x_hat, x, data_range=1.0).item())
        recs.append(x_hat)
    row = {"bpp": sum(bpps) / len(bpps), "psnr": sum(psnrs) / len(psnrs), "ms_ssim": sum(msssims) / len(msssims)}
    if kid is not None:
        row["kid"] = kid(recs)
    return row


class _Phase:
    """The model, EMA, optimizers (and discriminator) of one phase; rebuilt from the state on a resume."""

    def __init__(self, cfg: HiFiCJobConfig, index: int, name: str, target: float | None,
                 start: dict[str, torch.Tensor] | None) -> None:
        self.name, self.target = name, target
        # built from a seed of its own, so a resumed run's restored RNG state is not consumed here
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed * 1000 + index)
            self.model = HiFiCAutoencoder(cfg.architecture())
            disc = ConditionalDiscriminator(cfg.architecture().latent_features) if name.startswith("gan") else None
        if start is not None:
            self.model.load_state_dict(start)
        self.device = torch.device(cfg.device)
        self.model.to(self.device)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        main = [p for n, p in self.model.named_parameters() if not n.endswith("quantiles")]
        aux = [p for n, p in self.model.named_parameters() if n.endswith("quantiles")]
        self.main = main
        self.opt = torch.optim.Adam(main, lr=cfg.lr if target is None else cfg.finetune_lr)
        self.opt_aux = torch.optim.Adam(aux, lr=1e-3)
        self.disc = disc.to(self.device) if disc is not None else None
        self.disc_opt = (torch.optim.Adam(self.disc.parameters(), lr=cfg.finetune_lr, betas=(0.5, 0.9))
                         if self.disc is not None else None)

    def state(self) -> dict[str, Any]:
        out = {"model": cpu_copy(self.model.state_dict()), "ema": cpu_copy(self.ema), "opt": self.opt.state_dict(),
               "opt_aux": self.opt_aux.state_dict()}
        if self.disc is not None:
            out |= {"disc": cpu_copy(self.disc.state_dict()), "disc_opt": self.disc_opt.state_dict()}
        return out

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.opt.load_state_dict(state["opt"])
        self.opt_aux.load_state_dict(state["opt_aux"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])

    def ema_model(self) -> HiFiCAutoencoder:
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.ema)
        return model


def _train_step(cfg: HiFiCJobConfig, phase: _Phase, x: torch.Tensor, lr: float,
                perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, float] | None:
    """One generator (and discriminator) update; None when the loss or gradient is not finite (skipped)."""
    model, target = phase.model, phase.target
    model.train()
    for group in phase.opt.param_groups:
        group["lr"] = lr
    with gpu_autocast(x):
        out = model(x, decoder_noise=target is None and cfg.base_quantization == "noise")
    bpp = _bpp(out, x.shape[-2] * x.shape[-1])
    lam_a, lam_b = lambdas_for(target) if target is not None else (cfg.base_lambda, cfg.base_lambda)
    lam = lam_a if target is None or bpp.item() > target else lam_b
    mse = F.mse_loss(out.reconstruction * 255, x * 255)
    loss = lam * bpp + K_M * mse
    parts = {"bpp": bpp.item(), "psnr": 10 * math.log10(255**2 / max(mse.item(), 1e-9))}
    if target is not None:
        perc = perceptual(out.reconstruction, x)
        loss = loss + K_P * perc
        parts["perceptual"] = perc.item()
    if phase.disc is not None:
        with gpu_autocast(x):
            logits = phase.disc(out.reconstruction, out.latent.detach())
        g_adv = F.softplus(-logits.float()).mean()  # non-saturating
        loss = loss + BETA * g_adv
        parts["gan_g"] = g_adv.item()
    phase.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(phase.main, 5.0)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        return None
    phase.opt.step()
    aux = model.aux_loss()
    phase.opt_aux.zero_grad(set_to_none=True)
    aux.backward()
    phase.opt_aux.step()
    if phase.disc is not None:
        y_hat = out.latent.detach()
        with gpu_autocast(x):  # the real image first: spectral norm's power iteration runs in call order
            real, fake = phase.disc(x, y_hat), phase.disc(out.reconstruction.detach(), y_hat)
        d_loss = F.softplus(-real.float()).mean() + F.softplus(fake.float()).mean()
        phase.disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        phase.disc_opt.step()
        parts["gan_d"] = d_loss.item()
    return {"loss": loss.item(), "loss_aux": aux.item(), **parts}


def train_hific(cfg: HiFiCJobConfig, job: str = "hific", jobs_dir: Path = DEFAULT_JOBS_DIR,
                minutes: float | None = None, photos_dir: Path | None = None, until_step: int | None = None,
                log: Log = print) -> Path:
    """Run (or continue) the job through all its phases, or until ``until_step`` (counted over all phases)
    or ``minutes`` of wall time; returns the job folder. SIGTERM / SIGINT save the state and stop."""
    from rdp_bench.training.job import KidProbe

    cfg.check()
    inits = {t: target_init(cfg.init_targets, t) for t in cfg.targets} if cfg.init_targets else {}
    for target, path in inits.items():
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to start the {target:g} bpp target from: {path}")
    folder = Path(jobs_dir) / job
    state = open_job(folder, {"stage": "hific", **cfg.to_dict()})
    torch.set_num_threads(cfg.threads)
    train_paths, val_paths, data, val_images = job_data(photos_dir, cfg.crop, cfg.seed)
    torch.manual_seed(cfg.seed)
    perceptual_name, perceptual = perceptual_loss(cfg.device)
    plan = cfg.phases()
    starts = [sum(p[2] for p in plan[:i]) for i in range(len(plan))]  # global step at each phase's start
    step, watch, base, finished, logs = 0, Stopwatch(), None, {}, []
    train_log, val_log = CsvLog(folder / "train.csv"), CsvLog(folder / "val.csv")
    recorder = StepRecorder(train_log, job, log, row_every=100, print_every=500)
    if state is not None:
        step, base, finished, logs = int(state["step"]), state["base"], state["finished"], list(state["phase_logs"])
        watch = resume_clock(state, step, data, (train_log, val_log), job, log)
    else:
        record_parent(folder, cfg.init)
        for target, path in inits.items():
            record_parent(folder, str(path), _parent_record(target))
        log(f"[{job}] new job: {len(train_paths)} training photos, {len(val_paths)} validation photos held out; "
            f"perceptual term {perceptual_name}")
    stop = {"now": False}

    def on_signal(signum, frame):  # finish the current step, save, exit
        stop["now"] = True

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = time.time() + minutes * 60 if minutes else math.inf
    last = min(sum(p[2] for p in plan), until_step) if until_step is not None else sum(p[2] for p in plan)
    kid_probe: list = []

    def kid() -> Callable | None:
        if not kid_probe:
            try:
                kid_probe.append(KidProbe(val_images))
            except Exception as exc:  # Inception weights missing: the curve goes on without KID
                log(f"[{job}] KID skipped: {exc}")
                kid_probe.append(None)
        return kid_probe[0]

    def validate_row(phase: _Phase, with_kid: bool, series: str | None = None) -> None:
        series = series or phase.name
        row = validate(phase.ema_model(), val_images, kid() if with_kid else None)
        val_log.append({"step": step, "cpu_hours": round(watch.cpu_s / 3600, 4), "series": series, **row})
        log(f"[{job}] val step {step} {series}: {row['bpp']:.3f} bpp, {row['psnr']:.2f} dB"
            + (f", KID {row['kid']:.4f}" if "kid" in row else ""))
        plot_curves(folder, f"{job}: HiFiC-{cfg.arch}, validation on {len(val_images)} held-out photos (EMA)")

    try:
        index = max(i for i, s in enumerate(starts) if s <= step) if step < starts[-1] + plan[-1][2] else len(plan)
        phase: _Phase | None = None
        saved_step = step
        while index < len(plan) and step < last and not stop["now"] and time.time() < deadline:
            name, target, steps = plan[index]
            if phase is None or phase.name != name:
                first_of_target = name.startswith("rate") or (name.startswith("gan") and not cfg.rate_steps)
                if target is None:
                    begin = _init_weights(cfg.init) if cfg.init else None
                elif first_of_target:
                    begin = _init_weights(str(inits[target])) if inits else base
                else:  # gan after its rate phase: from where that one ended
                    begin = phase.model.state_dict() if phase is not None else state["phase"]["model"]
                phase = _Phase(cfg, index, name, target, begin)
                phase_cpu0, last_save = watch.cpu_s, time.time()
                recorder.start_phase()
                if state is not None and state.get("phase_name") == name:
                    phase.restore(state["phase"])  # resumed mid-phase: its CPU clock started before
                    phase_cpu0 = float(state["phase_cpu0"])
                elif inits and first_of_target and not any(r.get("series") == f"start@{target}" for r in val_log.rows()):
                    validate_row(phase, with_kid=True, series=f"start@{target}")  # the curve's point before training
                state = None
            in_phase = step - starts[index]
            lr = (cfg.lr * (0.1 if in_phase >= cfg.decay_at * steps else 1.0)) if target is None else cfg.finetune_lr
            parts = _train_step(cfg, phase, data.sample(cfg.batch).to(cfg.device, non_blocking=True), lr, perceptual)
            if parts is None:
                recorder.skip()
                continue
            step += 1
            ema_update(phase.ema, phase.model, cfg.ema_decay, step - starts[index])
            recorder.record(step, parts, watch.cpu_s, lr, phase=name)
            phase_done = step == starts[index] + steps
            if phase_done or (target is None and (step - starts[index]) % cfg.val_every == 0):
                validate_row(phase, with_kid=phase_done)
            if phase_done:
                logs.append({"name": name, "steps": steps, "cpu_seconds": round(watch.cpu_s - phase_cpu0, 1)})
                if target is None:
                    base = cpu_copy(phase.ema)
                elif name.startswith("gan"):
                    finished[str(target)] = cpu_copy(phase.ema)
                index += 1
            if phase_done or time.time() - last_save > cfg.save_every_s:
                _save(folder, step, watch, data, base, finished, logs, phase, phase_done, phase_cpu0, train_paths, val_paths)
                last_save, saved_step = time.time(), step
        if phase is not None and saved_step != step:
            _save(folder, step, watch, data, base, finished, logs, phase, False, phase_cpu0, train_paths, val_paths)
        log(f"[{job}] stopped at step {step} of {starts[-1] + plan[-1][2]} ({watch.cpu_s / 3600:.2f} CPU-h); "
            f"finished targets: {', '.join(sorted(finished)) or 'none'}; state in {folder / 'state.pt'}")
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return folder


def _init_weights(path: str) -> dict[str, torch.Tensor]:
    from rdp_bench.codecs.checkpoints import load_state_dict

    return {k: v.float() for k, v in load_state_dict(Path(path)).items()}


def _save(folder: Path, step: int, watch: Stopwatch, data, base, finished, logs, phase: _Phase,
          phase_done: bool, phase_cpu0: float, train_paths: list[Path], val_paths: list[Path]) -> None:
    # a finished rate phase's weights start the gan phase, so they are kept until it has begun
    keep = phase_done and phase.name.startswith("rate")
    atomic_torch_save({"step": step, "cpu_s": watch.cpu_s, "wall_s": watch.wall_s, "torch_rng": torch.get_rng_state(),
                       "data_rng": data.state(), "base": base, "finished": finished, "phase_logs": logs,
                       "phase_name": None if phase_done else phase.name, "phase_cpu0": phase_cpu0,
                       "phase": {"model": cpu_copy(phase.model.state_dict())} if keep else
                       (None if phase_done else phase.state()),
                       "train_photos": [p.name for p in train_paths], "val_photos": [p.name for p in val_paths]},
                      folder / "state.pt")


def export_hific(job_dir: Path, out: Path) -> list[Path]:
    """Every finished target's EMA weights as a bundled fp16 checkpoint (``hific_tiny_0p10bpp`` ...)."""
    import json

    cfg = json.loads((Path(job_dir) / "config.json").read_text())
    state = torch.load(Path(job_dir) / "state.pt", map_location="cpu", weights_only=True)
    if not state["finished"]:
        raise ValueError(f"{job_dir} has no finished target yet (step {state['step']}): train on")
    val = CsvLog(Path(job_dir) / "val.csv").rows()
    arch = HiFiCJobConfig(arch=cfg["arch"]).architecture()
    written = []
    for key, weights in sorted(state["finished"].items(), key=lambda kv: float(kv[0])):
        target = float(key)
        names = ["base", f"rate@{target}", f"gan@{target}"]
        phases = [p for p in state["phase_logs"] if p["name"] in names]
        steps, cpu_hours = sum(p["steps"] for p in phases), sum(p["cpu_seconds"] for p in phases) / 3600
        # the checkpoint this target started from, and its record in the job folder
        init, record = ((str(target_init(cfg["init_targets"], target)), _parent_record(target)) if cfg.get("init_targets")
                        else (cfg.get("init", ""), "parent.json"))
        model = HiFiCAutoencoder(arch)
        model.load_state_dict(weights)
        model.eval()
        model.hyper_bottleneck.update(force=True)
        manifest = {
            "codec": "hific",
            "architecture": {"name": f"hific-{cfg['arch']}", "config": arch.to_dict(), "parameters": parameter_count(model)},
            "target_bpp": target,
            "loss": {"lambda_a": lambdas_for(target)[0], "lambda_b": lambdas_for(target)[1], "base_lambda": cfg["base_lambda"],
                     "k_M": K_M, "k_P": K_P, "beta": BETA, "mse_scale": "0..255", "perceptual_term": perceptual_loss()[0],
                     "gan": "non-saturating, conditional on upsampled y_hat; discriminator trained from scratch in each job"},
            "training": {
                "steps": steps, "phases": phases, "cpu_hours": round(cpu_hours, 3), "device": cfg["device"],
                "data": f"{cfg['crop']}px random crops with flips, batch {cfg['batch']}, of "
                        f"{len(state['train_photos'])} shared photos",
                "train_photos": state["train_photos"], "validation_photos": state["val_photos"],
                "held_out": "the validation photos and the bundled samples images are never trained on",
                "job_config": cfg,
                "last_validation": [r for r in val if r.get("series") == f"gan@{target}"][-1:],
                **warm_start_lineage(Path(job_dir), init, steps, cpu_hours, record),
            },
            "note": "Tiny HiFiC (NeuralCompression's layout, small widths), CPU-trained: not the paper's model.",
            "license": "MIT (trained by rdp-bench on the photos listed in shared/photos/manifest.csv)",
        }
        written.append(save_checkpoint(model.state_dict(), Path(out) / checkpoint_name(target), manifest))
    return written


def export_hific_base(job_dir: Path, out: Path) -> Path:
    """The job's finished base phase (EMA) as a checkpoint, to warm-start another job (``--init``)."""
    import json

    cfg = json.loads((Path(job_dir) / "config.json").read_text())
    if cfg.get("init_targets"):
        raise ValueError(f"{job_dir} has no base phase: it started each target from --init-targets")
    state = torch.load(Path(job_dir) / "state.pt", map_location="cpu", weights_only=True)
    if state["base"] is None:
        raise ValueError(f"{job_dir} has not finished its base phase yet (step {state['step']}): train on")
    base = next(p for p in state["phase_logs"] if p["name"] == "base")
    model = HiFiCAutoencoder(HiFiCJobConfig(arch=cfg["arch"]).architecture())
    model.load_state_dict(state["base"])
    manifest = {"codec": "hific", "note": f"base phase (EMA) of the job {Path(job_dir).name}",
                "training": {"steps": base["steps"], "cpu_hours": round(base["cpu_seconds"] / 3600, 3),
                             "job_config": cfg,
                             **warm_start_lineage(Path(job_dir), cfg.get("init", ""), base["steps"],
                                                  base["cpu_seconds"] / 3600)}}
    return save_checkpoint(model.state_dict(), Path(out), manifest)


__all__ = ["ConditionalDiscriminator", "HiFiCJobConfig", "LAMBDAS", "export_hific", "export_hific_base", "lambdas_for", "perceptual_loss",
           "target_init", "train_hific", "validate"]
