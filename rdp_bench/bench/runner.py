"""The sweep driver behind ``rdp-bench run``: plan tasks, hand them to an executor, persist results.

Results are keyed by (codec, checkpoint sha256, rate point, image pixel hash). Re-running a command
skips what is done; a run killed at any point resumes without duplicate or lost rows, because each
item is persisted in the order bitstream -> partials -> row, and a row only counts once all exist.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rdp_bench.atomic import atomic_path
from rdp_bench.bench.executors import get_executor
from rdp_bench.bench.provenance import base_provenance
from rdp_bench.bench.store import (
    ResultsStore, atomic_write_bytes, atomic_write_text, iter_partials, partial_file, row_key,
)
from rdp_bench.bench.tasks import BatchTask, ItemResult, TaskItem
from rdp_bench.codecs import Codec, codec_class, get_codec, route_codec_options
from rdp_bench.codecs.base import fixed_rate_refusal, select_device
from rdp_bench.datasets import Dataset, load_dataset
from rdp_bench.container import DEFAULT_MAX_PIXELS
from rdp_bench.imageio import ImageReadError, image_shape, save_image, uint8_to_tensor
from rdp_bench.metrics import DEFAULT_METRICS, DatasetMetric, get_metric, metric_availability, metric_class

#: values of ``--amp`` (None = full precision)
AMP_MODES = (None, "bf16", "fp16")

#: CompressAI's names for the summary JSON, so ``compressai.utils.plot`` reads it
COMPRESSAI_NAMES = {"psnr": "psnr-rgb", "ms-ssim": "ms-ssim-rgb"}


@dataclass
class RunConfig:
    codecs: list[str]
    dataset: str
    out: Path
    rates: list[str] | None = None
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    batch_size: int = 1
    device: str | None = None
    seed: int = 0
    data_root: Path | None = None
    limit: int | None = None
    save_recon: bool = False
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    #: "bf16"/"fp16": mixed precision for a diffusion decoder's UNet sampling on GPU (codecs with
    #: ``supports_amp``); passed to those codecs as the ``amp`` option, never used for entropy coding
    amp: str | None = None
    #: ``NAME=VALUE`` for every codec of the run that declares NAME, ``codec:NAME=VALUE`` for one codec
    #: (``rdp_bench.codecs.route_codec_options``); one no codec takes is an error
    codec_options: dict[str, Any] = field(default_factory=dict)
    metric_options: dict[str, Any] = field(default_factory=dict)
    allow_download: bool = True
    progress: bool = True
    argv: list[str] | None = None
    #: pixel limit of input images and of decoded bitstreams (``--max-pixels``)
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: resamples for 95 % bootstrap intervals in ``summary/<codec>.json`` (0: none): per-image means over
    #: images, FID/KID over patches from the stored features (``rdp_bench.metrics.fid_bootstrap``)
    bootstrap: int = 0
    #: ``--target-bpp``: instead of the rate sweep, per image the codec setting whose real bitstream
    #: comes nearest each of these bpps (codecs with a tunable rate only; ``rdp_bench.bench.ratematch``)
    target_bpp: list[float] | None = None
    #: ``--seeds K``: a seeded decoder (``Codec.seeded_decode``: cdc, corrdiff-diffusion-only) decodes each
    #: stream K times, seeds 0..K-1 (seed 0 is the stream's own noise); the others decode once
    seeds: int = 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)


def select_rate_points(codec: Codec, wanted: list[str] | None, targets: list[float] | None = None) -> list:
    """``--rate`` entries are labels, rate ids, or ``codec:label``; entries for other codecs are ignored.

    ``targets`` (``--target-bpp``) replace the sweep by rate-matched points ``bpp<target>`` (plus the ``--rate``
    points when both are given); a codec without a tunable rate raises ``ValueError`` with one line."""
    if targets:
        matched = [codec.target_point(float(t)) for t in dict.fromkeys(targets)]
        return [*(select_rate_points(codec, wanted) if wanted else []), *matched]
    points = codec.rate_points()
    if not wanted:
        return points
    chosen = []
    for entry in wanted:
        target, _, key = entry.rpartition(":")
        if target and target != codec.name:
            continue
        if key.lstrip("-").isdigit():  # a number is the stable rate id streams carry, not a list position
            chosen.append(codec.rate_point(int(key)))
        else:
            chosen.append(codec.rate_point(key))
    return chosen


def dataset_fingerprint(hashes: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


class Sweep:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.store = ResultsStore(self.run_dir)
        self.device = select_device(cfg.device)
        if cfg.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(m for m in AMP_MODES if m)}; got {cfg.amp!r}")
        # typed and checked per codec before anything loads: a typo is one line, not a silent default
        self.codec_options = route_codec_options(cfg.codecs, cfg.codec_options, cfg.amp)
        if int(cfg.seeds) < 1:
            raise ValueError(f"--seeds must be at least 1, got {cfg.seeds}")
        self._refuse_mixed_amp()
        if cfg.target_bpp:  # before any weights or dataset are loaded
            for name in cfg.codecs:
                if codec_class(name).rate_control is None:
                    raise ValueError(fixed_rate_refusal(name))
        self.dataset: Dataset = load_dataset(cfg.dataset, cfg.data_root, cfg.allow_download, cfg.limit)
        self.codecs = {name: get_codec(name, device=cfg.device, **self.codec_options[name]) for name in cfg.codecs}
        for codec in self.codecs.values():
            codec.max_pixels = cfg.max_pixels
        # fixed once: a codec that discovers new checkpoints mid-run must not change what is finalized
        self.rate_points = {name: select_rate_points(codec, cfg.rates, cfg.target_bpp)
                            for name, codec in self.codecs.items()}
        self.metric_status = {m: metric_availability(m, **cfg.metric_options) for m in cfg.metrics}
        self.unavailable = tuple(sorted((m, s.reason) for m, s in self.metric_status.items() if not s))
        self.dataset_metrics = [m for m in cfg.metrics if issubclass(metric_class(m), DatasetMetric)]
        self.image_metrics = [m for m in cfg.metrics if m not in self.dataset_metrics]
        self.errors: list[dict[str, str]] = [
            {"image_id": image_id, "path": str(self.dataset.root / image_id), "error": f"cannot read image: {reason}"}
            for image_id, reason in self.dataset.skipped
        ]
        self.hashes = self._hash_images()

    def _hash_images(self) -> dict[str, str]:
        """Pixel hash per image id; an unreadable image is recorded in ``errors`` and dropped from the run."""
        hashes, readable = {}, []
        for item in self.dataset.items:
            try:
                hashes[item.image_id] = item.sha256(self.cfg.max_pixels)
            except ImageReadError as exc:
                self.errors.append({"image_id": item.image_id, "path": str(item.path), "error": str(exc)})
                continue
            readable.append(item)
        self.dataset.items = readable
        return hashes

    def write_errors(self) -> None:
        """``errors.csv``: the images this run could not use, and those a codec failed on mid-run (codec and
        rate point named; they have no row and are tried again on the next run). Removed when there are none."""
        path = self.run_dir / "errors.csv"
        if not self.errors:
            path.unlink(missing_ok=True)
            return
        columns = ["image_id", "path", "codec", "rate_label", "error"]
        atomic_write_text(path, pd.DataFrame(self.errors, columns=columns).to_csv(index=False))

    def _refuse_mixed_amp(self) -> None:
        # rows are keyed by checkpoint, not precision: AMP and fp32 results must not share a run folder
        path = self.run_dir / "provenance.json"
        if not path.exists():
            return
        earlier = {run.get("amp") for run in json.loads(path.read_text()).get("runs", [])}
        if earlier and earlier != {self.cfg.amp}:
            raise ValueError(f"{self.run_dir} holds results with amp={sorted(map(str, earlier))}; "
                             f"use another --out for amp={self.cfg.amp}")

    def has_value(self, row: dict[str, Any], metric: str) -> bool:
        """False when the row lacks the metric, or holds the NaN of a then-unavailable metric that is available now."""
        if metric not in row:
            return False
        reasons = row.get("unavailable")
        was_unavailable = isinstance(reasons, str) and bool(reasons) and metric in json.loads(reasons)
        return not (was_unavailable and self.metric_status[metric])

    # paths --------------------------------------------------------------------------------------
    def bitstream_rel(self, codec: str, checkpoint: str, rate: str, image_id: str, sha: str) -> str:
        ckpt = "" if checkpoint == "none" else f"{checkpoint[:12]}/"
        stem = _slug(Path(image_id).with_suffix("").as_posix())
        return f"bitstreams/{codec}/{ckpt}{_slug(rate)}/{stem}-{sha[:8]}.rdpb"

    def partial_path(self, metric: str, codec: str, checkpoint: str, rate: str, sha: str, seed: int = 0) -> Path:
        return partial_file(self.run_dir, metric, codec, checkpoint, rate, sha, seed)

    def seeds_of(self, name: str) -> tuple[int, ...]:
        """The decode seeds a codec's streams are measured at: 0..K-1 for a seeded decoder, else (0,)."""
        return tuple(range(int(self.cfg.seeds))) if self.codecs[name].seeded_decode else (0,)

    def _rows_of(self, name: str, ckpt: str, label: str) -> list[dict[str, Any]]:
        """This run's rows of one (codec, checkpoint, rate point), on the current files and seeds."""
        files, seeds = set(self.hashes.items()), set(self.seeds_of(name))
        return [r for r in self.store.rows() if r["codec"] == name and r["checkpoint"] == ckpt
                and r["rate_label"] == label and (r.get("image_id"), r["image_sha256"]) in files
                and int(r.get("seed", 0)) in seeds]

    def shape_of(self, item) -> tuple[int, int]:
        return image_shape(item.path, self.cfg.max_pixels)

    # planning -----------------------------------------------------------------------------------
    def plan(self) -> list[BatchTask]:
        tasks: list[BatchTask] = []
        available_dataset_metrics = [m for m in self.dataset_metrics if self.metric_status[m]]
        for name, codec in self.codecs.items():
            for point in self.rate_points[name]:
                ckpt = codec.checkpoint_id(point)
                todo_by_shape: dict[tuple[int, int], list[TaskItem]] = defaultdict(list)
                for item in self.dataset.items:
                    sha = self.hashes[item.image_id]
                    rel = self.bitstream_rel(name, ckpt, point.label, item.image_id, sha)
                    todo, measured = [], False
                    for seed in self.seeds_of(name):
                        row = self.store.get(row_key({"codec": name, "checkpoint": ckpt, "rate_label": point.label,
                                                      "image_sha256": sha, "image_id": item.image_id, "seed": seed}))
                        measured = measured or row is not None
                        missing_partial = any(not self.partial_path(m, name, ckpt, point.label, sha, seed).exists()
                                              for m in available_dataset_metrics)
                        if row is None or missing_partial or not all(self.has_value(row, m) for m in self.image_metrics):
                            todo.append(seed)
                    if not todo:
                        continue
                    # one encode for every seed: a stored stream (of any seed's row) is decoded again
                    reuse = measured and (self.run_dir / rel).exists()
                    todo_by_shape[self.shape_of(item) if self.cfg.batch_size > 1 else (0, 0)].append(
                        TaskItem(item.image_id, str(item.path), sha, rel, reuse_bitstream=reuse, seeds=tuple(todo))
                    )
                for items in todo_by_shape.values():
                    for start in range(0, len(items), self.cfg.batch_size):
                        tasks.append(
                            BatchTask(
                                codec=name,
                                rate_label=point.label,
                                items=tuple(items[start : start + self.cfg.batch_size]),
                                dataset=self.dataset.name,
                                metrics=tuple(self.cfg.metrics),
                                unavailable=self.unavailable,
                                codec_options=tuple(sorted(self.codec_options[name].items())),
                                metric_options=tuple(sorted(self.cfg.metric_options.items())),
                                device=self.cfg.device,
                                save_recon=self.cfg.save_recon,
                                max_pixels=self.cfg.max_pixels,
                            )
                        )
        return tasks

    # persisting ---------------------------------------------------------------------------------
    def commit(self, result: ItemResult) -> None:
        if result.error is not None:  # this image failed mid-run: recorded, no row, the sweep goes on
            self.errors.append(result.error)
            return
        path = self.run_dir / result.bitstream_rel
        if not path.exists() or path.read_bytes() != result.bitstream:
            atomic_write_bytes(path, result.bitstream)
        row = result.row
        previous = self.store.get(row_key(row))
        if previous and previous.get("unavailable") and "unavailable" not in row:
            row = {**row, "unavailable": "{}"}  # every metric is measured now: clear the old reasons
        for metric, partial in result.partials.items():
            target = self.partial_path(metric, row["codec"], row["checkpoint"], row["rate_label"], row["image_sha256"],
                                       int(row.get("seed", 0)))
            with atomic_path(target) as tmp:
                np.savez(tmp, **partial)
        if result.recon is not None:
            stem = Path(row["image_id"]).with_suffix("")
            seed = int(row.get("seed", 0))
            recon_path = self.run_dir / "recon" / row["codec"] / _slug(row["rate_label"]) / (
                f"{stem.as_posix()}-s{seed}.png" if seed else f"{stem.as_posix()}.png"
            )
            with atomic_path(recon_path) as tmp:
                save_image(uint8_to_tensor(result.recon), tmp)
        self.store.add(row)

    def finalize_dataset_metrics(self) -> None:
        fingerprint = dataset_fingerprint(self.hashes.values())
        for name, codec in self.codecs.items():
            for point, seed in ((p, k) for p in self.rate_points[name] for k in self.seeds_of(name)):
                ckpt = codec.checkpoint_id(point)
                for metric_name in self.dataset_metrics:
                    base = {"codec": name, "checkpoint": ckpt, "rate_label": point.label, "rate_id": codec.rate_id(point),
                            "dataset": self.dataset.name, "dataset_fingerprint": fingerprint, "metric": metric_name,
                            "images": len(self.hashes), "seed": seed}
                    status = self.metric_status[metric_name]
                    done = self.store.get_dataset(ResultsStore.dataset_key(base))
                    # a NaN (unavailable, or no patches) is recomputed once the metric can run
                    if done and not (status and isinstance(done["value"], float) and math.isnan(done["value"])):
                        continue
                    if not status:
                        self.store.add_dataset({**base, "value": math.nan, "reason": status.reason})
                        continue
                    metric = get_metric(metric_name, device=self.cfg.device, **self.cfg.metric_options)
                    assert isinstance(metric, DatasetMetric)
                    paths = [self.partial_path(metric_name, name, ckpt, point.label, sha, seed)
                             for sha in self.hashes.values()]
                    missing = sum(1 for p in paths if not p.exists())
                    if missing:  # images that failed mid-run: no value over part of the set (NaN: retried)
                        self.store.add_dataset({**base, "value": math.nan,
                                                "reason": f"{missing} of {len(paths)} images failed (errors.csv)"})
                        continue
                    values = metric.finalize(iter_partials(paths))
                    first = next(iter(values))
                    extra = {k: v for k, v in values.items() if k != first}
                    self.store.add_dataset({**base, "value": values[first], "reason": "", **extra})

    def write_summaries(self) -> None:
        current = set(self.hashes.values())
        fingerprint = dataset_fingerprint(current)
        for name, codec in self.codecs.items():
            seeds = self.seeds_of(name)
            results: dict[str, list[Any]] = defaultdict(list)
            spread: dict[str, list[Any]] = defaultdict(list)  # std over seeds of the per-seed values
            for point in self.rate_points[name]:
                ckpt = codec.checkpoint_id(point)
                rows = self._rows_of(name, ckpt, point.label)
                if not rows:
                    continue
                results["rate_label"].append(point.label)
                keys = ["bpp", "encoding_time", "decoding_time", *self.image_metrics]
                keys += sorted({k for r in rows for k, v in r.items() if k.startswith("bpp_") and isinstance(v, (int, float))})
                for key in keys:
                    # a mean over images and seeds: every (image, seed) row weighs the same
                    per_seed = [[float(r[key]) for r in rows if int(r.get("seed", 0)) == k
                                 and isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))] for k in seeds]
                    finite = [v for vals in per_seed for v in vals]
                    results[COMPRESSAI_NAMES.get(key, key)].append(float(np.mean(finite)) if finite else None)
                    if len(seeds) > 1 and key not in ("encoding_time", "decoding_time"):
                        spread[COMPRESSAI_NAMES.get(key, key)].append(_std([np.mean(v) for v in per_seed if v]))
                for metric_name in self.dataset_metrics:
                    values = []
                    for k in seeds:
                        hit = [r for r in self.store.dataset_rows() if r["codec"] == name and r["checkpoint"] == ckpt
                               and r["rate_label"] == point.label and r["metric"] == metric_name
                               and r["dataset_fingerprint"] == fingerprint and int(r.get("seed", 0)) == k]
                        value = hit[-1]["value"] if hit else None
                        if isinstance(value, (int, float)) and math.isfinite(value):
                            values.append(float(value))
                    # FID/KID per seed, then their mean: each seed is one sample of the decoder's distribution
                    results[metric_name].append(float(np.mean(values)) if len(values) == len(seeds) else None)
                    if len(seeds) > 1:
                        spread[metric_name].append(_std(values) if len(values) == len(seeds) else None)
            summary: dict[str, Any] = {
                "name": name,
                "description": f"{codec.description} on {self.dataset.name} ({len(current)} images)",
                "results": dict(results),
            }
            if len(seeds) > 1 and results:
                summary["seeds"] = {"count": len(seeds), "values": list(seeds),
                                    "note": "results are means over images and seeds; std is the sample standard "
                                            "deviation over seeds of each seed's value (its mean over images, or its FID/KID)",
                                    "std": dict(spread)}
            if self.cfg.bootstrap > 0 and results:
                summary["confidence_intervals"] = self.summary_intervals(name, codec, list(results["rate_label"]))
            atomic_write_text(self.run_dir / "summary" / f"{name}.json", json.dumps(summary, indent=2))

    def summary_intervals(self, name: str, codec: Codec, labels: list[str]) -> dict[str, Any]:
        """95 % bootstrap intervals of a codec's summary values, one ``low``/``high`` list per key aligned with
        ``results.rate_label``: per-image means over images (the same draws for every codec with as many
        images), FID/KID over patches from the partials (the network is not run again)."""
        from rdp_bench.metrics.fid_bootstrap import partial_intervals, percentile_interval

        n, seed = self.cfg.bootstrap, self.cfg.seed
        points = {p.label: p for p in self.rate_points[name]}
        out: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"low": [], "high": []})
        bias: list[Any] = []
        for label in labels:
            ckpt = codec.checkpoint_id(points[label])
            # images are resampled; a seeded decoder's image counts once, with its mean over seeds
            by_image: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
            for r in self._rows_of(name, ckpt, label):
                by_image[(r["image_sha256"], str(r.get("image_id")))].append(r)
            images = sorted(by_image)
            rows = [min(by_image[k], key=lambda r: int(r.get("seed", 0))) for k in images]  # seed 0's partials
            draws = np.random.default_rng(seed).integers(0, len(rows), size=(n, len(rows)))
            for key in ["bpp", *self.image_metrics]:
                vals = np.array([_seed_mean(by_image[k], key) for k in images])
                lo, hi = (math.nan, math.nan)
                if len(vals) >= 2 and np.isfinite(vals).any():
                    # finite values only, as the summary's mean is taken
                    resampled = np.array([np.nanmean(vals[d]) if np.isfinite(vals[d]).any() else math.nan
                                          for d in draws])
                    lo, hi = percentile_interval(resampled)
                entry = out[COMPRESSAI_NAMES.get(key, key)]
                entry["low"].append(lo if math.isfinite(lo) else None)
                entry["high"].append(hi if math.isfinite(hi) else None)
            for metric_name in self.dataset_metrics:
                paths = [self.partial_path(metric_name, name, ckpt, label, r["image_sha256"]) for r in rows]
                ci = {"low": math.nan, "high": math.nan}
                if self.metric_status[metric_name] and metric_name in ("fid", "kid") and paths \
                        and all(p.exists() for p in paths):
                    ci = partial_intervals(metric_name, paths, n, seed)
                out[metric_name]["low"].append(ci["low"] if math.isfinite(ci["low"]) else None)
                out[metric_name]["high"].append(ci["high"] if math.isfinite(ci["high"]) else None)
                if metric_name == "fid":
                    bias.append(ci["bias"] if math.isfinite(ci.get("bias", math.nan)) else None)
        block: dict[str, Any] = {
            "level": 0.95, "resamples": n, "seed": seed, "method": "percentile bootstrap",
            "over": {"per-image metrics": "images", "fid": "patches (re-centred on the estimate)", "kid": "patches"},
            "results": dict(out),
        }
        if bias:
            block["fid_bootstrap_bias"] = bias
        if len(self.seeds_of(name)) > 1:
            block["seeds"] = ("per-image metrics: each image's mean over seeds, resampled over images; FID/KID: "
                              "seed 0's patches (the spread over seeds is in summary.seeds.std)")
        return block

    def write_provenance(self) -> None:
        path = self.run_dir / "provenance.json"
        history = json.loads(path.read_text()) if path.exists() else {"runs": []}
        codecs = {}
        for name, codec in self.codecs.items():
            codecs[name] = {
                "description": codec.description,
                "options": self.codec_options[name],
                "rate_points": {p.label: {"params": p.params, "checkpoint": codec.checkpoint_id(p)}
                                for p in self.rate_points[name]},
                **codec.provenance(),
            }
            if self.cfg.amp:
                codecs[name]["amp"] = (self.cfg.amp if codec.supports_amp
                                       else "ignored: this codec has no mixed-precision path")
        metrics = {}
        for m in self.cfg.metrics:
            status = self.metric_status[m]
            info: dict[str, Any] = {"available": status.ok, "reason": status.reason}
            if status:
                try:
                    info.update(get_metric(m, device=self.cfg.device, **self.cfg.metric_options).provenance())
                except Exception as exc:  # provenance must never abort a run
                    info["provenance_error"] = str(exc)
            metrics[m] = info
        entry = {
            **base_provenance(self.device, self.cfg.seed, self.cfg.argv),
            "dataset": {"name": self.dataset.name, "root": str(self.dataset.root), "images": len(self.dataset),
                        "fingerprint": dataset_fingerprint(self.hashes.values()),
                        "unreadable": {e["image_id"]: e["error"] for e in self.errors},
                        "notes": list(self.dataset.notes)},
            "max_pixels": self.cfg.max_pixels,
            "executor": self.cfg.executor,
            "amp": self.cfg.amp,
            "batch_size": self.cfg.batch_size,
            "decode_seeds": {name: list(self.seeds_of(name)) for name in self.codecs},
            "codec_options": self.cfg.codec_options,
            "codecs": codecs,
            "metrics": metrics,
        }
        history["runs"].append(entry)
        atomic_write_text(path, json.dumps(history, indent=2, default=str))

    # the whole thing ------------------------------------------------------------------------------
    def run(self) -> ResultsStore:
        torch.manual_seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        self.write_provenance()
        self.write_errors()
        tasks = self.plan()
        total = sum(len(t.items) for t in tasks)
        executor = get_executor(self.cfg.executor, **self.cfg.executor_options)
        with tqdm(total=total, desc="encode/decode/measure", unit="img", disable=not self.cfg.progress) as bar:
            for task, results in executor.run(tasks, self.run_dir):
                for result in results:
                    self.commit(result)
                bar.set_postfix_str(f"{task.codec} {task.rate_label}")
                bar.update(len(results))
        self.write_errors()  # now with the images that failed mid-run
        self.finalize_dataset_metrics()
        self.store.write_tables()
        self.write_summaries()
        return self.store


def _std(values: list[float]) -> float | None:
    """Sample standard deviation (ddof 1); None with fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def _seed_mean(rows: list[dict[str, Any]], key: str) -> float:
    """One image's value of ``key``: its mean over the seeds it was decoded with (NaN when none is finite)."""
    vals = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
    return float(np.mean(vals)) if vals else math.nan


def run_benchmark(cfg: RunConfig) -> ResultsStore:
    return Sweep(cfg).run()
