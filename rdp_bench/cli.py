"""The ``rdp-bench`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

# torch-free: the train commands' defaults are the job configs' own
from rdp_bench.training.configs import DEFAULT_JOBS_DIR, AutoencoderJobConfig, CDCJobConfig, HiFiCJobConfig, ScoreJobConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Rate-distortion-perception benchmark for learned image codecs.")
console = Console()


def _split(value: Optional[str]) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _fail(message: str) -> NoReturn:
    """A user mistake: one line saying what to do, exit code 2."""
    console.print(f"error: {message}", highlight=False, soft_wrap=True)  # one line, whatever the terminal width
    raise typer.Exit(2)


def _codec_options(entries: Optional[list[str]]) -> dict:
    """``KEY=VALUE`` / ``CODEC:KEY=VALUE`` strings -> options, values as text: each codec's declared option
    types parse them (``Codec.OPTIONS``), so a bad value is reported with what the option expects."""
    options = {}
    for entry in entries or []:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--codec-option wants KEY=VALUE or CODEC:KEY=VALUE, got {entry!r}")
        options[key.strip()] = value.strip()
    return options


@app.command()
def run(
    codec: str = typer.Option(..., "--codec", "-c", help="Codec name(s), comma-separated (see `rdp-bench list codecs`)."),
    dataset: str = typer.Option("samples", "--dataset", "-d", help="samples, kodak, clic2020-test (= clic, clic2020), clic2020-valid, div2k-valid (= div2k) or folder:PATH (see `rdp-bench list datasets`)."),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="Run folder (created; re-running resumes)."),
    rate: Optional[str] = typer.Option(None, "--rate", help="Rate points: labels or indices, comma-separated; `codec:label` targets one codec."),
    metrics: str = typer.Option("psnr,ms-ssim", "--metrics", "-m", help="Metrics, comma-separated (see `rdp-bench list metrics`)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per codec call (same-shaped images are grouped)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)."),
    seed: int = typer.Option(0, "--seed"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", envvar="RDP_BENCH_DATA", help="Where downloaded datasets live."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N images."),
    save_recon: bool = typer.Option(False, "--save-recon", help="Also save reconstructions as PNG."),
    no_download: bool = typer.Option(False, "--no-download", help="Never download anything: datasets, codec and metric weights (as RDP_BENCH_OFFLINE=1)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Folder with metric backbone weights (LPIPS/DISTS/FID); the torch hub cache is searched too."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Weights file for codecs that take one (hific, msillm)."),
    executor: str = typer.Option("local", "--executor", help="local (in-process) or ray (a Ray cluster)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (auto, HOST:PORT); default: start a local one."),
    amp: Optional[str] = typer.Option(None, "--amp", help="bf16 or fp16: mixed precision for diffusion UNet sampling on GPU (codecs without it ignore it)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Diffusion decoding steps (cdc*, corrdiff*); default: each codec's own."),
    codec_option: Optional[list[str]] = typer.Option(None, "--codec-option", help="KEY=VALUE for every codec of the run that takes KEY, CODEC:KEY=VALUE for one (repeatable), e.g. cdc:gamma=0.8; `rdp-bench list codecs --options` lists them."),
    max_pixels: int = typer.Option(100_000_000, "--max-pixels", min=1, help="Largest image (input or decoded bitstream) in pixels; bigger ones are refused."),
    target_bpp: Optional[str] = typer.Option(None, "--target-bpp", help="Rate matching, e.g. 0.1,0.2,0.4: per image, the setting of each tunable codec (jpeg, webp, avif, jxl, jpeg2000, bpg) whose bitstream is nearest each bpp (rate points bpp0.1, ...), instead of the sweep."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Decode each stream of a seeded decoder (cdc, corrdiff-diffusion-only) K times, seeds 0..K-1; rows record the seed, summaries give the mean and the std over seeds."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resamples for 95% bootstrap intervals in summary/*.json: means over images, FID/KID over patches from the stored features (e.g. 200; 0: none)."),
) -> None:
    """Encode every image to a real bitstream, decode it from disk, and measure it, for every rate point."""
    import shutil

    from rdp_bench.bench.runner import RunConfig, Sweep
    from rdp_bench.codecs import CodecUnavailable
    from rdp_bench.datasets import DatasetUnavailable
    from rdp_bench.datasets.download import DownloadError

    _check_run_args(out, device)
    try:
        targets = [float(v) for v in _split(target_bpp)] or None
    except ValueError:
        _fail(f"--target-bpp takes comma-separated bpp values, e.g. 0.1,0.2,0.4; got {target_bpp!r}")
    created = not out.exists()  # a folder this command creates is removed again when the run fails

    cfg = RunConfig(
        codecs=_split(codec), dataset=dataset, out=out, rates=_split(rate) or None, metrics=_split(metrics),
        batch_size=batch_size, device=device, seed=seed, data_root=data_root, limit=limit, save_recon=save_recon,
        allow_download=not no_download, progress=not quiet, argv=["rdp-bench", *sys.argv[1:]],
        codec_options={**({"checkpoint": str(checkpoint)} if checkpoint else {}), **_codec_options(codec_option),
                       **({"steps": steps} if steps else {})},
        metric_options={**({"weights_dir": str(weights_dir)} if weights_dir else {}),
                        **({"allow_download": False} if no_download else {})},
        executor=executor, executor_options={"address": ray_address} if ray_address else {}, amp=amp,
        max_pixels=max_pixels, target_bpp=targets, bootstrap=bootstrap, seeds=seeds,
    )
    from contextlib import nullcontext

    from rdp_bench.offline import no_downloads

    try:
        # the one download policy: --no-download reaches codecs, metrics and datasets alike (and, through
        # RDP_BENCH_OFFLINE, processes started meanwhile, e.g. local Ray workers)
        with no_downloads() if no_download else nullcontext():
            sweep = Sweep(cfg)
            store = sweep.run()
    except (CodecUnavailable, DatasetUnavailable, DownloadError, KeyError, ValueError) as exc:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _fail(str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__)
    table = store.table()
    if table.empty:
        console.print("no rows")
        _report_unreadable(sweep)
        return
    table, others = _this_sweeps_rows(table, sweep)
    from rdp_bench.reports.summary import next_steps, run_summary

    dtable = store.dataset_table()
    headers, rows = run_summary(table, dtable, cfg.metrics)
    out_table = Table(title=f"{dataset}: mean over {table['image_sha256'].nunique()} images  ({out})")
    from rich.markup import escape

    for col in headers:  # escaped: "[dB]" is a unit, not a rich style tag
        out_table.add_column(escape(col), justify="left" if col in ("codec", "rate point") else "right")
    for r in rows:
        out_table.add_row(*r)
    console.print(out_table)
    for metric, reason in sorted(_unavailable_reasons(table).items()):
        console.print(f"[yellow]{metric} unavailable:[/yellow] {reason}")
    for name, count in others.items():
        console.print(f"[yellow]note:[/yellow] {out} also holds {count} {name} rows of other rate points or checkpoints "
                      "(earlier runs, e.g. before the weights changed); they stay in results.csv, told apart by its "
                      "checkpoint column, and are left out of the table above. Use a fresh --out to keep them apart.")
    # the first thing a new user needs after the table: where it all is and what to run next
    for line in next_steps(out, sorted(set(store.table()["codec"].astype(str)))):
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # a command must stay copy-pasteable
    _report_unreadable(sweep)


def _check_run_args(out: Path, device: Optional[str]) -> None:
    """User mistakes `run` can see before it starts: one line and exit 2 instead of a traceback later."""
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file; give a folder for the run (it is created, or resumed when it exists)")
    _check_device(device)


def _check_device(device: Optional[str]) -> None:
    """A --device this machine does not have: one line and exit 2 instead of a traceback later."""
    if not device:
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        _fail(f"--device {device!r} is not a device; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            _fail(f"--device {device}: no CUDA GPU is visible here; use --device cpu (or leave --device out)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            _fail(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0..)")


def _report_unreadable(sweep) -> None:
    """Name every image the run could not use; the exit code says the dataset was not complete."""
    if not sweep.errors:
        return
    console.print(f"[red]{len(sweep.errors)} image(s) could not be used[/red] (listed in {sweep.run_dir / 'errors.csv'}):",
                  highlight=False)
    for err in sweep.errors:
        console.print(f"  {err['image_id']}: {err['error']}", highlight=False, markup=False)
    raise typer.Exit(1)


def _this_sweeps_rows(table, sweep) -> tuple[Any, dict[str, int]]:
    """Rows of the (codec, rate point, checkpoint) triples this sweep ran, and per codec how many others the folder holds."""
    from collections import Counter

    ran = {(name, p.label, str(sweep.codecs[name].checkpoint_id(p)))
           for name, points in sweep.rate_points.items() for p in points}
    keys = list(zip(table["codec"], table["rate_label"], table["checkpoint"].astype(str)))
    keep = [key in ran or key[0] not in sweep.rate_points for key in keys]  # other codecs' rows stay
    others = Counter(key[0] for key, kept in zip(keys, keep) if not kept)
    return table[keep], dict(others)


def _unavailable_reasons(table) -> dict[str, str]:
    """Metric -> reason, from the rows' ``unavailable`` JSON column (NaN values carry their why)."""
    import json

    reasons: dict[str, str] = {}
    for cell in table.get("unavailable", []):
        if isinstance(cell, str) and cell:
            reasons.update(json.loads(cell))
    return reasons


list_app = typer.Typer(help="List codecs, datasets or metrics.", no_args_is_help=True)
app.add_typer(list_app, name="list")
train_app = typer.Typer(help="Train the bundled learned-codec checkpoints.", no_args_is_help=True)
_JOBS_DIR_OPTION = typer.Option(None, "--jobs-dir", help=f"Where job folders live (default {DEFAULT_JOBS_DIR.name}/).")
app.add_typer(train_app, name="train")


@train_app.command("pack-crops")
def pack_crops_cmd(
    photos: Path = typer.Option(None, "--photos", help="Folder of training photos (default ../shared/photos)."),
    out: Path = typer.Option(None, "--out", help="Output .npy (default .traindata/crops256.npy)."),
    crop: int = typer.Option(256, "--crop"),
    per_image: int = typer.Option(24, "--per-image"),
) -> None:
    """Pack random crops of the training photos (samples held out) into one .npy file."""
    from rdp_bench.training.data import DEFAULT_PACK, DEFAULT_PHOTOS, pack_crops

    path = pack_crops(out or DEFAULT_PACK, photos or DEFAULT_PHOTOS, crop=crop, per_image=per_image)
    console.print(f"wrote {path}")


install_app = typer.Typer(help="Build and install external tools the codecs use.", no_args_is_help=True)
app.add_typer(install_app, name="install")


@install_app.command("bpg")
def install_bpg_cmd(
    source: Optional[Path] = typer.Option(None, "--from", help="Build from this libbpg-0.9.8 tarball or folder instead of downloading the official one."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Install folder (default the cache bin/, where the bpg codecs look first)."),
    jobs: int = typer.Option(2, "--jobs", "-j"),
) -> None:
    """Build the real bpgenc/bpgdec 0.9.8 (8-bit x265) from source; the bpg codecs then use them."""
    from rdp_bench.codecs.bpg_install import BuildError, install_bpg
    from rdp_bench.datasets.download import DownloadError

    try:
        install_bpg(source, dest, jobs=jobs, log=lambda msg: console.print(msg, highlight=False, markup=False))
    except (BuildError, DownloadError) as exc:
        _fail(str(exc))


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    job: str = typer.Option("autoencoder", "--job", help="Job name: its folder under --jobs-dir holds the resume state."),
    jobs_dir: Optional[Path] = _JOBS_DIR_OPTION,
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop (and save) after this many wall minutes."),
    max_steps: int = typer.Option(AutoencoderJobConfig.max_steps, "--max-steps", help=f"The job's planned total steps (the LR drops at {AutoencoderJobConfig.decay_at:.0%})."),
    n: int = typer.Option(AutoencoderJobConfig.N, "--N", help="Transform channels."),
    m: int = typer.Option(AutoencoderJobConfig.M, "--M", help="Latent channels."),
    crop: int = typer.Option(AutoencoderJobConfig.crop, "--crop"),
    batch: int = typer.Option(AutoencoderJobConfig.batch, "--batch"),
    lr: float = typer.Option(AutoencoderJobConfig.lr, "--lr"),
    threads: int = typer.Option(AutoencoderJobConfig.threads, "--threads"),
    val_every: int = typer.Option(AutoencoderJobConfig.val_every, "--val-every"),
    device: str = typer.Option(AutoencoderJobConfig.device, "--device", help="cpu or cuda (bf16 autocast for the transforms)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start a new job from this bundled checkpoint's weights."),
    add_lambdas: Optional[str] = typer.Option(None, "--add-lambdas", help="Add rate levels at these λ (comma-separated) to the --init checkpoint and train only their gains; the other levels stay bit-identical."),
    photos: Optional[Path] = typer.Option(None, "--photos", help="Folder of shared photos (default ../shared/photos)."),
    export: Optional[str] = typer.Option(None, "--export", help="Do not train: write the job's EMA weights as this bundled checkpoint label."),
    export_dir: Optional[Path] = typer.Option(None, "--export-dir", help="Where --export writes (default rdp_bench/weights/hyperprior)."),
) -> None:
    """Stage 1 of CorrDiff: the variable-rate MSE autoencoder (compressor + D), as a resumable job.

    Re-running the same command continues from the saved state; --export writes the bundled checkpoint."""
    from rdp_bench.training.hyperprior import export_autoencoder, job_lambdas, train_autoencoder
    from rdp_bench.training.job import JobMismatch

    folder = (jobs_dir or DEFAULT_JOBS_DIR) / job
    if export:
        if not (folder / "state.pt").is_file():
            _fail(f"no saved state in {folder}: train first (same --job)")
        path = export_autoencoder(folder, export_dir or (Path(__file__).parent / "weights" / "hyperprior"), export)
        console.print(f"wrote {path}")
        return
    try:
        added = tuple(float(v) for v in _split(add_lambdas))
    except ValueError:
        _fail(f"--add-lambdas takes comma-separated positive numbers, e.g. 0.0004; got {add_lambdas!r}")
    if added and not init:
        _fail("--add-lambdas adds rate levels to a trained checkpoint: give it with --init FILE")
    _check_device(device)
    init_file = str(init) if init else ""
    try:
        cfg = AutoencoderJobConfig(N=n, M=m, lambdas=job_lambdas(folder, init_file), crop=crop, batch=batch, lr=lr,
                                   max_steps=max_steps, threads=threads, val_every=val_every, device=device,
                                   init=init_file, add_lambdas=added)
        train_autoencoder(cfg, job, jobs_dir or DEFAULT_JOBS_DIR, minutes=minutes, photos_dir=photos,
                          log=lambda msg: console.print(msg, highlight=False, markup=False))
    except (JobMismatch, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@train_app.command("cdc")
def train_cdc_cmd(
    job: str = typer.Option("cdc", "--job", help="Job name: its folder under --jobs-dir holds the resume state."),
    jobs_dir: Optional[Path] = _JOBS_DIR_OPTION,
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop (and save) after this many wall minutes."),
    lambdas: Optional[str] = typer.Option(None, "--lambdas", help="Rate weights λ, one phase each (default: every λ of the cdc rate table)."),
    steps: int = typer.Option(CDCJobConfig.steps, "--steps", help="Training steps per λ."),
    crop: int = typer.Option(CDCJobConfig.crop, "--crop"),
    batch: int = typer.Option(CDCJobConfig.batch, "--batch"),
    lr: float = typer.Option(CDCJobConfig.lr, "--lr"),
    joint: bool = typer.Option(CDCJobConfig.joint, "--joint", help="CDC's joint objective with every part trained (default: the rate path stays frozen)."),
    threads: int = typer.Option(CDCJobConfig.threads, "--threads"),
    val_every: int = typer.Option(CDCJobConfig.val_every, "--val-every"),
    device: str = typer.Option(CDCJobConfig.device, "--device", help="cpu or cuda (bf16 autocast for the UNet; validation decodes there too)."),
    init_dir: Optional[Path] = typer.Option(None, "--init-dir", help="Folder of cdc-tiny-l{λ} checkpoints each phase starts from (default: the bundled ones)."),
    scratch: bool = typer.Option(False, "--scratch", help="Start from random weights (needs --joint)."),
    photos: Optional[Path] = typer.Option(None, "--photos", help="Folder of shared photos (default ../shared/photos)."),
    export: bool = typer.Option(False, "--export", help="Do not train: write every finished λ as a bundled checkpoint."),
    export_dir: Optional[Path] = typer.Option(None, "--export-dir", help="Where --export writes (default rdp_bench/weights/cdc)."),
) -> None:
    """Train the tiny CDC checkpoints as a resumable job: per λ, CDC's ρ=0 diffusion loss from that λ's
    checkpoint. Re-running the same command continues from the saved state."""
    from rdp_bench.training.cdc import WEIGHTS_DIR, export_cdc, train_cdc
    from rdp_bench.training.job import JobMismatch

    folder = (jobs_dir or DEFAULT_JOBS_DIR) / job
    if export:
        if not (folder / "state.pt").is_file():
            _fail(f"no saved state in {folder}: train first (same --job)")
        try:
            for path in export_cdc(folder, export_dir or WEIGHTS_DIR):
                console.print(f"wrote {path}")
        except ValueError as exc:
            _fail(str(exc))
        return
    if scratch and not joint:
        _fail("--scratch trains the rate path too: add --joint")
    try:
        lambda_values = tuple(float(v) for v in _split(lambdas)) if lambdas else CDCJobConfig().lambdas  # rate-table default: set per instance
    except ValueError:
        _fail(f"--lambdas takes comma-separated numbers, got {lambdas!r}")
    cfg = CDCJobConfig(lambdas=lambda_values, steps=steps, crop=crop, batch=batch, lr=lr, joint=joint,
                       threads=threads, val_every=val_every, device=device,
                       init_dir="" if scratch else str(init_dir or WEIGHTS_DIR))
    _check_device(device)
    try:
        train_cdc(cfg, job, jobs_dir or DEFAULT_JOBS_DIR, minutes=minutes, photos_dir=photos,
                  log=lambda msg: console.print(msg, highlight=False, markup=False))
    except (JobMismatch, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@train_app.command("hific")
def train_hific_cmd(
    job: str = typer.Option("hific", "--job", help="Job name: its folder under --jobs-dir holds the resume state."),
    jobs_dir: Optional[Path] = _JOBS_DIR_OPTION,
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop (and save) after this many wall minutes."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Target bpp of the models (HiFiC rate targeting; default: those of the hific rate table)."),
    base_steps: int = typer.Option(HiFiCJobConfig.base_steps, "--base-steps", help="MSE+rate pretraining steps (shared by all targets)."),
    rate_steps: int = typer.Option(HiFiCJobConfig.rate_steps, "--rate-steps", help="Per target: rate-targeted fine-tuning steps."),
    gan_steps: int = typer.Option(HiFiCJobConfig.gan_steps, "--gan-steps", help="Per target: conditional-GAN fine-tuning steps."),
    base_lambda: float = typer.Option(HiFiCJobConfig.base_lambda, "--base-lambda", help="Rate weight of the pretraining."),
    crop: int = typer.Option(HiFiCJobConfig.crop, "--crop"),
    batch: int = typer.Option(HiFiCJobConfig.batch, "--batch"),
    lr: float = typer.Option(HiFiCJobConfig.lr, "--lr"),
    threads: int = typer.Option(HiFiCJobConfig.threads, "--threads"),
    val_every: int = typer.Option(HiFiCJobConfig.val_every, "--val-every"),
    arch: str = typer.Option(HiFiCJobConfig.arch, "--arch", help="tiny or full (NeuralCompression size)."),
    device: str = typer.Option(HiFiCJobConfig.device, "--device", help="cpu or cuda (bf16 autocast for the autoencoder's transforms and the discriminator; validation runs there too)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start a new job's base phase from this HiFiC checkpoint."),
    init_targets: Optional[Path] = typer.Option(None, "--init-targets", help="Start each target from its checkpoint in this folder (e.g. rdp_bench/weights/hific), with --base-steps 0; add --rate-steps 0 to continue GAN fine-tuning."),
    photos: Optional[Path] = typer.Option(None, "--photos", help="Folder of shared photos (default ../shared/photos)."),
    export: bool = typer.Option(False, "--export", help="Do not train: write every finished target as a bundled checkpoint."),
    export_dir: Optional[Path] = typer.Option(None, "--export-dir", help="Where --export writes (default rdp_bench/weights/hific)."),
    export_base: Optional[Path] = typer.Option(None, "--export-base", help="Do not train: write the finished base phase to this file (for --init)."),
) -> None:
    """Train HiFiC as a resumable job: MSE+rate pretraining, then per target rate-targeted and
    conditional-GAN fine-tuning. Re-running the same command continues from the saved state."""
    from rdp_bench.codecs.hific import WEIGHTS_DIR
    from rdp_bench.training.hific import export_hific, export_hific_base, train_hific
    from rdp_bench.training.job import JobMismatch

    folder = (jobs_dir or DEFAULT_JOBS_DIR) / job
    if export or export_base:
        if not (folder / "state.pt").is_file():
            _fail(f"no saved state in {folder}: train first (same --job)")
        try:
            paths = [export_hific_base(folder, export_base)] if export_base else export_hific(folder, export_dir or WEIGHTS_DIR)
            for path in paths:
                console.print(f"wrote {path}")
        except ValueError as exc:
            _fail(str(exc))
        return
    if arch not in ("tiny", "full"):
        _fail(f"--arch {arch}: use tiny or full")
    try:
        target_values = tuple(float(v) for v in _split(targets)) if targets else HiFiCJobConfig().targets  # rate-table default: set per instance
    except ValueError:
        _fail(f"--targets takes comma-separated bpp values, e.g. 0.15,0.3; got {targets!r}")
    cfg = HiFiCJobConfig(targets=target_values, crop=crop, batch=batch,
                         base_lambda=base_lambda, base_steps=base_steps, rate_steps=rate_steps, gan_steps=gan_steps,
                         lr=lr, threads=threads, val_every=val_every, arch=arch, device=device,
                         init=str(init) if init else "", init_targets=str(init_targets) if init_targets else "")
    _check_device(device)
    try:
        train_hific(cfg, job, jobs_dir or DEFAULT_JOBS_DIR, minutes=minutes, photos_dir=photos,
                    log=lambda msg: console.print(msg, highlight=False, markup=False))
    except (JobMismatch, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@train_app.command("corrdiff")
def train_corrdiff_cmd(
    job: str = typer.Option("corrdiff", "--job", help="Job name: its folder under --jobs-dir holds the resume state."),
    jobs_dir: Optional[Path] = _JOBS_DIR_OPTION,
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop (and save) after this many wall minutes."),
    max_steps: int = typer.Option(ScoreJobConfig.max_steps, "--max-steps", help=f"The job's planned total steps (the LR drops at {ScoreJobConfig.decay_at:.0%})."),
    widths: str = typer.Option(",".join(map(str, ScoreJobConfig.widths)), "--widths", help="Score network widths at 1/2, 1/4, 1/8 of the image."),
    crop: int = typer.Option(ScoreJobConfig.crop, "--crop"),
    batch: int = typer.Option(ScoreJobConfig.batch, "--batch"),
    lr: float = typer.Option(ScoreJobConfig.lr, "--lr"),
    threads: int = typer.Option(ScoreJobConfig.threads, "--threads"),
    val_every: int = typer.Option(ScoreJobConfig.val_every, "--val-every"),
    device: str = typer.Option(ScoreJobConfig.device, "--device", help="cpu or cuda (bf16 autocast for the score network)."),
    compressor: Optional[Path] = typer.Option(None, "--compressor", help="Frozen hyperprior checkpoint (default: the bundled one)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start a new job from this bundled score-net checkpoint's weights."),
    photos: Optional[Path] = typer.Option(None, "--photos", help="Folder of shared photos (default ../shared/photos)."),
    export: Optional[str] = typer.Option(None, "--export", help="Do not train: write the job's EMA weights as this bundled checkpoint label."),
    export_dir: Optional[Path] = typer.Option(None, "--export-dir", help="Where --export writes (default rdp_bench/weights/corrdiff)."),
    adopt_compressor: Optional[Path] = typer.Option(None, "--adopt-compressor", help="Do not train: point the bundled score net (or --init) at --compressor, which must be this file (its compressor before `train autoencoder --add-lambdas`) grown by rate levels."),
) -> None:
    """Stage 2 of CorrDiff: the score network on the frozen hyperprior (compressor + D), as a resumable job.

    Re-running the same command continues from the saved state; --export writes the bundled checkpoint."""
    from rdp_bench.training.corrdiff import HYPERPRIOR_CHECKPOINT, adopt_grown_compressor, export_score, train_score
    from rdp_bench.training.job import JobMismatch

    if adopt_compressor:
        from rdp_bench.codecs.corrdiff import DEFAULT_CHECKPOINT, WEIGHTS_DIR

        score = init or WEIGHTS_DIR / f"{DEFAULT_CHECKPOINT}.safetensors"
        try:
            manifest = adopt_grown_compressor(score, adopt_compressor, compressor or HYPERPRIOR_CHECKPOINT)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            _fail(str(exc))
        console.print(f"{score.name} now uses {manifest['compressor']['file']}: rate levels "
                      f"{manifest['compressor']['lambdas']} (trained on {manifest['compressor']['trained_lambdas']})")
        return
    folder = (jobs_dir or DEFAULT_JOBS_DIR) / job
    if export:
        if not (folder / "state.pt").is_file():
            _fail(f"no saved state in {folder}: train first (same --job)")
        try:
            path = export_score(folder, export_dir or (Path(__file__).parent / "weights" / "corrdiff"), export)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        console.print(f"wrote {path}")
        return
    try:
        width_values = tuple(int(v) for v in _split(widths))
    except ValueError:
        _fail(f"--widths takes comma-separated integers, got {widths!r}")
    cfg = ScoreJobConfig(widths=width_values, crop=crop, batch=batch, lr=lr, max_steps=max_steps, threads=threads,
                         val_every=val_every, device=device, compressor=str(compressor or HYPERPRIOR_CHECKPOINT),
                         init=str(init) if init else "")
    _check_device(device)
    try:
        train_score(cfg, job, jobs_dir or DEFAULT_JOBS_DIR, minutes=minutes, photos_dir=photos,
                    log=lambda msg: console.print(msg, highlight=False, markup=False))
    except (JobMismatch, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@list_app.command("codecs")
def list_codecs_cmd(
    options: bool = typer.Option(False, "--options", help="Also list each codec's options (--codec-option NAME=VALUE)."),
) -> None:
    """Every registered codec, its rate points, and whether it can run here (offline: never asks the network)."""
    from rdp_bench.codecs import codec_availability, codec_class, list_codecs
    from rdp_bench.offline import no_network_probes

    if options:
        _list_codec_options()
        return

    table = Table(title="codecs")
    for col in ("codec", "status", "rate points (low -> high rate)", "description"):
        # fold, never "…": a cut name or URL is useless; names and status stay on one line
        table.add_column(col, overflow="fold", no_wrap=col in ("codec", "status"))
    reasons: list[str] = []
    with no_network_probes():
        for name in list_codecs():
            status = codec_availability(name)
            try:
                cls = codec_class(name)
                points = ", ".join(p.label for p in cls(device="cpu").rate_points()) if status else "-"
                desc = cls.description
            except Exception as exc:  # listing must survive a broken codec module
                points, desc = "?", str(exc)
            if not status:
                reasons.append(f"[{len(reasons) + 1}] {name}: {status.reason}")
            table.add_row(name, "ok" if status else f"unavailable [{len(reasons)}]", points, desc)
    console.print(table)
    # reasons hold file names, URLs and folders: printed whole under the table, where nothing cuts them
    for line in reasons:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _list_codec_options() -> None:
    from rdp_bench.codecs import codec_class, list_codecs

    table = Table(title="codec options (--codec-option NAME=VALUE, or CODEC:NAME=VALUE for one codec)")
    for col in ("codec", "option", "takes", "default", "what"):
        table.add_column(col, overflow="fold", no_wrap=col in ("codec", "option"))
    for name in list_codecs():
        try:
            declared = codec_class(name).declared_options()
        except ImportError as exc:  # an optional dependency missing: say so, keep listing
            table.add_row(name, "?", "", "", f"missing dependency: {exc}")
            continue
        if not declared:
            table.add_row(name, "-", "", "", "no options")
        for opt_name, opt in sorted(declared.items()):
            table.add_row(name, opt_name, opt.expects(), "-" if opt.default is None else str(opt.default), opt.help)
    console.print(table)


@list_app.command("datasets")
def list_datasets_cmd(
    data_root: Optional[Path] = typer.Option(None, "--data-root", envvar="RDP_BENCH_DATA", help="Where downloaded datasets live."),
) -> None:
    """Known datasets: present or not, where, image count, download size (nothing is downloaded)."""
    from rdp_bench.datasets import list_datasets

    table = Table(title="datasets (`run --dataset NAME` downloads pinned ones on first use)")
    for col in ("dataset", "images", "present", "where", "download", "description"):
        table.add_column(col, overflow="fold")
    for d in list_datasets(data_root):
        name = d.name + (f" (= {', '.join(d.aliases)})" if d.aliases else "")
        table.add_row(name, "" if d.images is None else str(d.images), "yes" if d.present else "no", d.where,
                      d.download, d.description)
    console.print(table)


@list_app.command("published")
def list_published_cmd() -> None:
    """Published rate-distortion-perception points `report --published` can draw, with their provenance."""
    from rdp_bench.published import ENTRIES, PATCH_PROTOCOLS, load_points

    table = Table(title="published points (`rdp-bench report RUN --published KEY,...`; shown only on a matching dataset and protocol)")
    for col in ("key", "codec", "datasets (points)", "metrics", "protocol", "source", "paper"):
        table.add_column(col, overflow="fold")
    for e in ENTRIES.values():
        points = load_points(e.key)
        per_dataset = ", ".join(f"{d} ({sum(p.dataset == d for p in points)})" for d in e.datasets)
        metrics = sorted({m for p in points for m in p.values})
        patches = f"FID/KID: {PATCH_PROTOCOLS[e.protocol.patches]}; {e.protocol.fid}; " if e.protocol.patches else ""
        table.add_row(e.key, e.label, per_dataset, ", ".join(["bpp", *metrics]),
                      f"{patches}bpp: {e.protocol.bpp} ({e.protocol.bpp_detail})", str(e.source), e.paper)
    console.print(table)


@list_app.command("metrics")
def list_metrics_cmd(weights_dir: Optional[Path] = typer.Option(None, "--weights-dir")) -> None:
    """Every registered metric and whether it can be computed here (and why not)."""
    from rdp_bench.metrics import list_metrics, metric_availability, metric_class

    # listing must never fetch hundreds of MB of weights; `run` downloads them when online
    opts = {"weights_dir": weights_dir, "allow_download": False} if weights_dir else {"allow_download": False}
    table = Table(title="metrics (no downloads while listing; `rdp-bench run` fetches missing weights when online)")
    for col in ("metric", "kind", "better", "status", "description"):
        table.add_column(col)
    for name in list_metrics():
        cls = metric_class(name)
        status = metric_availability(name, **opts)
        table.add_row(name, cls.kind, "higher" if cls.higher_is_better else "lower",
                      "ok" if status else f"unavailable: {status.reason}", cls.description)
    console.print(table)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run folder(s) written by `rdp-bench run`."),
    anchor: Optional[str] = typer.Option(None, "--anchor", help="Codec every BD number is measured against (default: bpg when the runs have it, else the first codec; the report says which)."),
    out: Path = typer.Option(Path("runs/report"), "--out", "-o", help="Report folder (tables, figures/, report.html)."),
    method: str = typer.Option("akima", "--method", help="BD interpolation: akima, pchip (JCT-VC CTC) or cubic (VCEG-M33)."),
    latex: bool = typer.Option(False, "--latex", help="Also write the BD tables as LaTeX (booktabs)."),
    log_x: bool = typer.Option(False, "--log-x", help="Logarithmic bpp axis in the plots."),
    grid_images: int = typer.Option(3, "--grid-images", min=0, help="Images in the visual comparison (0: none)."),
    grid_bpp: Optional[float] = typer.Option(None, "--grid-bpp", help="Target bpp of the visual comparison."),
    codec: Optional[str] = typer.Option(None, "--codec", "-c", help="Only these codecs, comma-separated, in this order."),
    published: Optional[str] = typer.Option(None, "--published", help="Published curves to add, comma-separated (see `rdp-bench list published`); refused unless dataset and protocol match the run."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Decode each stream of a seeded decoder (cdc, corrdiff-diffusion-only) K times, seeds 0..K-1; rows record the seed, summaries give the mean and the std over seeds."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resamples of the images for 95% confidence intervals of rate points and BD numbers (e.g. 200; 0: none)."),
) -> None:
    """BD-rate / BD-quality tables, rate-distortion-perception plots and a self-contained report.html."""
    from rdp_bench.reports.bdrate import METHODS
    from rdp_bench.reports.report import make_report
    from rdp_bench.reports.runs import ReportError

    if method not in METHODS:
        console.print(f"[red]error:[/red] --method must be one of {', '.join(METHODS)}")
        raise typer.Exit(2)
    try:
        result = make_report(run_dirs, out, anchor=anchor, method=method, latex=latex, log_x=log_x,
                             grid_images=grid_images, grid_bpp=grid_bpp, codecs=_split(codec) or None,
                             published=_split(published) or None, bootstrap=bootstrap)
    except ReportError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    typer.echo(result.markdown)  # plain: rich would re-wrap the Markdown table at the terminal width
    if result.anchor_note:
        console.print(f"note: {result.anchor_note}", highlight=False, markup=False)
    console.print(f"wrote {len(result.files)} files to {out} (open {out / 'report.html'})", highlight=False, markup=False)


@app.command()
def check(
    new_run: Path = typer.Argument(..., help="Run folder to check."),
    baseline: Path = typer.Option(..., "--baseline", help="Baseline run folder, e.g. results/reference/samples."),
    codec: Optional[str] = typer.Option(None, "--codec", "-c", help="Only these codecs, comma-separated."),
    max_bpp_rise: float = typer.Option(1.0, "--max-bpp-rise", help="Allowed bpp rise per rate point, in percent."),
    max_psnr_drop: float = typer.Option(0.05, "--max-psnr-drop", help="Allowed PSNR drop per rate point, in dB."),
    max_msssim_drop: float = typer.Option(0.05, "--max-msssim-drop", help="Allowed MS-SSIM drop, in dB (-10log10(1-x))."),
    max_lpips_rise: float = typer.Option(0.005, "--max-lpips-rise", help="Allowed LPIPS rise per rate point."),
    max_dists_rise: float = typer.Option(0.005, "--max-dists-rise", help="Allowed DISTS rise per rate point."),
    max_fid_rise: float = typer.Option(1.0, "--max-fid-rise", help="Allowed FID rise per rate point."),
    max_kid_rise: float = typer.Option(0.002, "--max-kid-rise", help="Allowed KID rise per rate point."),
    max_bdrate_worsening: float = typer.Option(1.0, "--max-bdrate-worsening", help="Allowed BD-rate vs the baseline curve, in percent."),
    fail_on_checkpoint_change: bool = typer.Option(False, "--fail-on-checkpoint-change", help="A different checkpoint sha256 is a failure."),
    spread: Optional[list[Path]] = typer.Option(None, "--spread", help="A re-run of the baseline (other seed or machine); repeatable. Tolerances become at least --spread-factor × the measured difference."),
    spread_factor: float = typer.Option(2.0, "--spread-factor", help="Tolerance = max(given, this × measured spread)."),
    details: bool = typer.Option(False, "--details", help="Also print every check, not only failures and one line per codec."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the result as Markdown here (e.g. $GITHUB_STEP_SUMMARY); every check is in a collapsed block."),
) -> None:
    """Regression gate: exit 1 when a codec got worse than the baseline run beyond the tolerances."""
    from rich.markup import escape  # "[dB]" is text here, not a style tag

    from rdp_bench.reports.check import Tolerances, run_check
    from rdp_bench.reports.runs import ReportError

    tol = Tolerances(max_bpp_rise, max_psnr_drop, max_msssim_drop, max_lpips_rise, max_dists_rise, max_fid_rise,
                     max_kid_rise, max_bdrate_worsening, fail_on_checkpoint_change, spread_factor)
    try:
        result = run_check(new_run, baseline, tol, codecs=_split(codec) or None, spread=spread or None)
    except ReportError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    wide = Console(width=max(console.width, 150))  # CI logs are not terminals: don't wrap at 80
    colours = {"FAIL": "bold red", "ok": "green", "changed": "yellow", "skip": "dim"}

    def rows_table(title: str, rows) -> Table:
        table = Table(title=title)
        for col in ("codec", "rate", "check", "baseline", "new", "change", "tolerance", "status"):
            table.add_column(col)
        for r in rows:
            table.add_row(*(escape(v) for v in (r.codec, r.rate, r.check, r.baseline, r.new, r.change, r.tolerance)),
                          f"[{colours.get(r.status, '')}]{r.status}[/]")
        return table

    wide.print(f"rdp-bench check {new_run} against {baseline}: {result.images} image{'s' if result.images != 1 else ''}",
               highlight=False, markup=False)
    if result.failures:  # first, so a CI log shows them without scrolling
        wide.print(rows_table(f"{len(result.failures)} failure(s)", result.failures))
    for verdict in result.verdicts():
        style = "green" if verdict.passed else "bold red"
        wide.print(f"[{style}]{escape(verdict.line())}[/]", highlight=False)
    for note in result.notes:
        wide.print(f"note: {note}", markup=False, highlight=False)
    if details:
        wide.print(rows_table(f"every check ({len(result.rows)})", result.rows))
    else:
        console.print("(every check: --details)", style="dim", highlight=False)
    if markdown:
        with open(markdown, "a", encoding="utf-8") as f:
            f.write(result.markdown())
    # the last line names what failed: it is what a CI summary shows
    if result.failures:
        wide.print(f"[bold red]{escape(result.verdict())}[/]", highlight=False)
        raise typer.Exit(1)
    if not result.passed:
        console.print(f"[bold red]{escape(result.verdict())}[/]", highlight=False)
        raise typer.Exit(2)
    console.print(f"[green]{escape(result.verdict())}[/]", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
