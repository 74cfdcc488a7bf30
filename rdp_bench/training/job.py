"""Resumable training jobs: one folder per job, continued by re-running the same command.

A job folder (default ``.train_state/<name>/``, out of git) holds

* ``config.json``   -- the job's settings, written once; a re-run with other settings is refused;
* ``state.pt``      -- weights, EMA, optimizer(s), step, CPU seconds, the torch and data RNG states;
                       written atomically every ``save_every_s`` seconds and at the end;
* ``train.csv``     -- windowed means of the losses;
* ``val.csv``       -- the validation curve (per rate level: bpp, PSNR, MS-SSIM; KID every so often);
* ``curves.png``    -- both drawn.

``torch.load(weights_only=True)`` reads the state, so a state file can't run code.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from rdp_bench.training.configs import DEFAULT_JOBS_DIR  # noqa: F401 (re-exported for the training modules)


class JobMismatch(ValueError):
    """The job folder was created with other settings."""


def on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (dicts and lists walked) on the CPU: a GPU job's state loads anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [on_cpu(v) for v in obj]
    return obj


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict (weights or EMA), which later training steps never change."""
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(on_cpu(obj), tmp)
    os.replace(tmp, path)


def gpu_autocast(x: torch.Tensor) -> torch.autocast:
    """bf16 autocast for a job's networks when its batch is on a GPU; off on the CPU, where nothing changes."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda)


#: settings a resumed job may change: how long and how it runs, not what it trains
RUN_SETTINGS = ("max_steps", "val_every", "kid_every", "save_every_s", "threads", "device")


def open_job(folder: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """Create the job folder, or check that it was made by the same settings. Returns the resume state.

    Only ``RUN_SETTINGS`` may differ on a resume (a later session may extend ``max_steps``)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / "config.json"
    config = json.loads(json.dumps(config))
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k) and k not in RUN_SETTINGS)
        if changed:
            raise JobMismatch(f"{folder} was started with other settings ({', '.join(changed)}); "
                              "re-run with the same options, or pass another --job name")
    if not cfg_path.is_file() or old != config:
        tmp = cfg_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=1))
        os.replace(tmp, cfg_path)
    state_path = folder / "state.pt"
    if state_path.is_file():
        return torch.load(state_path, map_location="cpu", weights_only=True)
    return None


class CsvLog:
    """Append-only CSV with a fixed header (the first row's keys, extended if new keys appear)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (written after the last saved state by a killed run)."""
        rows = [r for r in self.rows() if int(float(r["step"])) <= step]
        self._write(rows, self._fields(rows))

    def _fields(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        return fields

    def _write(self, rows: list[dict[str, Any]], fields: list[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        rows = self.rows()
        fields = self._fields([*rows, row])
        if rows and fields == list(rows[0].keys()):
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields, restval="").writerow(row)
        else:
            self._write([*rows, row], fields)


def plot_curves(folder: Path, title: str) -> Path | None:
    """``curves.png``: training loss, and validation PSNR / bpp per level against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = CsvLog(folder / "train.csv").rows()
    val = CsvLog(folder / "val.csv").rows()
    if not train and not val:
        return None
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    if train:
        steps = [float(r["step"]) for r in train]
        for key in [k for k in train[0] if k.startswith("loss")]:
            axes[0].plot(steps, [float(r[key] or "nan") for r in train], label=key)
        axes[0].set_yscale("log")
        axes[0].set_title("training loss")
        axes[0].legend(fontsize=7)
    # rows are one curve per rate level, or per named "series" (e.g. "q2 corrected")
    key = "series" if val and "series" in val[0] else "level"
    levels = sorted({r[key] for r in val}, key=int if key == "level" else str)
    for lv in levels:
        rs = [r for r in val if r[key] == lv]
        steps = [float(r["step"]) for r in rs]
        axes[1].plot(steps, [float(r["psnr"]) for r in rs], marker=".", label=f"level {lv}" if key == "level" else lv)
        if "bpp" in rs[0]:
            axes[2].plot(steps, [float(r["bpp"]) for r in rs], marker=".")
        kid = [(float(r["step"]), float(r["kid"])) for r in rs if r.get("kid") not in (None, "", "nan")]
        if kid:
            axes[3].plot(*zip(*kid), marker="o", label=f"level {lv}")
    if val and "bpp" in val[0]:  # the rate-distortion curve of the latest validation, and of the first one
        for step, style in ((min(float(r["step"]) for r in val), ":"), (max(float(r["step"]) for r in val), "-")):
            rs = sorted((r for r in val if float(r["step"]) == step), key=lambda r: float(r["bpp"]))
            axes[4].plot([float(r["bpp"]) for r in rs], [float(r["psnr"]) for r in rs], style, marker="o",
                         label=f"step {step:g}")
        axes[4].legend(fontsize=7)
    axes[4].set_title("validation PSNR vs bpp")
    axes[1].set_title("validation PSNR (dB) ↑")
    axes[2].set_title("validation bpp (estimated)")
    axes[3].set_title("validation KID ↓")
    if levels:
        axes[1].legend(fontsize=7)
    for ax in axes[:4]:
        ax.set_xlabel("step")
    axes[4].set_xlabel("bpp (estimated)")
    for ax in axes:
        ax.grid(alpha=0.3)
    if val and "bpp" not in val[0]:  # a job without a rate (CorrDiff's score net): no bpp panels
        axes[2].set_visible(False)
        axes[4].set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    out = folder / "curves.png"
    tmp = folder / ".curves.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def ema_weight(decay: float, step: int) -> float:
    """The EMA's decay at ``step``, with the usual warm-up (1 + step) / (10 + step)."""
    return min(decay, (1 + step) / (10 + step))


def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float, step: int) -> None:
    """EMA of the weights (decay ``ema_weight``); non-float entries are copied."""
    d = ema_weight(decay, step)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                ema[k].copy_(v)


class Stopwatch:
    """CPU seconds of this process plus those of the runs before it (kept in the state)."""

    def __init__(self, earlier_cpu_s: float = 0.0, earlier_wall_s: float = 0.0) -> None:
        self.earlier_cpu_s, self.earlier_wall_s = earlier_cpu_s, earlier_wall_s
        self.cpu0, self.wall0 = time.process_time(), time.time()

    @property
    def cpu_s(self) -> float:
        return self.earlier_cpu_s + time.process_time() - self.cpu0

    @property
    def wall_s(self) -> float:
        return self.earlier_wall_s + time.time() - self.wall0


def windowed_means(acc: dict[str, list[float]]) -> dict[str, float]:
    return {k: round(sum(v) / len(v), 6) for k, v in acc.items() if v and all(math.isfinite(x) for x in v)}


Log = Callable[[str], None]


class StepRecorder:
    """The bookkeeping after each training step, the same in every job: a non-finite step is skipped (more than
    20 in one phase stop the job, the last saved state intact), the step's numbers are averaged into a
    ``train.csv`` row every ``row_every`` steps, and every ``print_every`` steps that row is logged too."""

    max_skipped = 20

    def __init__(self, train_log: CsvLog, job: str, log: Log, row_every: int = 100, print_every: int = 500) -> None:
        self.train_log, self.job, self.log = train_log, job, log
        self.row_every, self.print_every = row_every, print_every
        self.start_phase()

    def start_phase(self) -> None:
        self.window: dict[str, list[float]] = {}
        self.skipped = 0

    def skip(self) -> None:
        self.skipped += 1
        if self.skipped > self.max_skipped:
            raise FloatingPointError(f"[{self.job}] {self.skipped} non-finite steps; the state saved last is intact")

    def record(self, step: int, parts: dict[str, float], cpu_s: float, lr: float, phase: str | None = None) -> None:
        for k, v in parts.items():
            self.window.setdefault(k, []).append(v)
        if step % self.row_every:
            return
        row = {"step": step, "cpu_hours": round(cpu_s / 3600, 4), **({"phase": phase} if phase else {}), "lr": lr,
               **windowed_means(self.window)}
        self.train_log.append(row)
        self.window = {}
        if step % self.print_every == 0:
            where = f" {phase}" if phase else ""
            self.log(f"[{self.job}] step {step}{where}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                                    if k not in ("step", "phase")))


def record_parent(folder: Path, init: str, record: str = "parent.json") -> None:
    """At a warm-started job's start, keep what its parent checkpoint was (file, sha256, steps, CPU-hours) in
    ``record``: an export may later overwrite the parent's file under the same name."""
    if init:
        tmp = folder / f"{record}.tmp"
        tmp.write_text(json.dumps(_parent_summary(Path(init)), indent=1))
        os.replace(tmp, folder / record)


def _parent_summary(path: Path) -> dict[str, Any]:
    manifest = path.with_suffix(".json")
    if not manifest.is_file():
        return {"file": path.name, "note": "parent manifest not found"}
    parent = json.loads(manifest.read_text())
    training = parent.get("training", {})
    return {"file": path.name, "sha256": parent.get("sha256"),
            "steps": int(training.get("total_steps", training.get("steps", 0))),
            "cpu_hours": float(training.get("total_cpu_hours", training.get("cpu_hours", 0.0)))}


def warm_start_lineage(folder: Path, init: str, steps: int, cpu_hours: float,
                       record: str = "parent.json") -> dict[str, Any]:
    """What a job that started from ``init`` adds up to: its parent (``record``, else the parent's
    manifest as it is now) and the totals, so an exported manifest counts the whole training."""
    if not init:
        return {}
    recorded = Path(folder) / record
    parent = json.loads(recorded.read_text()) if recorded.is_file() else _parent_summary(Path(init))
    if "steps" not in parent:
        return {"warm_start": parent}
    return {"warm_start": parent, "total_steps": parent["steps"] + steps,
            "total_cpu_hours": round(parent["cpu_hours"] + cpu_hours, 3)}


class KidProbe:
    """KID of reconstructed validation crops against the originals (FID/256 patches), cached reference features."""

    def __init__(self, images: list[torch.Tensor]) -> None:
        from rdp_bench.metrics.fid import KID, extract_patches

        self.metric = KID(device="cpu")
        self.extract = extract_patches
        self.ref = self.metric.features(torch.cat([extract_patches(x[0]) for x in images]))

    def __call__(self, recs: list[torch.Tensor]) -> float:
        from rdp_bench.metrics.fid import kid_from_features

        feats = self.metric.features(torch.cat([self.extract(x[0]) for x in recs]))
        return kid_from_features(feats, self.ref)["kid"]


def job_data(photos_dir: Path | None, crop: int, seed: int) -> tuple[list[Path], list[Path], Any, list[torch.Tensor]]:
    """(training photos, validation photos, random training crops, validation images) of a training job."""
    from rdp_bench.training.data import DEFAULT_PHOTOS, RandomCrops, split_photos, validation_images

    train_paths, val_paths = split_photos(photos_dir or DEFAULT_PHOTOS)
    return train_paths, val_paths, RandomCrops(train_paths, crop, seed=seed), validation_images(val_paths)


def resume_clock(state: dict[str, Any], step: int, data: Any, logs: Iterable[CsvLog], job: str, log: Log) -> Stopwatch:
    """On a resume: the RNG and data position of the saved state, logs cut back to its step; its stopwatch."""
    watch = Stopwatch(float(state["cpu_s"]), float(state["wall_s"]))
    torch.set_rng_state(state["torch_rng"])
    data.restore(state["data_rng"])
    log(f"[{job}] resumed at step {step} ({watch.cpu_s / 3600:.2f} CPU-h so far)")
    for csv_log in logs:
        csv_log.truncate_after(step)
    return watch
