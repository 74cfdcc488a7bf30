"""CDC training (Yang & Mandt 2023) for the bundled tiny checkpoints, as one resumable job (``training/job.py``).

One phase per rate weight λ, ``ft@λ``, each started from that λ's checkpoint in ``init_dir`` (by default
the bundled ones), on CDC's ρ = 0 objective: E_t[min(SNR_t, 5)·||x − x̂0(x_t, t, ŷ)||²] on images in
[-1, 1], t uniform over the 8193 cosine-schedule steps, straight-through rounding for the context.

* ``joint=False`` (the default, the decoder recipe): the analysis transform and hyperprior are frozen, so
  the rate stays the init's and every step goes to the UNet and the context synthesis; this is stage 2
  of the staged recipe that made the bundled checkpoints (their manifests' ``history``).
* ``joint=True``: CDC's own joint objective, λ·bpp + the loss above + the prior's median loss, with
  everything trained; from scratch (no init file) this is the only choice. At CPU step counts it tends to
  empty the latent (the rate term wins before the UNet uses the context).

Validation on the held-out photos (``split_photos``): estimated bpp, and PSNR / MS-SSIM of the codec's
own decode (8 DDIM steps from 0.8·N(0, I), fixed seeds), at each phase's start (the init's numbers), every
``val_every`` steps, and at its end with KID. ``rdp-bench train cdc`` continues a killed run from
``state.pt``; ``--export`` writes each finished λ's EMA weights as a bundled checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rdp_bench.codecs.checkpoints import file_sha256, load_state_dict, read_manifest, save_checkpoint
from rdp_bench.codecs.diffusion.model import CDCConfig, CDCModel, load_cdc_weights
from rdp_bench.codecs.zoo.cdc import TABLE as CDC_TABLE
from rdp_bench.training.configs import WEIGHTS_DIR, CDCJobConfig  # re-exported: their old home
from rdp_bench.training.job import (DEFAULT_JOBS_DIR, CsvLog, KidProbe, Log, Stopwatch, atomic_torch_save, cpu_copy,
                                    ema_update, gpu_autocast, job_data, open_job, plot_curves, resume_clock,
                                    StepRecorder)

#: the bundled rate weights λ (their owner is the rate table), largest λ (lowest rate) first
DEFAULT_LAMBDAS = tuple(sorted((entry.params["lambda"] for entry in CDC_TABLE), reverse=True))
#: the parts the decoder recipe freezes: the analysis transform and the hyperprior (they set the rate)
RATE_PATH = ("context_fn.enc.", "context_fn.hyper_enc.", "context_fn.hyper_dec.", "context_fn.prior.")
#: the job's ``arch`` names (the config is written into every exported manifest, which is what the codec reads)
ARCHITECTURES: dict[str, Callable[[], CDCConfig]] = {"tiny": CDCConfig.tiny, "official": CDCConfig.official}


def weight_name(lam: float) -> str:
    """File stem for a rate weight, dot-free so ``with_suffix`` keeps it whole (0.0064 -> cdc-tiny-l0p0064)."""
    return f"cdc-tiny-l{lam:g}".replace(".", "p")


def trainable_state_dict(model: CDCModel) -> dict[str, torch.Tensor]:
    """Weights without the schedule buffers (recomputed at load)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("train_")}


def init_file(cfg: CDCJobConfig, lam: float) -> Path | None:
    return Path(cfg.init_dir) / f"{weight_name(lam)}.safetensors" if cfg.init_dir else None


def _parents(cfg: CDCJobConfig) -> dict[str, dict[str, Any]]:
    """Per λ: the checkpoint its phase starts from (file, sha256, steps, CPU-hours), read at the job's start,
    since an export later overwrites those files under the same names."""
    out = {}
    for lam in cfg.lambdas:
        path = init_file(cfg, lam)
        if path is None:  # joint training from scratch
            continue
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to start λ={lam:g} from: {path} (or pass another init dir)")
        manifest = read_manifest(path) if path.with_suffix(".json").is_file() else {}
        training = manifest.get("training", {})
        steps = training.get("total_steps", manifest.get("total_steps_including_parents", 0))
        cpu_h = training.get("total_cpu_hours", manifest.get("total_cpu_minutes_including_parents", 0.0) / 60)
        out[f"{lam:g}"] = {"file": path.name, "sha256": file_sha256(path), "steps": int(steps),
                           "cpu_hours": round(float(cpu_h), 3)}
    return out


@torch.no_grad()
def decode(model: CDCModel, x: torch.Tensor, steps: int, seed: int, gamma: float = 0.8) -> torch.Tensor:
    """The ``cdc`` codec's decode of one image in [0, 1] (estimated-rate path, no entropy coding) -> (x̂, bpp)."""
    from rdp_bench.codecs.diffusion.sampler import DDIMSampler

    out = model.context_fn(x * 2 - 1)
    sampler = DDIMSampler(model.train_alphas_cumprod, steps)
    x_t = sampler.initial_noise(x.shape, seed, gamma, device=x.device)
    for t, t_prev in sampler.timesteps:
        x0 = model.denoise(x_t, sampler.time_input(t, x.shape[0], x.device), out["context"])
        x_t = sampler.step(x_t, x0.clamp(-1, 1), t, t_prev)
    return ((x_t + 1) / 2).clamp(0, 1), out["bpp"]


@torch.no_grad()
def validate(model: CDCModel, images: list[torch.Tensor], steps: int, kid: Callable | None = None) -> dict[str, float]:
    """Estimated bpp, PSNR and MS-SSIM (8-bit output) of the codec's decode of the validation images, decoded on
    the model's device."""
    from pytorch_msssim import ms_ssim

    model.eval()
    device = next(model.parameters()).device
    bpps, psnrs, msssims, recs = [], [], [], []
    for i, x in enumerate(images):
        x_hat, bpp = decode(model, x.to(device), steps, seed=i)
        x_hat = x_hat.mul(255).round().div(255).cpu()
        bpps.append(bpp.item())
        psnrs.append(10 * math.log10(1 / max(F.mse_loss(x_hat, x).item(), 1e-10)))
        msssims.append(ms_ssim(x_hat, x, data_range=1.0).item())
        recs.append(x_hat)
    row = {"bpp": sum(bpps) / len(bpps), "psnr": sum(psnrs) / len(psnrs), "ms_ssim": sum(msssims) / len(msssims)}
    if kid is not None:
        row["kid"] = kid(recs)
    return row


class _Phase:
    """Model, EMA and optimizer of one λ; rebuilt from the state on a resume."""

    def __init__(self, cfg: CDCJobConfig, index: int, name: str, lam: float) -> None:
        self.name, self.lam, self.device = name, lam, torch.device(cfg.device)
        with torch.random.fork_rng(devices=[]):  # its own seed: a resumed run's restored RNG is not consumed
            torch.manual_seed(cfg.seed * 1000 + index)
            model = CDCModel(cfg.architecture())
        path = init_file(cfg, lam)
        self.model = (load_cdc_weights(model, load_state_dict(path)) if path is not None else model).to(self.device)
        for name_, p in self.model.named_parameters():
            p.requires_grad_(cfg.joint or not name_.startswith(RATE_PATH))
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)

    def state(self) -> dict[str, Any]:
        return {"model": cpu_copy(self.model.state_dict()), "ema": cpu_copy(self.ema), "opt": self.opt.state_dict()}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.opt.load_state_dict(state["opt"])

    def ema_model(self) -> CDCModel:
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.ema)
        return model


def _train_step(cfg: CDCJobConfig, phase: _Phase, x: torch.Tensor, lr: float) -> dict[str, float] | None:
    phase.model.train()
    for group in phase.opt.param_groups:
        group["lr"] = lr
    with gpu_autocast(x):
        loss, parts = phase.model.training_loss(x * 2 - 1, phase.lam if cfg.joint else 0.0)
    phase.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(phase.params, 1.0)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        return None
    phase.opt.step()
    return parts


def train_cdc(cfg: CDCJobConfig, job: str = "cdc", jobs_dir: Path = DEFAULT_JOBS_DIR, minutes: float | None = None,
              photos_dir: Path | None = None, until_step: int | None = None, log: Log = print) -> Path:
    """Run (or continue) the job through its phases, or until ``until_step`` (over all phases) or ``minutes``
    of wall time; returns the job folder. SIGTERM / SIGINT save the state and stop."""
    if not cfg.joint and not cfg.init_dir:  # before the job folder exists: a wrong command leaves nothing
        raise ValueError("the decoder recipe (joint=False) trains on a frozen rate path: give init_dir")
    folder = Path(jobs_dir) / job
    state = open_job(folder, {"stage": "cdc", **cfg.to_dict()})
    torch.set_num_threads(cfg.threads)
    train_paths, val_paths, data, val_images = job_data(photos_dir, cfg.crop, cfg.seed)
    torch.manual_seed(cfg.seed)
    plan = cfg.phases()
    starts = [i * cfg.steps for i in range(len(plan))]
    total = len(plan) * cfg.steps
    train_log, val_log = CsvLog(folder / "train.csv"), CsvLog(folder / "val.csv")
    recorder = StepRecorder(train_log, job, log, row_every=50, print_every=250)
    if state is not None:
        step, finished, logs, parents = int(state["step"]), state["finished"], list(state["phase_logs"]), state["parents"]
        watch = resume_clock(state, step, data, (train_log, val_log), job, log)
    else:
        step, finished, logs, parents, watch = 0, {}, [], _parents(cfg), Stopwatch()
        log(f"[{job}] new job: {len(train_paths)} training photos, {len(val_paths)} validation photos held out; "
            f"{'joint' if cfg.joint else 'decoder (rate path frozen)'} recipe")
    stop = {"now": False}

    def on_signal(signum, frame):  # finish the current step, save, exit
        stop["now"] = True

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = time.time() + minutes * 60 if minutes else math.inf
    last = min(total, until_step) if until_step is not None else total
    kid_probe: list = []

    def kid() -> Callable | None:
        if not kid_probe:
            try:
                kid_probe.append(KidProbe(val_images))
            except Exception as exc:  # Inception weights missing: the curve goes on without KID
                log(f"[{job}] KID skipped: {exc}")
                kid_probe.append(None)
        return kid_probe[0]

    def validate_row(phase: _Phase, with_kid: bool) -> None:
        row = validate(phase.ema_model(), val_images, cfg.val_steps, kid() if with_kid else None)
        val_log.append({"step": step, "cpu_hours": round(watch.cpu_s / 3600, 4), "series": phase.name, **row})
        log(f"[{job}] val step {step} {phase.name}: {row['bpp']:.3f} bpp, {row['psnr']:.2f} dB"
            + (f", KID {row['kid']:.4f}" if "kid" in row else ""))
        plot_curves(folder, f"{job}: CDC-{cfg.arch}, validation on {len(val_images)} held-out photos (EMA, "
                            f"{cfg.val_steps} DDIM steps)")

    def save(phase: _Phase, phase_done: bool, phase_cpu0: float) -> None:
        atomic_torch_save({"step": step, "cpu_s": watch.cpu_s, "wall_s": watch.wall_s,
                           "torch_rng": torch.get_rng_state(), "data_rng": data.state(), "finished": finished,
                           "phase_logs": logs, "parents": parents, "phase_name": None if phase_done else phase.name,
                           "phase_cpu0": phase_cpu0, "phase": None if phase_done else phase.state(),
                           "train_photos": [p.name for p in train_paths], "val_photos": [p.name for p in val_paths]},
                          folder / "state.pt")

    try:
        index = step // cfg.steps
        phase: _Phase | None = None
        saved_step = step
        while index < len(plan) and step < last and not stop["now"] and time.time() < deadline:
            name, lam, steps = plan[index]
            if phase is None or phase.name != name:
                phase = _Phase(cfg, index, name, lam)
                phase_cpu0, last_save = watch.cpu_s, time.time()
                recorder.start_phase()
                if state is not None and state.get("phase_name") == name:
                    phase.restore(state["phase"])  # resumed mid-phase: its CPU clock started before
                    phase_cpu0 = float(state["phase_cpu0"])
                elif step == starts[index]:
                    validate_row(phase, with_kid=True)  # the starting checkpoint's numbers
                state = None
            in_phase = step - starts[index]
            lr = cfg.lr * (0.1 if in_phase >= cfg.decay_at * steps else 1.0)
            parts = _train_step(cfg, phase, data.sample(cfg.batch).to(cfg.device, non_blocking=True), lr)
            if parts is None:
                recorder.skip()
                continue
            step += 1
            ema_update(phase.ema, phase.model, cfg.ema_decay, step - starts[index])
            recorder.record(step, parts, watch.cpu_s, lr, phase=name)
            phase_done = step == starts[index] + steps
            if phase_done or (step - starts[index]) % cfg.val_every == 0:
                validate_row(phase, with_kid=phase_done)
            if phase_done:
                logs.append({"name": name, "steps": steps, "cpu_seconds": round(watch.cpu_s - phase_cpu0, 1)})
                finished[f"{lam:g}"] = cpu_copy(phase.ema)
                index += 1
            if phase_done or time.time() - last_save > cfg.save_every_s:
                save(phase, phase_done, phase_cpu0)
                last_save, saved_step = time.time(), step
        if phase is not None and saved_step != step:
            save(phase, False, phase_cpu0)
        log(f"[{job}] stopped at step {step} of {total} ({watch.cpu_s / 3600:.2f} CPU-h); finished λ: "
            f"{', '.join(finished) or 'none'}; state in {folder / 'state.pt'}")
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return folder


def export_cdc(job_dir: Path, out: Path) -> list[Path]:
    """Every finished λ's EMA weights as a bundled fp16 checkpoint (``cdc-tiny-l0p003`` ...)."""
    job_dir = Path(job_dir)
    cfg = json.loads((job_dir / "config.json").read_text())
    state = torch.load(job_dir / "state.pt", map_location="cpu", weights_only=True)
    if not state["finished"]:
        raise ValueError(f"{job_dir} has no finished λ yet (step {state['step']}): train on")
    val = CsvLog(job_dir / "val.csv").rows()
    arch = ARCHITECTURES[cfg["arch"]]()
    written = []
    for key, weights in state["finished"].items():
        lam = float(key)
        phase = next(p for p in state["phase_logs"] if p["name"] == f"ft@{key}")
        parent = state["parents"].get(key, {})
        cpu_h = phase["cpu_seconds"] / 3600
        series = [{k: v if k == "series" else int(v) if k == "step" else float(v) for k, v in r.items() if v != ""}
                  for r in val if r.get("series") == phase["name"]]
        model = CDCModel(arch)
        model.load_state_dict(weights)
        manifest = {
            "codec": "cdc",
            "variant": f"{cfg['arch']} (rdp-bench), NOT the official CDC weights",
            "config": arch.to_dict(),
            "lambda": lam,
            "objective": ("CDC rho=0: min(SNR,5)-weighted x0-MSE on [-1,1] images"
                          + (" + lambda*bpp + prior median loss, all parts trained" if cfg["joint"] else
                             "; analysis transform and hyperprior frozen, so the rate is the parent's")),
            "perceptual_term": "none (rho=0)",
            "training": {
                "steps": phase["steps"], "cpu_hours": round(cpu_h, 3), "phases": [phase], "device": cfg["device"],
                "data": f"{cfg['crop']}px random crops with flips, batch {cfg['batch']}, of "
                        f"{len(state['train_photos'])} shared photos",
                "train_photos": state["train_photos"], "validation_photos": state["val_photos"],
                "held_out": "this job never trains on the validation photos or the bundled samples images"
                            + ("; its warm-start parent may have (the first bundled checkpoints trained on "
                               "crops of every shared photo but samples)" if parent else ""),
                "job_config": cfg,
                "validation": {"first": series[:1], "last": series[-1:]},
                **({"warm_start": parent, "total_steps": parent["steps"] + phase["steps"],
                    "total_cpu_hours": round(parent["cpu_hours"] + cpu_h, 3)} if parent else {}),
            },
            "note": "Tiny CDC (the official module layout, small widths), CPU-trained: not the paper's model.",
            "license": "MIT (trained by rdp-bench on the photos listed in shared/photos/manifest.csv)",
        }
        written.append(save_checkpoint(trainable_state_dict(model), Path(out) / weight_name(lam), manifest))
    return written


__all__ = ["CDCJobConfig", "DEFAULT_LAMBDAS", "decode", "export_cdc", "train_cdc", "trainable_state_dict",
           "validate", "weight_name"]
