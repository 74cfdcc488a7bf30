"""Training CorrDiff's bundled ``tiny`` checkpoints (CPU-friendly recipe).

Phase 1 (the paper: compressor + score network, diffusion loss + λ·rate) is CDC's training; it is not
repeated here. We start from a trained tiny CDC checkpoint (``rdp_bench/weights/cdc/``) of the same λ
and record its file and sha256 in the manifest.

Phase 2 (the paper: the full model, end-to-end decoder included, rate + distortion on the corrected
reconstruction), in two stages:

* 2a -- warm-up of compressor + privileged decoder D as an MSE autoencoder, ``λ·bpp + MSE(D(ŷ), x)``
  (cheap: no UNet). Needed because a briefly trained CDC tends to leave ŷ nearly empty (the diffusion
  loss alone is low without any information from the latent), and D can only correct with what ŷ
  carries;
* 2b -- joint training of compressor, UNet and D with

      L = λ·bpp + L_diffusion + w_corr · [MSE(x̃0, x) + w_p · (1 − MS-SSIM(x̃0, x))] + w_e2e · MSE(D(ŷ), x)

  where x̃0 is the final corrected reconstruction of a short DDIM run (``train_steps``, default 2,
  instead of the N = 8 of inference, to keep CPU cost sane) with closed-form MSE-optimal γ_t, quantized
  to float16 as at inference and treated as a constant (no gradient through γ*). CDC's diffusion loss is
  kept so the UNet stays a denoiser of the data (the corrected loss alone would push it to regress to
  the mean). The perceptual term is MS-SSIM (SSIM on crops under 161 px) because LPIPS needs
  AlexNet/VGG weights that are not available offline; the manifest records which was used.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rdp_bench.codecs.corrdiff import WEIGHTS_DIR, CorrDiffModel
from rdp_bench.codecs.corrdiff_parts import Float16Gamma, GammaLayout, corrected_sample, msssim_loss

CDC_WEIGHTS_DIR = WEIGHTS_DIR.parent / "cdc"


def save_corrdiff_checkpoint(model: CorrDiffModel, out_dir: Path, label: str, rate_weight: float,
                             info: dict[str, Any]) -> Path:
    """fp16 safetensors + manifest ``corrdiff-<label>.json`` (read by the codec)."""
    from rdp_bench.codecs.checkpoints import save_checkpoint

    manifest = {"codec": "corrdiff", "label": label, "rate_weight": float(rate_weight),
                "config": model.config_dict(), **info}
    return save_checkpoint(model.shipped_state_dict(), Path(out_dir) / f"corrdiff-{label}.safetensors", manifest)


def load_phase1(path: Path) -> tuple[CorrDiffModel, dict[str, Any]]:
    """A CorrDiff model whose compressor + UNet come from a CDC checkpoint (safetensors + manifest)."""
    from rdp_bench.codecs.checkpoints import file_sha256, load_state_dict, read_manifest
    from rdp_bench.codecs.diffusion.model import CDCConfig, extract_ema_state_dict

    path = Path(path)
    manifest = read_manifest(path)
    if manifest.get("codec") == "corrdiff":  # continue from a CorrDiff checkpoint (chained rate points)
        model = CorrDiffModel.from_config(manifest["config"])
        model.load_shipped(load_state_dict(path))
        return model, {"file": path.name, "sha256": file_sha256(path), "manifest": manifest}
    config = CDCConfig.from_dict(manifest.get("config") or manifest["architecture"])
    model = CorrDiffModel(config)
    state = extract_ema_state_dict(load_state_dict(path))
    own = model.cdc.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("train_")]
    if missing or set(state) - set(own):
        raise ValueError(f"{path} does not fit its CDC config: missing {missing[:3]}, unexpected {sorted(set(state) - set(own))[:3]}")
    model.cdc.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    info = {"file": path.name, "sha256": file_sha256(path), "manifest": manifest}
    return model, info


def _rate_weight(manifest: dict[str, Any]) -> float:
    for key in ("rate_weight", "lambda", "lmbda", "beta"):
        if key in manifest:
            return float(manifest[key])
    raise KeyError("the CDC manifest names no rate weight (rate_weight/lambda)")


def corrected_reconstruction(model: CorrDiffModel, x: torch.Tensor, y_hat: torch.Tensor, context: list[torch.Tensor],
                             steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̃0 after a short corrected DDIM run, D(ŷ)), differentiable in the networks (γ constant)."""
    from rdp_bench.codecs.diffusion.sampler import DDIMSampler

    sampler = DDIMSampler(model.cdc.train_alphas_cumprod, steps)
    b = x.shape[0]
    x0_e = model.e2e(y_hat)
    noise = torch.randn(x.shape, generator=generator) * 0.8

    def denoiser(x_t: torch.Tensor, t: int) -> torch.Tensor:
        return model.cdc.denoise(x_t, sampler.time_input(t, b, x.device), context)

    def detached_mse_gamma(target, x0_hat, x0e, layout, h, w):
        from rdp_bench.codecs.corrdiff_parts import solve_gamma_mse

        return solve_gamma_mse(target.detach(), x0_hat.detach(), x0e.detach(), layout, h=h, w=w)

    result = corrected_sample(denoiser, x0_e, sampler, noise, target=x, layout=GammaLayout(),
                              quantizer=Float16Gamma(), solver=detached_mse_gamma)
    return result.image, x0_e


class _Budget:
    """CPU minutes of this process (the machine is shared), with a wall-clock cap and an optional step cap."""

    def __init__(self, minutes: float, wall_factor: float, max_steps: int | None, threads: int) -> None:
        self.cpu_s, self.wall_s, self.max_steps = minutes * 60 * threads, minutes * 60 * wall_factor, max_steps
        self.cpu0, self.wall0 = time.process_time(), time.time()

        self.cpu_end: float | None = None

    def done(self, step: int) -> bool:
        finished = (time.process_time() - self.cpu0 > self.cpu_s or time.time() - self.wall0 > self.wall_s
                    or (self.max_steps is not None and step >= self.max_steps))
        if finished and self.cpu_end is None:
            self.cpu_end = time.process_time()  # freeze: later phases must not count here
        return finished

    @property
    def cpu_minutes(self) -> float:
        return ((self.cpu_end if self.cpu_end is not None else time.process_time()) - self.cpu0) / 60


def _flush(acc: dict[str, list[float]], history: list[dict[str, Any]], step: int, budget: "_Budget",
           log: Callable[[str], None], prefix: str) -> None:
    """Average the accumulated losses into the history and the log, then start a new window."""
    means = {k: round(sum(v) / len(v), 4) for k, v in acc.items()}
    history.append({"step": step, "cpu_minutes": round(budget.cpu_minutes, 2), **means})
    log(f"{prefix} step {step}: {means}")
    acc.clear()


def train_phase2(phase1: Path, out_dir: Path = WEIGHTS_DIR, label: str | None = None, *, rate_weight: float | None = None,
                 minutes_d: float = 1.5, minutes_joint: float = 2.5, crop_d: int = 256, batch_d: int = 2,
                 crop: int = 128, batch: int = 2, train_steps: int = 2, lr: float = 2e-4, lr_d: float = 1e-3,
                 corr_weight: float = 1.0, e2e_weight: float = 1.0, perceptual_weight: float = 0.1, seed: int = 0,
                 threads: int = 1, wall_factor: float = 3.0, max_steps: int | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Phase 2 from one CDC checkpoint; writes ``corrdiff-<label>`` to ``out_dir``. Returns its path.

    ``rate_weight`` defaults to the CDC checkpoint's λ; giving another one fine-tunes the rate too (the
    λ·bpp term is part of the phase-2 loss). Budgets are CPU minutes (capped at ``wall_factor`` times
    that in wall-clock minutes). Distortions are measured on [-1, 1] images, the scale of CDC's
    diffusion loss, so that λ means the same thing in both phases.
    """
    from rdp_bench.training.data import CropBatches

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, origin = load_phase1(phase1)
    phase1_weight = _rate_weight(origin["manifest"])
    rate_weight = phase1_weight if rate_weight is None else float(rate_weight)
    label = label or f"l{rate_weight:g}".replace(".", "p")
    tag = f"({label})"
    data_d = CropBatches(size=crop_d, seed=seed)
    data = CropBatches(size=crop, seed=seed + 7)
    gen = torch.Generator().manual_seed(seed + 1)
    history: dict[str, list] = {"e2e_warmup": [], "joint": []}
    start = time.time()
    comp = model.cdc.context_fn

    # --- 2a: compressor + privileged decoder as an MSE autoencoder (the UNet is not involved) ---
    comp.train()
    opt_d = torch.optim.Adam(list(comp.parameters()) + list(model.e2e.parameters()), lr=lr_d)
    steps_d, acc = 0, {}
    budget_d = _Budget(minutes_d, wall_factor, max_steps, threads)
    while not budget_d.done(steps_d):
        x = data_d.sample(batch_d) * 2 - 1
        out = comp(x)
        mse = F.mse_loss(model.e2e(out["y_hat"]), x)
        bpp = out["bpp"].mean()
        loss = rate_weight * bpp + e2e_weight * mse + comp.extra_loss()
        opt_d.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(opt_d.param_groups[0]["params"], 1.0)
        opt_d.step()
        steps_d += 1
        acc.setdefault("e2e_psnr", []).append(10 * math.log10(4 / max(mse.item(), 1e-10)))
        acc.setdefault("bpp", []).append(bpp.item())
        if steps_d % 25 == 0 or budget_d.done(steps_d):
            _flush(acc, history["e2e_warmup"], steps_d, budget_d, log, f"{tag} 2a")

    # --- 2b: everything, on the corrected reconstruction ---
    model.train()
    opt = torch.optim.Adam([
        {"params": list(model.cdc.parameters()), "lr": lr},
        {"params": list(model.e2e.parameters()), "lr": lr_d * 0.3},
    ])
    steps_j, acc = 0, {}
    budget_j = _Budget(minutes_joint, wall_factor, max_steps, threads)
    while not budget_j.done(steps_j):
        x = data.sample(batch) * 2 - 1
        diff_loss, parts = model.cdc.training_loss(x, rate_weight)  # λ·bpp + diffusion + median loss
        out = comp(x)
        x_tilde, x0_e = corrected_reconstruction(model, x, out["y_hat"], out["context"], train_steps, gen)
        corr_mse = F.mse_loss(x_tilde, x)
        perc = msssim_loss((x_tilde + 1) / 2, (x + 1) / 2)
        e2e_mse = F.mse_loss(x0_e, x)
        loss = diff_loss + corr_weight * (corr_mse + perceptual_weight * perc) + e2e_weight * e2e_mse
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_j += 1
        for k, v in {**parts, "corr_psnr": 10 * math.log10(4 / max(corr_mse.item(), 1e-10)),
                     "e2e_psnr": 10 * math.log10(4 / max(e2e_mse.item(), 1e-10)), "one_minus_ssim": perc.item()}.items():
            acc.setdefault(k, []).append(v)
        if steps_j % 10 == 0 or budget_j.done(steps_j):
            _flush(acc, history["joint"], steps_j, budget_j, log, f"{tag} 2b")
    model.eval()
    wall = time.time() - start
    cpu = budget_d.cpu_minutes + budget_j.cpu_minutes
    earlier = (origin["manifest"].get("training", {}).get("cpu_minutes_phase2_cumulative", 0.0)
               if origin["manifest"].get("codec") == "corrdiff" else 0.0)
    final = history["joint"][-1] if history["joint"] else {}
    info = {
        "started_from": {"file": origin["file"], "sha256": origin["sha256"], "codec": origin["manifest"].get("codec")},
        "phase1": origin["manifest"]["phase1"] if origin["manifest"].get("codec") == "corrdiff" else {
                   "file": origin["file"], "sha256": origin["sha256"], "lambda": phase1_weight,
                   "phase": origin["manifest"].get("phase"), "steps": origin["manifest"].get("total_steps_including_parents"),
                   "cpu_minutes": origin["manifest"].get("total_cpu_minutes_including_parents"),
                   "note": origin["manifest"].get("note", "")},
        "training": {
            "data": "random crops of ../shared/photos (the 10 'samples' images held out), .traindata/crops256.npy",
            "images_scale": "[-1, 1] (all MSE terms on this scale, like CDC's diffusion loss)",
            "phase2a_autoencoder_warmup": {
                "steps": steps_d, "lr": lr_d, "batch": batch_d, "crop": crop_d, "trained": "compressor + e2e decoder",
                "loss": "rate_weight*bpp + e2e_weight*MSE(D(y_hat), x) + prior median loss"},
            "phase2b_joint": {"steps": steps_j, "lr": lr, "lr_e2e": lr_d * 0.3, "batch": batch, "crop": crop,
                              "trained": "compressor + UNet + e2e decoder",
                              "sampling_steps_in_training": train_steps,
                              "loss": "rate_weight*bpp + CDC diffusion loss + prior median loss + corr_weight*(MSE(x~0,x) + "
                                      "perceptual_weight*(1-SSIM/MS-SSIM)(x~0,x)) + e2e_weight*MSE(D(y_hat),x)",
                              "corr_weight": corr_weight, "e2e_weight": e2e_weight,
                              "perceptual_weight": perceptual_weight,
                              "gamma_in_training": "closed-form MSE gamma per step, float16-quantized, no gradient"},
            "perceptual_term": "MS-SSIM (SSIM for crops < 161 px, i.e. here) -- LPIPS weights unavailable offline",
            "wall_seconds": round(wall, 1), "cpu_minutes_phase2": round(cpu, 2),
            "cpu_minutes_phase2_cumulative": round(earlier + cpu, 2), "threads": threads, "device": "cpu",
            "final": final, "history": history,
        },
        "note": (f"Tiny CPU-trained model: phase 2 ran {wall / 60:.1f} wall minutes ({cpu:.1f} CPU minutes, "
                 f"{threads} thread; {earlier + cpu:.1f} CPU minutes including the chained earlier rate points) on a "
                 f"heavily shared CPU, starting from {origin['file']}. "
                 "Far below the paper's training; for pipeline and ablation demonstration, not for quality claims."),
    }
    path = save_corrdiff_checkpoint(model, out_dir, label, rate_weight, info)
    log(f"{tag} wrote {path} after {wall / 60:.1f} wall min, {cpu:.1f} CPU min")
    return path


def phase1_checkpoints(cdc_dir: Path = CDC_WEIGHTS_DIR) -> list[Path]:
    """The CDC checkpoints available to start from, in the CDC weights folder."""
    return sorted(p for p in Path(cdc_dir).glob("*.safetensors") if p.with_suffix(".json").is_file())


def pick_phase1(rate_weight: float, cdc_dir: Path = CDC_WEIGHTS_DIR) -> Path:
    """The CDC checkpoint of exactly this λ when one exists, else the CDC base model (latest save)."""
    from rdp_bench.codecs.checkpoints import read_manifest

    candidates = phase1_checkpoints(cdc_dir)
    if not candidates:
        raise FileNotFoundError(f"no CDC phase-1 checkpoint (*.safetensors + .json) in {cdc_dir}; "
                                "train one with `rdp-bench train cdc` first")
    for path in candidates:
        if abs(float(read_manifest(path).get("lambda", -1)) - rate_weight) < 1e-12:
            return path
    bases = [p for p in candidates if read_manifest(p).get("phase") == "base"]
    return (bases or candidates)[0]


def train_all(rate_weights: tuple[float, ...], out_dir: Path = WEIGHTS_DIR, cdc_dir: Path = CDC_WEIGHTS_DIR,
              chain: bool = True, init: Path | None = None, log: Callable[[str], None] = print,
              **kwargs: Any) -> list[Path]:
    """One phase-2 run per rate weight, in the order given.

    ``chain`` (default): the first starts from ``init`` (a CorrDiff or CDC checkpoint) or else the
    best-matching CDC checkpoint, each later one from the CorrDiff model just written, so every rate
    point accumulates all earlier training. Otherwise each starts from its CDC checkpoint.
    """
    written: list[Path] = []
    for lam in rate_weights:
        if chain and written:
            start = written[-1]
        elif chain and init is not None:
            start = Path(init)
        else:
            start = pick_phase1(lam, cdc_dir)
        log(f"phase 2 at lambda={lam} from {start.name}")
        written.append(train_phase2(start, out_dir, rate_weight=lam, log=log, **kwargs))
    return written
