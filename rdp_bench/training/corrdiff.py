"""Stage 2 of the bundled CorrDiff: the score network on the frozen hyperprior (``corrdiff_net``).

The compressor and the privileged decoder D are the bundled ``hyperprior`` checkpoint (stage 1,
``training/hyperprior.py``), frozen. Every step crops training photos, codes them at a rate level drawn
per image (real rounding, as the decoder sees ŷ), and trains the score network on CDC's x0 objective
conditioned on D's features. Validation decodes the held-out crops at two levels in all three modes
(D(ŷ) alone, plain DDIM, corrected DDIM with γ solved per step), so the curve shows the
distortion-perception ordering as it forms: PSNR e2e ≥ corrected ≥ diffusion-only, KID the other way.

``rdp-bench train corrdiff`` runs it as a resumable job (``training/job.py``): the same command
continues a killed or timed-out run; ``--export`` writes the EMA weights as the bundled checkpoint.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch

from rdp_bench.codecs.corrdiff_net import ScoreNet, ScoreNetConfig, privileged_decoder
from rdp_bench.training.configs import HYPERPRIOR_CHECKPOINT, ScoreJobConfig  # re-exported: their old home
from rdp_bench.training.job import (DEFAULT_JOBS_DIR, CsvLog, job_data, resume_clock, Log, Stopwatch,
                                    atomic_torch_save, ema_update, gpu_autocast, open_job, plot_curves,
                                    record_parent, warm_start_lineage, StepRecorder)

MODES = ("e2e", "corrected", "diffusion-only")


def load_compressor(path: Path):
    """The frozen hyperprior (eval mode, no gradients) and its manifest."""
    from rdp_bench.codecs.checkpoints import load_state_dict, read_manifest
    from rdp_bench.codecs.gained_hyperprior import GainedHyperpriorConfig, GainedMeanScaleHyperprior

    manifest = read_manifest(path)
    model = GainedMeanScaleHyperprior(GainedHyperpriorConfig.from_dict(manifest["config"]))
    model.load_state_dict(load_state_dict(path, expected_sha256=manifest["sha256"]))
    model.eval().requires_grad_(False)
    return model, manifest


@torch.no_grad()
def decode_latents(compressor, x: torch.Tensor, level: torch.Tensor):
    """D's output and features for images in [0, 1], with ŷ rounded as the real decoder sees it."""
    return privileged_decoder(compressor.g_s, compressor(x, level)["y_dec"])


@torch.no_grad()
def validate(net: ScoreNet, compressor, images: list[torch.Tensor], levels: list[int], steps: int,
             kid: Any = None) -> list[dict[str, Any]]:
    """Per level and mode: PSNR (and KID when ``kid`` is given) of the validation crops."""
    from rdp_bench.codecs.corrdiff_parts import Float16Gamma, corrected_sample
    from rdp_bench.codecs.diffusion.sampler import DDIMSampler

    net.eval()
    sampler = DDIMSampler(net.train_alphas_cumprod, steps)
    rows = []
    for lv in levels:
        recs: dict[str, list[torch.Tensor]] = {m: [] for m in MODES}
        for k, x in enumerate(images):
            decoded = decode_latents(compressor, x, torch.tensor([lv]))
            x0_e = decoded.x0_e.clamp(-1, 1)
            context = net.context(decoded)
            denoiser = lambda x_t, t: net(x_t, sampler.time_input(t, 1, "cpu"), context)  # noqa: E731
            noise = sampler.initial_noise(x0_e.shape, 1000 + k, 0.8)
            target = x * 2 - 1
            recs["e2e"].append(x0_e)
            recs["corrected"].append(corrected_sample(denoiser, x0_e, sampler, noise, target=target,
                                                      quantizer=Float16Gamma()).image)
            recs["diffusion-only"].append(corrected_sample(denoiser, x0_e, sampler, noise,
                                                           gammas=torch.zeros(1, steps, 1)).image)
        for mode in MODES:
            outs = [((r + 1) / 2).clamp(0, 1).mul(255).round().div(255) for r in recs[mode]]
            psnr = sum(10 * math.log10(1 / max(torch.mean((o - x) ** 2).item(), 1e-10))
                       for o, x in zip(outs, images)) / len(images)
            row = {"series": f"q{lv + 1} {mode}", "level": lv, "mode": mode, "psnr": psnr}
            if kid is not None:
                row["kid"] = kid(outs)
            rows.append(row)
    return rows


def _warm_start(net: ScoreNet, path: Path, compressor_path: Path) -> str:
    """Weights of a bundled score-net checkpoint of the same architecture. It may come from an earlier
    version of this compressor (same config, e.g. before a continued stage 1): the residual it learnt is
    the best start there is, and the new job's export pins the new compressor. Returns a note for the log."""
    from rdp_bench.codecs.checkpoints import file_sha256, load_state_dict, read_manifest

    manifest = read_manifest(path)
    if ScoreNetConfig.from_dict(manifest["config"]) != net.config:
        raise ValueError(f"{path} is a {manifest['config']} network, the job trains {net.config.to_dict()}")
    net.load_state_dict(load_state_dict(path, expected_sha256=manifest["sha256"]))
    if manifest["compressor"]["sha256"] == file_sha256(compressor_path):
        return "same compressor"
    if list(manifest["compressor"]["lambdas"]) != list(read_manifest(compressor_path)["config"]["lambdas"]):
        raise ValueError(f"{path} was trained on a compressor with other rate points than {compressor_path}")
    return f"trained on another version of the compressor ({manifest['compressor']['sha256'][:12]}…): fine-tuning"


def train_score(cfg: ScoreJobConfig, job: str = "corrdiff", jobs_dir: Path = DEFAULT_JOBS_DIR,
                minutes: float | None = None, photos_dir: Path | None = None, until_step: int | None = None,
                log: Log = print) -> Path:
    """Run (or continue) the job until ``cfg.max_steps`` (or ``until_step``) or ``minutes`` of wall time;
    returns the job folder. SIGTERM / SIGINT stop it at the next step boundary after saving."""
    from rdp_bench.codecs.checkpoints import file_sha256, read_manifest
    from rdp_bench.training.job import KidProbe

    folder = Path(jobs_dir) / job
    compressor_path = Path(cfg.compressor)
    lambdas = read_manifest(compressor_path)["config"]["lambdas"]
    if not set(cfg.val_lambdas) <= set(lambdas):  # before open_job: a wrong command leaves no job folder
        raise ValueError(f"the compressor has no rate level at every validation λ {list(cfg.val_lambdas)}: its "
                         f"levels are {lambdas}")
    val_levels = [lambdas.index(lam) for lam in cfg.val_lambdas]
    state = open_job(folder, {"stage": "corrdiff-score", **cfg.to_dict(),
                              "compressor_sha256": file_sha256(compressor_path)})
    torch.set_num_threads(cfg.threads)
    train_paths, val_paths, data, val_images = job_data(photos_dir, cfg.crop, cfg.seed)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    compressor, _ = load_compressor(compressor_path)
    compressor.to(device)
    net = ScoreNet(cfg.net_config(compressor.config.N))
    if cfg.init and state is None:
        note = _warm_start(net, Path(cfg.init), compressor_path)
        record_parent(folder, cfg.init)
        log(f"[{job}] warm start from {cfg.init} ({note})")
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    step, watch, val_count = 0, Stopwatch(), 0
    train_log, val_log = CsvLog(folder / "train.csv"), CsvLog(folder / "val.csv")
    recorder = StepRecorder(train_log, job, log)
    if state is not None:
        net.load_state_dict(state["model"])
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["opt"])
        step, val_count = int(state["step"]), int(state["val_count"])
        watch = resume_clock(state, step, data, (train_log, val_log), job, log)
    else:
        log(f"[{job}] new job: {len(train_paths)} training photos, {len(val_paths)} validation photos held out; "
            f"score net {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")

    def save() -> None:
        atomic_torch_save({"model": {k: v.cpu() for k, v in net.state_dict().items()},
                           "ema": {k: v.cpu() for k, v in ema.items()}, "opt": opt.state_dict(), "step": step,
                           "val_count": val_count, "cpu_s": watch.cpu_s, "wall_s": watch.wall_s,
                           "torch_rng": torch.get_rng_state(), "data_rng": data.state(),
                           "train_photos": [p.name for p in train_paths],
                           "val_photos": [p.name for p in val_paths]}, folder / "state.pt")

    stop = {"now": False}

    def on_signal(signum, frame):  # finish the current step, save, exit
        stop["now"] = True

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = time.time() + minutes * 60 if minutes else math.inf
    last_save = time.time()
    kid_probe = None
    levels = compressor.config.levels
    try:
        last = min(cfg.max_steps, until_step) if until_step is not None else cfg.max_steps
        while step < last and not stop["now"] and time.time() < deadline:
            net.train()
            lr = cfg.lr * (0.1 if step >= cfg.decay_at * cfg.max_steps else 1.0)
            for group in opt.param_groups:
                group["lr"] = lr
            x = data.sample(cfg.batch).to(device, non_blocking=True)
            level = torch.randint(0, levels, (cfg.batch,)).to(device)
            decoded = decode_latents(compressor, x, level)
            with gpu_autocast(x):
                loss, parts = net.training_loss(x * 2 - 1, decoded)
            opt.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                recorder.skip()
                continue
            opt.step()
            step += 1
            ema_update(ema, net, cfg.ema_decay, step)
            recorder.record(step, parts, watch.cpu_s, lr)
            if step % cfg.val_every == 0:
                val_count += 1
                with_kid = bool(cfg.kid_every) and val_count % cfg.kid_every == 0
                if with_kid and kid_probe is None:
                    try:
                        kid_probe = KidProbe(val_images)
                    except Exception as exc:  # Inception weights missing: the curve goes on without KID
                        log(f"[{job}] KID skipped: {exc}")
                        with_kid = False
                ema_net = copy.deepcopy(net).to("cpu")
                ema_net.load_state_dict({k: v.cpu() for k, v in ema.items()})
                rows = validate(ema_net, copy.deepcopy(compressor).to("cpu"), val_images, val_levels,
                                cfg.val_steps, kid_probe if with_kid else None)
                for r in rows:
                    val_log.append({"step": step, "cpu_hours": round(watch.cpu_s / 3600, 4), **r})
                log(f"[{job}] val step {step}: " + "  ".join(
                    f"{r['series']} {r['psnr']:.2f}dB" + (f"/KID {r['kid']:.4f}" if "kid" in r else "") for r in rows))
                plot_curves(folder, f"{job}: CorrDiff score network on the frozen hyperprior, validation on "
                                    f"{len(val_images)} held-out photos (EMA, {cfg.val_steps} DDIM steps)")
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


def export_score(job_dir: Path, out: Path, label: str) -> Path:
    """The job's EMA weights as a bundled fp16 checkpoint (``out/<label>.safetensors`` + manifest)."""
    import json

    from rdp_bench.codecs.checkpoints import read_manifest, save_checkpoint

    cfg = json.loads((Path(job_dir) / "config.json").read_text())
    state = torch.load(Path(job_dir) / "state.pt", map_location="cpu", weights_only=True)
    compressor = read_manifest(cfg["compressor"])
    if compressor["sha256"] != cfg["compressor_sha256"]:
        raise ValueError(f"{cfg['compressor']} changed since the job started; export needs the compressor it "
                         "was trained on")
    val = [r for r in CsvLog(Path(job_dir) / "val.csv").rows() if int(r["step"]) <= int(state["step"])]
    last_step = max((int(r["step"]) for r in val), default=None)
    net_config = ScoreNetConfig(widths=tuple(cfg["widths"]), blocks=cfg["blocks"],
                                decoder_channels=compressor["config"]["N"])
    manifest = {
        "codec": "corrdiff", "label": label,
        "architecture": "residual score UNet on D(ŷ) and g_s features (rdp_bench.codecs.corrdiff_net)",
        "config": net_config.to_dict(),
        "compressor": {"file": compressor["file"], "sha256": compressor["sha256"],
                       "lambdas": compressor["config"]["lambdas"]},
        "objective": "CDC x0 loss min(SNR,5)*||x - x0_hat||^2, frozen compressor, rate level drawn per image",
        "training": {
            "steps": int(state["step"]), "cpu_hours": round(float(state["cpu_s"]) / 3600, 3),
            "wall_hours": round(float(state["wall_s"]) / 3600, 3), "device": cfg.get("device", "cpu"),
            "data": f"{cfg['crop']}px random crops with flips of {len(state['train_photos'])} shared photos",
            "train_photos": state["train_photos"], "validation_photos": state["val_photos"],
            "held_out": "the validation photos and the bundled samples images are never trained on",
            "batch": cfg["batch"], "lr": cfg["lr"], "ema_decay": cfg["ema_decay"], "job_config": cfg,
            "last_validation": [r for r in val if last_step is not None and int(r["step"]) == last_step],
            **warm_start_lineage(job_dir, cfg.get("init", ""), int(state["step"]), float(state["cpu_s"]) / 3600),
        },
    }
    net = ScoreNet(net_config)
    net.load_state_dict(state["ema"])
    return save_checkpoint(net.state_dict(), Path(out) / f"{label}.safetensors", manifest)


def adopt_grown_compressor(score_path: Path, previous: Path, compressor_path: Path = HYPERPRIOR_CHECKPOINT
                           ) -> dict[str, Any]:
    """Point a score network's manifest at ``compressor_path`` when it is the network's own compressor (the file
    ``previous``, e.g. taken from git) grown by ``train autoencoder --add-lambdas``: new rate levels, every old
    weight bit-identical, so the codec serves the new levels. The weights decide, not the manifests: every tensor
    but the gains must equal the old compressor's, and so must the gain rows of the old levels. Returns the new
    manifest (also written beside the score file)."""
    import json

    from rdp_bench.codecs.checkpoints import file_sha256, load_state_dict, manifest_path, read_manifest

    score_manifest = read_manifest(score_path)
    old_entry, new = score_manifest["compressor"], read_manifest(compressor_path)
    if new["sha256"] == old_entry["sha256"]:
        raise ValueError(f"{Path(score_path).name} already uses {Path(compressor_path).name}")
    if file_sha256(previous) != old_entry["sha256"]:
        raise ValueError(f"{previous} is not the compressor {Path(score_path).name} was trained on "
                         f"(sha256 {old_entry['sha256'][:12]}…)")
    old_weights, new_weights = load_state_dict(previous, dtype=None), load_state_dict(compressor_path, dtype=None)
    lambdas = new["config"]["lambdas"]
    if not set(old_entry["lambdas"]) <= set(lambdas):
        raise ValueError(f"{Path(compressor_path).name} lacks rate levels of the old compressor: "
                         f"{old_entry['lambdas']}")
    old_levels = [lambdas.index(lam) for lam in old_entry["lambdas"]]
    for key, value in old_weights.items():
        grown = new_weights[key][old_levels] if key in ("gain", "inv_gain") else new_weights.get(key)
        if grown is None or grown.shape != value.shape or not torch.equal(grown, value):
            raise ValueError(f"{Path(compressor_path).name} changed {key} of the old levels: train the score "
                             "network on it instead")
    score_manifest["compressor"] = {"file": new["file"], "sha256": new["sha256"], "lambdas": lambdas,
                                    "trained_lambdas": old_entry.get("trained_lambdas", old_entry["lambdas"]),
                                    "previous": old_entry}
    manifest_path(score_path).write_text(json.dumps(score_manifest, indent=2) + "\n")
    return score_manifest


__all__ = ["ScoreJobConfig", "adopt_grown_compressor", "export_score", "load_compressor", "train_score", "validate"]
