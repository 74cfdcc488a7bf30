"""Training the bundled ``tiny`` CDC and CorrDiff checkpoints (CPU-friendly recipes).

``train_chain`` (``rdp-bench train corrdiff``, how the bundled weights were made) runs three stages
per rate weight λ and writes both codecs' checkpoints:

1. **autoencoder** -- compressor (analysis, hyperprior, factorized prior) + privileged decoder D as an
   MSE autoencoder, ``λ·bpp + MSE(D(ŷ), x)``. Cheap (no UNet), and it gives ŷ real content first: when
   the tiny model learnt CDC's objective all at once, the rate term emptied the latent before the UNet
   learnt to use the context (the "latent collapse" of our first CDC checkpoints).
2. **score network** -- the paper's phase 1 (CDC's diffusion loss) for the UNet and the context
   synthesis, with the bitstream parts frozen so the rate stays where stage 1 put it. Its EMA is the
   ``cdc-tiny-l<λ>`` checkpoint, and CorrDiff's phase-1 model.
3. **joint** -- the paper's phase 2: the full model, D included, on

      L = λ·bpp + L_diffusion + w_corr · [MSE(x̃0, x) + w_p · (1 − MS-SSIM(x̃0, x))] + w_e2e · MSE(D(ŷ), x)

   where x̃0 is the final corrected reconstruction of a short DDIM run (``train_steps``, default 2,
   instead of the N = 8 of inference, to keep CPU cost sane) with closed-form MSE-optimal γ_t, quantized
   to float16 as at inference and treated as a constant (no gradient through γ*). CDC's diffusion loss is
   kept so the UNet stays a denoiser of the data (the corrected loss alone would push it to regress to
   the mean). The perceptual term is MS-SSIM (SSIM on crops under 161 px) because LPIPS needs
   AlexNet/VGG weights that are not available offline; the manifest records which was used.

``train_phase2`` (``--phase2-only``) runs a short autoencoder warm-up and stage 3 from an existing CDC
or CorrDiff checkpoint, recording its file and sha256 in the manifest.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
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
    """CPU minutes of this process (the machine is shared), with a wall-clock cap and an optional step cap.

    ``lr_factor`` drops the learning rate to a quarter for the last fifth of the budget (``decay``)."""

    def __init__(self, minutes: float, wall_factor: float, max_steps: int | None, threads: int,
                 decay: bool = True) -> None:
        self.cpu_s, self.wall_s, self.max_steps = minutes * 60 * threads, minutes * 60 * wall_factor, max_steps
        self.cpu0, self.wall0 = time.process_time(), time.time()
        self.decay = decay
        self.cpu_end: float | None = None

    def done(self, step: int) -> bool:
        finished = (time.process_time() - self.cpu0 > self.cpu_s or time.time() - self.wall0 > self.wall_s
                    or (self.max_steps is not None and step >= self.max_steps))
        if finished and self.cpu_end is None:
            self.cpu_end = time.process_time()  # freeze: later phases must not count here
        return finished

    def lr_factor(self) -> float:
        used = max((time.process_time() - self.cpu0) / max(self.cpu_s, 1e-9), (time.time() - self.wall0) / max(self.wall_s, 1e-9))
        return 0.25 if self.decay and used > 0.8 else 1.0

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


def _autoencoder_stage(model: CorrDiffModel, rate_weight: float, budget: "_Budget", data, batch: int, lr: float,
                       history: list, log: Callable[[str], None], tag: str, e2e_weight: float = 1.0) -> int:
    """Compressor (analysis + hyperprior) and privileged decoder D as an MSE autoencoder:
    ``λ·bpp + MSE(D(ŷ), x)`` (+ the prior's median loss). The UNet is not involved, so this is cheap, and
    it gives ŷ real content before any diffusion training can empty it."""
    comp = model.cdc.context_fn
    comp.train()
    model.e2e.train()
    params = list(comp.parameters()) + list(model.e2e.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    steps, acc = 0, {}
    while not budget.done(steps):
        _scale_lr(opt, budget.lr_factor())
        x = data.sample(batch) * 2 - 1
        out = comp(x)
        mse = F.mse_loss(model.e2e(out["y_hat"]), x)
        bpp = out["bpp"].mean()
        loss = rate_weight * bpp + e2e_weight * mse + comp.extra_loss()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        steps += 1
        acc.setdefault("e2e_psnr", []).append(10 * math.log10(4 / max(mse.item(), 1e-10)))
        acc.setdefault("bpp", []).append(bpp.item())
        if steps % 25 == 0 or budget.done(steps):
            _flush(acc, history, steps, budget, log, f"{tag} autoencoder")
    return steps


#: compressor parts that fix the bitstream (analysis, hyperprior, factorized prior); frozen in the score stage
BITSTREAM_PARTS = ("enc", "hyper_enc", "hyper_dec", "prior")


def _score_stage(model: CorrDiffModel, budget: "_Budget", data, batch: int, lr: float, ema_decay: float,
                 history: list, log: Callable[[str], None], tag: str) -> torch.nn.Module:
    """CDC's diffusion loss for the UNet and the context synthesis, with the bitstream parts frozen.

    Freezing the analysis transform and the hyperprior keeps the rate that the autoencoder stage set
    (the λ·bpp term is then a constant) and prevents the latent collapse we saw when the tiny model
    learnt everything at once. Returns the EMA copy of ``model.cdc`` (what CDC ships)."""
    from rdp_bench.training.cdc import EMA

    cdc = model.cdc
    comp = cdc.context_fn
    frozen = [p for name in BITSTREAM_PARTS for p in getattr(comp, name).parameters()]
    for p in frozen:
        p.requires_grad_(False)
    cdc.train()
    params = [p for p in cdc.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    ema = EMA(cdc, ema_decay)
    steps, acc = 0, {}
    while not budget.done(steps):
        _scale_lr(opt, budget.lr_factor())
        x = data.sample(batch) * 2 - 1
        loss, parts = cdc.training_loss(x, 0.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(cdc)
        steps += 1
        acc.setdefault("diffusion", []).append(parts["diffusion"])
        acc.setdefault("bpp", []).append(parts["bpp"])
        if steps % 25 == 0 or budget.done(steps):
            _flush(acc, history, steps, budget, log, f"{tag} score")
    for p in frozen:
        p.requires_grad_(True)
    return ema.model


def _joint_stage(model: CorrDiffModel, rate_weight: float, budget: "_Budget", data, batch: int, lr: float, lr_e2e: float,
                 train_steps: int, corr_weight: float, perceptual_weight: float, e2e_weight: float,
                 gen: torch.Generator, history: list, log: Callable[[str], None], tag: str) -> int:
    """Phase 2 proper: everything trained on the corrected reconstruction (see the module docstring)."""
    comp = model.cdc.context_fn
    model.train()
    opt = torch.optim.Adam([
        {"params": list(model.cdc.parameters()), "lr": lr},
        {"params": list(model.e2e.parameters()), "lr": lr_e2e},
    ])
    steps, acc = 0, {}
    while not budget.done(steps):
        _scale_lr(opt, budget.lr_factor())
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
        steps += 1
        for k, v in {**parts, "corr_psnr": 10 * math.log10(4 / max(corr_mse.item(), 1e-10)),
                     "e2e_psnr": 10 * math.log10(4 / max(e2e_mse.item(), 1e-10)), "one_minus_ssim": perc.item()}.items():
            acc.setdefault(k, []).append(v)
        if steps % 10 == 0 or budget.done(steps):
            _flush(acc, history, steps, budget, log, f"{tag} joint")
    model.eval()
    return steps


def _scale_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    """Every parameter group's learning rate = ``factor`` × the one it was created with."""
    for group in opt.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"]) * factor


JOINT_LOSS = ("rate_weight*bpp + CDC diffusion loss + prior median loss + corr_weight*(MSE(x~0,x) + "
              "perceptual_weight*(1-SSIM/MS-SSIM)(x~0,x)) + e2e_weight*MSE(D(y_hat),x)")
PERCEPTUAL_TERM = "MS-SSIM (SSIM for crops < 161 px) -- LPIPS weights unavailable offline"
TRAINING_DATA = "random crops of ../shared/photos (the 10 'samples' images held out), .traindata/crops256.npy"


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

    budget_d = _Budget(minutes_d, wall_factor, max_steps, threads, decay=False)
    steps_d = _autoencoder_stage(model, rate_weight, budget_d, data_d, batch_d, lr_d, history["e2e_warmup"], log, tag,
                                 e2e_weight)
    budget_j = _Budget(minutes_joint, wall_factor, max_steps, threads, decay=False)
    steps_j = _joint_stage(model, rate_weight, budget_j, data, batch, lr, lr_d * 0.3, train_steps, corr_weight,
                           perceptual_weight, e2e_weight, gen, history["joint"], log, tag)
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
            "data": TRAINING_DATA,
            "images_scale": "[-1, 1] (all MSE terms on this scale, like CDC's diffusion loss)",
            "phase2a_autoencoder_warmup": {
                "steps": steps_d, "lr": lr_d, "batch": batch_d, "crop": crop_d, "trained": "compressor + e2e decoder",
                "loss": "rate_weight*bpp + e2e_weight*MSE(D(y_hat), x) + prior median loss"},
            "phase2b_joint": {"steps": steps_j, "lr": lr, "lr_e2e": lr_d * 0.3, "batch": batch, "crop": crop,
                              "trained": "compressor + UNet + e2e decoder",
                              "sampling_steps_in_training": train_steps,
                              "loss": JOINT_LOSS,
                              "corr_weight": corr_weight, "e2e_weight": e2e_weight,
                              "perceptual_weight": perceptual_weight,
                              "gamma_in_training": "closed-form MSE gamma per step, float16-quantized, no gradient"},
            "perceptual_term": PERCEPTUAL_TERM,
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


# ----------------------------------------------------------------------------------------------
# The full recipe: autoencoder -> score network (= the CDC checkpoint) -> joint phase 2 (= CorrDiff)
# ----------------------------------------------------------------------------------------------
@dataclass
class StageMinutes:
    """CPU minutes per stage. The first λ of a chain gets the full budgets; each later λ starts from the
    previous one and gets the ``*_finetune`` budgets (the joint stage always gets ``joint``)."""

    autoencoder: float = 12.0
    autoencoder_finetune: float = 4.0
    score: float = 20.0
    score_finetune: float = 8.0
    joint: float = 8.0


def _copy_parts(src: torch.nn.Module, dst: torch.nn.Module, prefixes: tuple[str, ...]) -> None:
    """Copy the parameters/buffers whose names start with one of ``prefixes`` from ``src`` into ``dst``."""
    own = dst.state_dict()
    own.update({k: v.clone() for k, v in src.state_dict().items() if k.startswith(prefixes)})
    dst.load_state_dict(own)


def train_chain(rate_weights: tuple[float, ...], out_dir: Path = WEIGHTS_DIR, cdc_out_dir: Path = CDC_WEIGHTS_DIR, *,
                minutes: StageMinutes = StageMinutes(), crop: int = 128, batch: int = 8, joint_crop: int = 128,
                joint_batch: int = 4, train_steps: int = 2, lr_autoencoder: float = 1e-3, lr_score: float = 5e-4,
                lr_joint: float = 1e-4, lr_joint_e2e: float = 3e-4, ema_decay: float = 0.995,
                corr_weight: float = 1.0, e2e_weight: float = 1.0, perceptual_weight: float = 0.1, seed: int = 0,
                threads: int = 1, wall_factor: float = 3.0, max_steps: int | None = None, init: Path | None = None,
                log: Callable[[str], None] = print) -> list[Path]:
    """Train CDC *and* CorrDiff tiny checkpoints for ``rate_weights`` in three stages:

    1. autoencoder: compressor + D at ``λ·bpp + MSE(D(ŷ), x)`` -- sets the rate and gives ŷ content;
    2. score network: CDC's diffusion loss for the UNet + context synthesis, bitstream parts frozen.
       The EMA of this model is written as ``cdc-tiny-l<λ>`` (CDC's phase 1 / the CDC baseline);
    3. joint: CorrDiff's phase 2 on the corrected reconstruction, written as ``corrdiff-l<λ>``.

    Within a chain each later λ warm-starts every stage from the previous λ (cheaper than from scratch);
    ``init`` (a CorrDiff checkpoint) warm-starts the first λ too, with the ``*_finetune`` budgets.
    Returns the written paths (CDC first, then CorrDiff).
    """
    from rdp_bench.codecs.checkpoints import file_sha256, save_checkpoint
    from rdp_bench.codecs.diffusion.model import CDCConfig
    from rdp_bench.training.cdc import trainable_state_dict, weight_name
    from rdp_bench.training.data import CropBatches

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    data = CropBatches(size=crop, seed=seed)
    joint_data = CropBatches(size=joint_crop, seed=seed + 7)
    gen = torch.Generator().manual_seed(seed + 1)
    written: list[Path] = []
    records: list[dict[str, Any]] = []

    def budget(m: float) -> _Budget:
        return _Budget(m, wall_factor, max_steps, threads)

    # 1. autoencoders
    models: list[CorrDiffModel] = []
    origin: dict[str, Any] | None = None
    if init is not None:
        start, origin = load_phase1(Path(init))
        if origin["manifest"].get("codec") != "corrdiff":
            raise ValueError(f"--init must be a CorrDiff checkpoint (it carries the e2e decoder); {init} is not")
    for i, lam in enumerate(rate_weights):
        warm = i > 0 or origin is not None
        model = (copy.deepcopy(models[-1]) if i > 0 else start if origin is not None else CorrDiffModel(CDCConfig.tiny()))
        rec = {"lambda": lam, "history": {"autoencoder": [], "score": [], "joint": []}, "cpu_minutes": {}, "steps": {},
               "warm_started_from_lambda": (rate_weights[i - 1] if i > 0 else
                                            origin["manifest"]["rate_weight"] if origin is not None else None)}
        if i == 0 and origin is not None:
            rec["warm_started_from_file"] = {"file": origin["file"], "sha256": origin["sha256"]}
            parent_cpu = origin["manifest"].get("training", {}).get("cpu_minutes_total", 0.0)
            rec["cpu_minutes"]["parent_checkpoint"] = parent_cpu
        b = budget(minutes.autoencoder_finetune if warm else minutes.autoencoder)
        rec["steps"]["autoencoder"] = _autoencoder_stage(model, lam, b, data, batch, lr_autoencoder,
                                                         rec["history"]["autoencoder"], log, f"(l={lam:g})", e2e_weight)
        rec["cpu_minutes"]["autoencoder"] = round(b.cpu_minutes, 2)
        models.append(model)
        records.append(rec)

    # 2. score networks -> CDC checkpoints
    for i, (lam, model, rec) in enumerate(zip(rate_weights, models, records)):
        if i > 0:  # UNet + context synthesis from the previous λ's trained score stage
            _copy_parts(models[i - 1].cdc, model.cdc, ("denoise_fn.", "context_fn.dec."))
        b = budget(minutes.score_finetune if i > 0 or origin is not None else minutes.score)
        ema = _score_stage(model, b, data, batch, lr_score, ema_decay, rec["history"]["score"], log, f"(l={lam:g})")
        rec["steps"]["score"] = rec["history"]["score"][-1]["step"] if rec["history"]["score"] else 0
        rec["cpu_minutes"]["score"] = round(b.cpu_minutes, 2)
        model.cdc.load_state_dict(ema.state_dict())  # continue (and ship) the EMA weights
        total_cpu = sum(sum(r["cpu_minutes"].values()) for r in records[: i + 1])
        manifest = {
            "codec": "cdc", "variant": "tiny (rdp-bench), NOT the official CDC weights",
            "config": model.cdc.config.to_dict(), "lambda": lam, "phase": "score",
            "objective": "CDC rho=0: lambda*bpp + min(SNR,5)-weighted x0-MSE on [-1,1] images (+ prior median loss)",
            "recipe": ("stage 1: compressor + auxiliary MSE decoder as an autoencoder at lambda*bpp + MSE (the "
                       "decoder is not shipped; it keeps the latent from collapsing); stage 2: UNet + context "
                       "synthesis on CDC's diffusion loss with the analysis transform and hyperprior frozen, so "
                       "the rate stays at the stage-1 value"),
            "perceptual_term": "none (rho=0)",
            "training_data": f"{crop}x{crop} {TRAINING_DATA}", "batch": batch,
            "steps": dict(rec["steps"]), "cpu_minutes": dict(rec["cpu_minutes"]),
            "warm_started_from_lambda": rec["warm_started_from_lambda"],
            "warm_started_from_file": rec.get("warm_started_from_file"),
            "total_cpu_minutes_including_parents": round(total_cpu, 2),
            "total_steps_including_parents": sum(sum(r["steps"].values()) for r in records[: i + 1]),
            "ema_decay": ema_decay, "lr": {"autoencoder": lr_autoencoder, "score": lr_score},
            "device": f"cpu, {threads} thread(s)",
            "note": (f"Tiny model trained for {total_cpu:.1f} CPU minutes in total (this λ plus the chain it was "
                     "warm-started from); far from converged, a smoke-scale baseline and not the paper's numbers."),
            "history": {k: v[-12:] for k, v in rec["history"].items() if k != "joint"},
        }
        path = save_checkpoint(trainable_state_dict(model.cdc), Path(cdc_out_dir) / weight_name(lam), manifest)
        rec["cdc_file"], rec["cdc_sha256"], rec["cdc_manifest"] = path.name, file_sha256(path), manifest
        written.append(path)
        log(f"(l={lam:g}) wrote {path}")

    # 3. joint phase 2 -> CorrDiff checkpoints
    for lam, model, rec in zip(rate_weights, models, records):
        b = budget(minutes.joint)
        steps = _joint_stage(model, lam, b, joint_data, joint_batch, lr_joint, lr_joint_e2e, train_steps, corr_weight,
                             perceptual_weight, e2e_weight, gen, rec["history"]["joint"], log, f"(l={lam:g})")
        label = f"l{lam:g}".replace(".", "p")
        phase1_cpu = rec["cdc_manifest"]["total_cpu_minutes_including_parents"]
        info = {
            "phase1": {"file": rec["cdc_file"], "sha256": rec["cdc_sha256"], "lambda": lam, "phase": "score",
                       "steps": rec["cdc_manifest"]["steps"], "cpu_minutes": phase1_cpu,
                       "recipe": rec["cdc_manifest"]["recipe"]},
            "training": {
                "data": TRAINING_DATA, "images_scale": "[-1, 1] (all MSE terms on this scale, like CDC's diffusion loss)",
                "e2e_decoder": "the stage-1 autoencoder's decoder, then trained jointly",
                "phase2_joint": {"steps": steps, "lr": lr_joint, "lr_e2e": lr_joint_e2e, "batch": joint_batch,
                                 "crop": joint_crop, "trained": "compressor + UNet + e2e decoder",
                                 "sampling_steps_in_training": train_steps, "loss": JOINT_LOSS,
                                 "corr_weight": corr_weight, "e2e_weight": e2e_weight,
                                 "perceptual_weight": perceptual_weight,
                                 "gamma_in_training": "closed-form MSE gamma per step, float16-quantized, no gradient"},
                "perceptual_term": PERCEPTUAL_TERM,
                "cpu_minutes_phase2": round(b.cpu_minutes, 2),
                "cpu_minutes_phase2_cumulative": round(b.cpu_minutes, 2),
                "cpu_minutes_total": round(phase1_cpu + b.cpu_minutes, 2), "threads": threads, "device": "cpu",
                "final": rec["history"]["joint"][-1] if rec["history"]["joint"] else {},
                "history": {"joint": rec["history"]["joint"][-15:]},
            },
            "note": (f"Tiny CPU-trained model ({phase1_cpu + b.cpu_minutes:.1f} CPU minutes including its CDC phase 1 "
                     "and the chain it was warm-started from). Far below the paper's training; for pipeline and "
                     "ablation demonstration, not for quality claims."),
        }
        path = save_corrdiff_checkpoint(model, out_dir, label, lam, info)
        written.append(path)
        log(f"(l={lam:g}) wrote {path}")
    return written
