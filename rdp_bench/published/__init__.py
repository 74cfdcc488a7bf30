"""Published rate–distortion–perception points, with where each number comes from.

One registry: ``ENTRIES`` holds the provenance of every entry (source repository, file and commit, paper,
dataset ids, measurement protocol, checkpoints); ``points.csv`` beside this file holds the numbers, copied
from the cited files (only the column names and dataset names were changed to rdp-bench's). A published
curve is only put next to a run measured on the same dataset with the same protocol; ``check_match``
says why when it is not.

Protocol ids:

* ``patches``: how FID/KID images were made. ``fid256`` is HiFiC's FID/256: non-overlapping 256×256 patches
  plus a second grid shifted by 128 px (rdp-bench's ``metrics/fid.py`` protocol). Empty: no FID/KID.
* ``bpp``: ``mean-per-image`` is the mean over images of 8 × bitstream bytes / pixels (CompressAI's
  convention, and rdp-bench's report, which counts the codec's payload without its container's framing).
  What the bytes include differs per source (see ``bpp_detail``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

POINTS_CSV = Path(__file__).with_name("points.csv")
METRICS = ("psnr", "ms-ssim", "lpips", "dists", "fid", "kid")

FID256 = "fid256"
MEAN_PER_IMAGE = "mean-per-image"
PATCH_PROTOCOLS = {FID256: "256×256 patches on a grid plus one shifted by 128 px (HiFiC FID/256)"}


class PublishedMismatch(ValueError):
    """A published entry cannot be compared with a run (another dataset or protocol); the message names both."""


@dataclass(frozen=True)
class Protocol:
    fid: str  # the FID/KID implementation, in words
    patches: str  # a PATCH_PROTOCOLS id, "" when the entry has no FID/KID
    bpp: str  # a bpp convention id
    bpp_detail: str  # what the bytes include


@dataclass(frozen=True)
class Source:
    repo: str
    path: str
    commit: str

    def __str__(self) -> str:
        return f"{self.repo} {self.path} @ {self.commit[:12]}"


@dataclass(frozen=True)
class PublishedEntry:
    key: str  # what --published takes
    label: str  # the codec name in tables and plots (with " (published)" added)
    paper: str
    source: Source
    #: rdp-bench dataset id -> the name the source file uses
    datasets: dict[str, str]
    protocol: Protocol
    checkpoints: str
    notes: str = ""

    @property
    def display_name(self) -> str:
        return f"{self.label} (published)"


@dataclass(frozen=True)
class PublishedPoint:
    entry: str
    dataset: str
    checkpoint: str
    bpp: float
    values: dict[str, float] = field(default_factory=dict)  # metric -> value (MS-SSIM linear); absent = not published


_TF_COMPRESSION = Source("tensorflow/compression", "models/hific/data.csv", "ccf33ea49facf2d48870d06c55032add1662fdbd")
_ILLM = Source("facebookresearch/NeuralCompression", "projects/illm/results.csv", "5be7844fbeeb6e2b0c152158c9af26353b20faa7")
_COMPRESSAI = "InterDigitalInc/CompressAI"
_ILLM_PROTOCOL = Protocol(
    fid="torchmetrics FrechetInceptionDistance / KID (FID-Inception weights) through neuralcompression.metrics."
        "update_patch_fid (projects/illm/eval_folder_example.py)",
    patches=FID256, bpp=MEAN_PER_IMAGE,
    bpp_detail="bytes of the pickled compressed object per image (pickle_size_of), mean over images")
_HIFIC_DATASETS = {"clic2020-test": "clic2020", "div2k-valid": "div2k", "kodak": "kodak"}
_CLIC_NOTE = ("'clic2020' in the file is the CLIC 2020 test set (428 images) per the papers; beware that "
              "NeuralCompression's CLIC2020Image 'test' split downloads the CLIC 2021 professional test archive, "
              "so a re-run with that loader measures another set.")

ENTRIES: dict[str, PublishedEntry] = {e.key: e for e in (
    PublishedEntry(
        key="hific", label="HiFiC",
        paper="Mentzer, Toderici, Tschannen, Agustsson: High-Fidelity Generative Image Compression, NeurIPS 2020 "
              "(arXiv:2006.09965)",
        source=_TF_COMPRESSION, datasets=_HIFIC_DATASETS,
        protocol=Protocol(fid="the paper's TensorFlow FID/KID on Inception pool3 (evaluation code not released)",
                          patches=FID256, bpp=MEAN_PER_IMAGE,
                          bpp_detail="bytes of the tfci bitstream per image, mean over images"),
        checkpoints="hific-lo, hific-mi, hific-hi (tfci.py model names; assigned to the points in bpp order)",
        notes=_CLIC_NOTE + " NIQE, also in the file, is not a metric of rdp-bench and is left out; no FID/KID on Kodak."),
    PublishedEntry(
        key="msillm", label="MS-ILLM",
        paper="Muckley, El-Nouby, Ullrich, Jégou, Verbeek: Improving Statistical Fidelity for Neural Image "
              "Compression with Implicit Local Likelihood Models, ICML 2023",
        source=_ILLM, datasets=_HIFIC_DATASETS, protocol=_ILLM_PROTOCOL,
        checkpoints="torch.hub msillm_quality_1 ... msillm_quality_6 (targets 0.035 ... 0.9 bpp; assigned in bpp order)",
        notes=_CLIC_NOTE + " FID-SwAV, also in the file, is left out; no FID/KID on Kodak."),
    PublishedEntry(
        key="msillm-nogan", label="MS-ILLM No-GAN",
        paper="Muckley et al., ICML 2023 (the No-GAN autoencoders MS-ILLM is fine-tuned from)",
        source=_ILLM, datasets=_HIFIC_DATASETS, protocol=_ILLM_PROTOCOL,
        checkpoints="unknown per point: the file has 8 points per dataset, torch.hub releases noganms_quality_1 ... 6",
        notes=_CLIC_NOTE),
    PublishedEntry(
        key="bpg444-compressai", label="BPG 4:4:4 (CompressAI)",
        paper="Bellard's BPG 0.9.8, measured by CompressAI (Bégaint et al., arXiv:2011.03029)",
        source=Source(_COMPRESSAI, "results/image/kodak/bpg_444_x265_ycbcr.json",
                      "128f00397509b9882aaaeea49f43f1714da083b4"),
        datasets={"kodak": "kodak"},
        protocol=Protocol(fid="", patches="", bpp=MEAN_PER_IMAGE,
                          bpp_detail="bytes of the .bpg file per image, mean over images (rdp-bench's bpg444 "
                                     "payload is the .bpg file too, with either backend)"),
        checkpoints="bpgenc 0.9.8, x265, 4:4:4, ycbcr, 8-bit"),
    PublishedEntry(
        key="mbt2018-mean-compressai", label="mbt2018-mean (CompressAI)",
        paper="Minnen, Ballé, Toderici: Joint Autoregressive and Hierarchical Priors, NeurIPS 2018 (mean-scale "
              "hyperprior), CompressAI's pretrained MSE models",
        source=Source(_COMPRESSAI, "results/image/kodak/compressai-mbt2018-mean_mse_cuda.json",
                      "128f00397509b9882aaaeea49f43f1714da083b4"),
        datasets={"kodak": "kodak"},
        protocol=Protocol(fid="", patches="", bpp=MEAN_PER_IMAGE,
                          bpp_detail="bytes of the entropy-coded strings per image (no container), mean over images"),
        checkpoints="compressai.zoo mbt2018_mean(quality=1 ... 8, metric='mse')"),
)}


def entry(key: str) -> PublishedEntry:
    if key not in ENTRIES:
        raise KeyError(f"unknown published entry {key!r}; known: {', '.join(ENTRIES)} (see `rdp-bench list published`)")
    return ENTRIES[key]


def load_points(key: str, dataset: str | None = None) -> list[PublishedPoint]:
    """The entry's points (on one dataset when given), in bpp order."""
    entry(key)
    out = []
    with open(POINTS_CSV, newline="") as f:
        for row in csv.DictReader(f):
            if row["entry"] != key or (dataset is not None and row["dataset"] != dataset):
                continue
            values = {m: float(row[m]) for m in METRICS if row.get(m, "").strip()}
            out.append(PublishedPoint(key, row["dataset"], row["checkpoint"], float(row["bpp"]), values))
    return sorted(out, key=lambda p: p.bpp)


def check_match(key: str, dataset: str, patch_protocol: str | None, bpp_convention: str = MEAN_PER_IMAGE) -> None:
    """Raise ``PublishedMismatch`` unless the run (its dataset id, FID/KID patch protocol id or None when it
    measured no FID/KID, bpp convention) can be shown beside entry ``key``."""
    e = entry(key)
    if dataset not in e.datasets:
        raise PublishedMismatch(f"published {e.key} ({e.label}) has points on {', '.join(e.datasets)}; the run is on "
                                f"{dataset}, so it is not shown (its numbers are on other images)")
    points = load_points(key, dataset)
    has_fid = any(m in p.values for p in points for m in ("fid", "kid"))
    if has_fid and patch_protocol is not None and patch_protocol != e.protocol.patches:
        raise PublishedMismatch(f"published {e.key} measured FID/KID on {e.protocol.patches} "
                                f"({PATCH_PROTOCOLS.get(e.protocol.patches, '?')}); the run on {patch_protocol}, "
                                "so it is not shown")
    if bpp_convention != e.protocol.bpp:
        raise PublishedMismatch(f"published {e.key} gives bpp as {e.protocol.bpp}; the run as {bpp_convention}, "
                                "so it is not shown")


def describe(e: PublishedEntry) -> str:
    """One line of provenance, for table notes."""
    proto = f"FID/KID: {e.protocol.patches}, {e.protocol.fid}; " if e.protocol.patches else ""
    return (f"{e.display_name}: {e.source}; {e.paper}; {proto}bpp: {e.protocol.bpp_detail}; "
            f"checkpoints: {e.checkpoints}")


__all__ = ["ENTRIES", "FID256", "MEAN_PER_IMAGE", "METRICS", "PATCH_PROTOCOLS", "POINTS_CSV", "Protocol",
           "PublishedEntry", "PublishedMismatch", "PublishedPoint", "Source", "check_match", "describe", "entry",
           "load_points"]
