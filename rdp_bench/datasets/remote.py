"""Public benchmark datasets: official URLs, cached under a data root, verified before use.

Every download is checked against a sha256 pinned here (CLIC 2020 validation and DIV2K validation, from
TensorFlow Datasets' ``url_checksums``); a cached archive is re-checked before it is extracted. Kodak and
the CLIC 2020 test archive have no sum we could pin, so they are not downloaded: put the images in place
by hand (the message says where). Each set is also checked by file count and image sizes, and the
sha256 of every downloaded file is recorded in ``SOURCE.json`` beside it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from rdp_bench.datasets.base import Dataset, DatasetUnavailable, list_images
from rdp_bench.atomic import atomic_write_text
from rdp_bench.datasets.download import DownloadError, download, safe_extract, verified


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
    #: pinned sha256 and byte size per URL; a URL without a pin is never downloaded
    sha256: dict[str, str] = field(default_factory=dict)
    sizes_bytes: dict[str, int] = field(default_factory=dict)

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
        """Download (or reuse a cached archive whose pinned sha256 matches), extract into a staging folder,
        then move it into place. Any failure removes the staging folder and raises ``DatasetUnavailable``."""
        folder = root / self.folder
        staging = root / f".{self.folder.replace('/', '_')}.download"
        record: dict[str, str] = {}
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for url, fname in self.files:
                record[url] = download(url, staging / fname, *self._pin(url))
            for url, aname in self.archives:
                sha, size = self._pin(url)
                archive = root / ".archives" / aname
                if not sha:  # never trusted, cached or not
                    download(url, archive, None)  # raises: nothing is downloaded without a pinned sum
                if not verified(archive, sha):  # a cached archive is used only when it matches
                    archive.unlink(missing_ok=True)
                    download(url, archive, sha, size)
                record[url] = sha
                safe_extract(archive, staging)
            atomic_write_text(staging / "SOURCE.json", json.dumps({"dataset": self.name, "sha256": record}, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(folder)
        except (DownloadError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatasetUnavailable(f"{self.name}: {exc}. Offline? {self.layout_hint(root)}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _pin(self, url: str) -> tuple[str | None, int | None]:
        return self.sha256.get(url), self.sizes_bytes.get(url)

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
    # TensorFlow Datasets, url_checksums/clic.txt
    sha256={"https://data.vision.ee.ethz.ch/cvl/clic/professional_valid_2020.zip":
            "00be38092ade2ab5163b65f7f6523d46c7bca147007f559adbb02c0afc236b7d"},
    sizes_bytes={"https://data.vision.ee.ethz.ch/cvl/clic/professional_valid_2020.zip": 134834429},
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
    # TensorFlow Datasets, url_checksums/div2k.txt
    sha256={"https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip":
            "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc"},
    sizes_bytes={"https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip": 448993893},
)
