"""Public benchmark datasets: official URLs, cached under a data root, verified after download.

No checksums are published for Kodak, CLIC or DIV2K, so each set is verified by its expected file count
and image sizes, and the sha256 of every downloaded file is recorded in ``SOURCE.json`` beside it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from rdp_bench.datasets.base import Dataset, DatasetUnavailable, list_images
from rdp_bench.datasets.download import DownloadError, download, safe_extract, sha256_file


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    folder: str
    count: int
    description: str
    #: individual files (url, file name) or archives (url, archive name); archives are extracted
    files: tuple[tuple[str, str], ...] = ()
    archives: tuple[tuple[str, str], ...] = ()
    #: allowed (width, height) pairs, empty for "any size"
    sizes: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    min_side: int = 0

    def layout_hint(self, root: Path) -> str:
        return (
            f"put the {self.count} images of {self.description} as image files under {root / self.folder}/ "
            f"(any sub-folders; png/jpg), or pass --data-root / set RDP_BENCH_DATA to a folder that holds "
            f"{self.folder}/"
        )

    def verify(self, root: Path) -> list[Path]:
        folder = root / self.folder
        paths = list_images(folder) if folder.is_dir() else []
        if len(paths) != self.count:
            raise DatasetUnavailable(
                f"{self.name}: found {len(paths)} images under {folder}, expected {self.count}; "
                + self.layout_hint(root)
            )
        for p in paths:
            with Image.open(p) as im:
                size = im.size
            if self.sizes and size not in self.sizes:
                raise DatasetUnavailable(f"{self.name}: {p} has size {size}, expected one of {sorted(self.sizes)}")
            if min(size) < self.min_side:
                raise DatasetUnavailable(f"{self.name}: {p} is smaller than {self.min_side}px on a side")
        return paths

    def fetch(self, root: Path) -> None:
        folder = root / self.folder
        staging = root / f".{self.folder}.download"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        record: dict[str, str] = {}
        try:
            for url, fname in self.files:
                record[url] = download(url, staging / fname)
            for url, aname in self.archives:
                archive = root / ".archives" / aname
                if not archive.exists():
                    download(url, archive)
                record[url] = sha256_file(archive)
                safe_extract(archive, staging)
        except DownloadError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatasetUnavailable(f"{self.name}: {exc}. Offline? {self.layout_hint(root)}") from exc
        (staging / "SOURCE.json").write_text(json.dumps({"dataset": self.name, "sha256": record}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)

    def load(self, root: Path, allow_download: bool = True) -> Dataset:
        try:
            self.verify(root)
        except DatasetUnavailable:
            if not allow_download:
                raise
            self.fetch(root)
            self.verify(root)
        return Dataset.from_folder(self.name, root / self.folder)


KODAK = RemoteDataset(
    name="kodak",
    folder="kodak",
    count=24,
    description="the Kodak PhotoCD set (kodim01.png ... kodim24.png)",
    files=tuple((f"https://r0k.us/graphics/kodak/kodak/kodim{i:02d}.png", f"kodim{i:02d}.png") for i in range(1, 25)),
    sizes=frozenset({(768, 512), (512, 768)}),
)

CLIC2020_VALID = RemoteDataset(
    name="clic2020",
    folder="clic2020/professional_valid",
    count=41,
    description="the CLIC 2020 professional validation split (professional_valid_2020.zip)",
    archives=(("https://data.vision.ee.ethz.ch/cvl/clic/professional_valid_2020.zip", "professional_valid_2020.zip"),),
    min_side=256,
)

CLIC2020_TEST = RemoteDataset(
    name="clic2020-test",
    folder="clic2020/professional_test",
    count=250,
    description="the CLIC 2020 professional test split (professional_test_2020.zip)",
    archives=(("https://data.vision.ee.ethz.ch/cvl/clic/professional_test_2020.zip", "professional_test_2020.zip"),),
    min_side=256,
)

DIV2K_VALID = RemoteDataset(
    name="div2k",
    folder="div2k/DIV2K_valid_HR",
    count=100,
    description="the DIV2K validation high-resolution set (DIV2K_valid_HR.zip, 0801.png ... 0900.png)",
    archives=(("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip", "DIV2K_valid_HR.zip"),),
    min_side=256,
)
