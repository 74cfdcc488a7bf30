"""Stage 1 of the bundled CorrDiff: the shared MSE autoencoder (compressor + privileged decoder D).

CorrDiff's corrected output mixes the diffusion estimate x̂0 with D(ŷ) at the MSE optimum, so its PSNR
is bounded by D(ŷ): this stage deserves the first and longest training. The model is a variable-rate
mean-scale hyperprior (``GainedMeanScaleHyperprior``): every step draws a rate level per image and
minimises ``λ_l · 255² · MSE + bpp`` (CompressAI's MSE objective, with its λ values).

``rdp-bench train autoencoder`` runs it as a resumable job (``training/job.py``): the same command
continues a killed or timed-out run from ``state.pt``; ``--export`` writes the EMA weights as a
bundled fp16 safetensors checkpoint with a manifest.

``--add-lambdas`` grows a trained checkpoint by new rate levels (``with_levels``) and trains only their gain and
inv_gain rows, drawing only the new levels: every existing level then codes exactly as before.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rdp_bench.codecs.gained_hyperprior import (DEFAULT_LAMBDAS, GainedHyperpriorConfig, GainedMeanScaleHyperprior,
                                                with_levels)
from rdp_bench.training.configs import AutoencoderJobConfig  # re-exported: the config's old home
from rdp_bench.training.job import (DEFAULT_JOBS_DIR, CsvLog, job_data, resume_clock, KidProbe, Log,
                                    Stopwatch, atomic_torch_save, cpu_copy, ema_update, ema_weight, gpu_autocast,
                                    open_job, plot_curves, record_parent, warm_start_lineage, StepRecorder)


def job_lambdas(folder: Path, init: str) -> tuple[float, ...]:
    """The levels a job starts from (``AutoencoderJobConfig.lambdas``): those its ``config.json`` recorded (on a
    resume the init file may since have been overwritten by an export), else the init checkpoint's, else the
    defaults."""
    import json

    from rdp_bench.codecs.checkpoints import read_manifest

    recorded = Path(folder) / "config.json"
    if recorded.is_file():
        return tuple(json.loads(recorded.read_text())["lambdas"])
    return tuple(read_manifest(init)["config"]["lambdas"]) if init else DEFAULT_LAMBDAS


def rate_distortion_loss(model: GainedMeanScaleHyperprior, x: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    with gpu_autocast(x):
        out = model(x, level)
    n_pix = x.shape[-2] * x.shape[-1]
    bpp = sum(-torch.log2(lk).sum(dim=(1, 2, 3)) for lk in out["likelihoods"].values()) / n_pix
    mse = (out["x_hat"] - x).square().mean(dim=(1, 2, 3))
    loss = (model.lambdas_for(level) * 255.0 ** 2 * mse + bpp).mean()
    return loss, {"bpp": bpp.mean().item(), "psnr": (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()}


@torch.no_grad()
def validate(model: GainedMeanScaleHyperprior, images: list[torch.Tensor], levels: list[int],
             kid_levels: list[int] = (), kid: "KidProbe | None" = None) -> list[dict[str, Any]]:
    """Per level: estimated bpp, PSNR and MS-SSIM on the validation crops (eval mode: rounded latents)."""
    from pytorch_msssim import ms_ssim

    model.eval()
    rows = []
    for lv in levels:
        bpps, psnrs, msssims, recs = [], [], [], []
        for x in images:
            out = model(x, torch.tensor([lv]))
            x_hat = out["x_hat"].clamp(0, 1)
            bits = sum(-torch.log2(lk).sum() for lk in out["likelihoods"].values())
            bpps.append(bits.item() / (x.shape[-2] * x.shape[-1]))
            x_hat_q = x_hat.mul(255).round().div(255)
            psnrs.append(10 * math.log10(1 / max(F.mse_loss(x_hat_q, x).item(), 1e-10)))
            msssims.append(ms_ssim(x_hat_q, x, data_range=1.0).item())
            recs.append(x_hat_q)
        row = {"level": lv, "lambda": model.config.lambdas[lv], "bpp": sum(bpps) / len(bpps),
               "psnr": sum(psnrs) / len(psnrs), "ms_ssim": sum(msssims) / len(msssims)}
        if kid is not None and lv in kid_levels:
            row["kid"] = kid(recs)
        rows.append(row)
    return rows


def _warm_start(cfg: AutoencoderJobConfig) -> GainedMeanScaleHyperprior:
    """The bundled checkpoint ``cfg.init`` (the job's architecture), with ``cfg.add_lambdas``' levels added."""
    from rdp_bench.codecs.checkpoints import load_state_dict, read_manifest

    config = GainedHyperpriorConfig.from_dict(read_manifest(cfg.init)["config"])
    expected = GainedHyperpriorConfig(cfg.N, cfg.M, tuple(cfg.lambdas))
    if config != expected:
        raise ValueError(f"{cfg.init} is a {config} model, the job trains {expected}")
    model = GainedMeanScaleHyperprior(config)
    model.load_state_dict(load_state_dict(cfg.init))
    return with_levels(model, cfg.add_lambdas) if cfg.add_lambdas else model


def _optimizers(model: GainedMeanScaleHyperprior, cfg: AutoencoderJobConfig):
    """(main optimizer, aux optimizer or None, the main optimizer's parameters)."""
    if cfg.add_lambdas:
        # Gains only: the other levels' rows get exactly zero gradient (they are never drawn), so Adam leaves them
        # bit-identical; no aux step, so the entropy bottleneck's quantiles stay the parent's too.
        model.requires_grad_(False)
        gains = [model.gain.requires_grad_(True), model.inv_gain.requires_grad_(True)]
        return torch.optim.Adam(gains, lr=cfg.lr), None, gains
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    return torch.optim.Adam(main, lr=cfg.lr), torch.optim.Adam(aux, lr=cfg.lr_aux), main


def _ema_rows(ema: dict[str, torch.Tensor], model: GainedMeanScaleHyperprior, levels: list[int], decay: float,
              step: int) -> None:
    """A gains-only job's EMA: only the trained rows are averaged, every other weight stays the parent's bit for bit."""
    d = ema_weight(decay, step)
    with torch.no_grad():
        for name in ("gain", "inv_gain"):
            ema[name][levels] = ema[name][levels] * d + getattr(model, name)[levels] * (1 - d)


def train_autoencoder(cfg: AutoencoderJobConfig, job: str = "autoencoder", jobs_dir: Path = DEFAULT_JOBS_DIR,
                      minutes: float | None = None, photos_dir: Path | None = None, until_step: int | None = None,
                      log: Log = print) -> Path:
    """Run (or continue) the job until ``cfg.max_steps`` (or ``until_step``) or ``minutes`` of wall time;
    returns the job folder.

    SIGTERM / SIGINT stop it at the next step boundary after saving the state."""

    folder = Path(jobs_dir) / job
    if cfg.add_lambdas and not cfg.init:
        raise ValueError("--add-lambdas adds levels to a trained checkpoint: give it with --init")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    # before open_job, so that a bad --init or --add-lambdas leaves no job folder to refuse the corrected command
    parent = _warm_start(cfg) if cfg.init and not (folder / "state.pt").is_file() else None
    state = open_job(folder, {"stage": "autoencoder", **cfg.to_dict()})
    train_paths, val_paths, data, val_images = job_data(photos_dir, cfg.crop, cfg.seed)
    device = torch.device(cfg.device)
    model = GainedMeanScaleHyperprior(cfg.model_config()) if parent is None else parent
    if parent is not None:
        record_parent(folder, cfg.init)
        added = f", levels added at λ {', '.join(map(str, sorted(cfg.add_lambdas)))}" if cfg.add_lambdas else ""
        log(f"[{job}] warm start from {cfg.init}{added}")
    model.to(device)
    opt, opt_aux, main_params = _optimizers(model, cfg)
    trained = cfg.trained_levels()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    step, watch, val_count = 0, Stopwatch(), 0
    train_log, val_log = CsvLog(folder / "train.csv"), CsvLog(folder / "val.csv")
    recorder = StepRecorder(train_log, job, log)
    if state is not None:
        model.load_state_dict(state["model"])
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["opt"])
        if opt_aux is not None:
            opt_aux.load_state_dict(state["opt_aux"])
        step, val_count = int(state["step"]), int(state["val_count"])
        watch = resume_clock(state, step, data, (train_log, val_log), job, log)
    else:
        log(f"[{job}] new job: {len(train_paths)} training photos, {len(val_paths)} validation photos held out")

    def save() -> None:
        atomic_torch_save({"model": cpu_copy(model.state_dict()), "ema": cpu_copy(ema), "opt": opt.state_dict(),
                           "opt_aux": opt_aux.state_dict() if opt_aux is not None else {},
                           "step": step, "val_count": val_count,
                           "cpu_s": watch.cpu_s, "wall_s": watch.wall_s, "torch_rng": torch.get_rng_state(),
                           "data_rng": data.state(), "train_photos": [p.name for p in train_paths],
                           "val_photos": [p.name for p in val_paths]}, folder / "state.pt")

    stop = {"now": False}

    def on_signal(signum, frame):  # finish the current step, save, exit
        stop["now"] = True

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = time.time() + minutes * 60 if minutes else math.inf
    last_save = time.time()
    kid_probe: KidProbe | None = None
    levels = cfg.validation_levels()
    try:
        last = min(cfg.max_steps, until_step) if until_step is not None else cfg.max_steps
        while step < last and not stop["now"] and time.time() < deadline:
            model.train()
            lr = cfg.lr * (0.1 if step >= cfg.decay_at * cfg.max_steps else 1.0)
            for group in opt.param_groups:
                group["lr"] = lr
            x = data.sample(cfg.batch).to(device, non_blocking=True)
            level = torch.tensor(trained)[torch.randint(0, len(trained), (cfg.batch,))].to(device)
            loss, parts = rate_distortion_loss(model, x, level)
            opt.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(main_params, 1.0)
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                # one bad batch must not poison the weights (a warm-started run went NaN at step ~750)
                recorder.skip()
                continue
            opt.step()
            losses = {"loss": loss.item()}
            if opt_aux is not None:
                aux = model.aux_loss()
                opt_aux.zero_grad()
                aux.backward()
                opt_aux.step()
                losses["loss_aux"] = aux.item()
            step += 1
            if cfg.add_lambdas:
                _ema_rows(ema, model, trained, cfg.ema_decay, step)
            else:
                ema_update(ema, model, cfg.ema_decay, step)
            recorder.record(step, {**losses, **parts}, watch.cpu_s, lr)
            if step % cfg.val_every == 0:
                val_count += 1
                with_kid = cfg.kid_every and val_count % cfg.kid_every == 0
                if with_kid and kid_probe is None:
                    try:
                        kid_probe = KidProbe(val_images)
                    except Exception as exc:  # Inception weights missing: the curve goes on without KID
                        log(f"[{job}] KID skipped: {exc}")
                        with_kid = False
                ema_model = copy.deepcopy(model).to("cpu")
                ema_model.load_state_dict({k: v.cpu() for k, v in ema.items()})
                rows = validate(ema_model, val_images, levels, [levels[0], levels[-1]] if with_kid else [],
                                kid_probe if with_kid else None)
                for r in rows:
                    val_log.append({"step": step, "cpu_hours": round(watch.cpu_s / 3600, 4), **r})
                log(f"[{job}] val step {step}: " + "  ".join(f"L{r['level']} {r['bpp']:.3f}bpp/{r['psnr']:.2f}dB"
                                                           for r in rows))
                plot_curves(folder, f"{job}: variable-rate mean-scale hyperprior N={cfg.N} M={cfg.M}, validation "
                                    f"on {len(val_images)} held-out photos (EMA)")
            if time.time() - last_save > cfg.save_every_s:
                save()
                last_save = time.time()
        save()
        log(f"[{job}] stopped at step {step} ({watch.cpu_s / 3600:.2f} CPU-h, {watch.wall_s / 3600:.2f} wall-h); "
            f"state in {folder / 'state.pt'}")
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return folder


def export_autoencoder(job_dir: Path, out: Path, label: str) -> Path:
    """The job's EMA weights as a bundled fp16 checkpoint (``out/<label>.safetensors`` + manifest)."""
    import json

    from rdp_bench.codecs.checkpoints import save_checkpoint

    cfg = json.loads((Path(job_dir) / "config.json").read_text())
    job_cfg = AutoencoderJobConfig.from_dict(cfg)
    state = torch.load(Path(job_dir) / "state.pt", map_location="cpu", weights_only=True)
    val = [r for r in CsvLog(Path(job_dir) / "val.csv").rows() if int(r["step"]) <= int(state["step"])]
    last_step = max((int(r["step"]) for r in val), default=None)
    added = {}
    if job_cfg.add_lambdas:
        added = {"added_levels": {
            "lambdas": sorted(job_cfg.add_lambdas), "levels": job_cfg.trained_levels(),
            "recipe": "gains only: the added levels' gain/inv_gain rows, started log-linear in log lambda from the "
                      "nearest two levels, trained on those levels alone; every other weight is the parent's"}}
    manifest = {
        "codec": "gained-hyperprior", "label": label,
        "architecture": "CompressAI mbt2018-mean layout + per-level gain/inv_gain (Cui et al. 2021)",
        "config": job_cfg.model_config().to_dict(),
        "objective": "lambda_l*255^2*MSE + bpp per image, level l drawn uniformly per image "
                     + ("among the added levels" if added else "(CompressAI's lambdas)"),
        "training": {
            "steps": int(state["step"]), "cpu_hours": round(float(state["cpu_s"]) / 3600, 3),
            "wall_hours": round(float(state["wall_s"]) / 3600, 3), "device": cfg.get("device", "cpu"),
            "data": f"{cfg['crop']}px random crops with flips of {len(state['train_photos'])} shared photos",
            "train_photos": state["train_photos"], "validation_photos": state["val_photos"],
            "held_out": "the validation photos and the bundled samples images are never trained on",
            "batch": cfg["batch"], "lr": cfg["lr"], "ema_decay": cfg["ema_decay"], "job_config": cfg,
            "last_validation": [r for r in val if last_step is not None and int(r["step"]) == last_step],
            **warm_start_lineage(job_dir, cfg.get("init", ""), int(state["step"]), float(state["cpu_s"]) / 3600),
            **added,
        },
    }
    model = GainedMeanScaleHyperprior(job_cfg.model_config())
    model.load_state_dict(state["ema"])
    return save_checkpoint(model.state_dict(), Path(out) / f"{label}.safetensors", manifest)
