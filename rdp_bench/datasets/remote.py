"""Public benchmark datasets: official URLs, pinned by sha256, cached under a data root, verified before use.

Every archive and file rdp-bench downloads has its sha256 and byte size pinned here, copied from
TensorFlow Datasets' ``url_checksums`` (CLIC, DIV2K) or, for Kodak, from a TFDS-format checksum file
(the sources are named beside each pin). A cached archive is re-checked before it is extracted, and an
archive placed by hand in ``DATA_ROOT/.archives/`` is used offline once its sum matches. A set with a
file that has no pinned sum is never downloaded: put the images in place by hand (the message says
where). Images placed by hand (any set) are accepted by count, size and, once written, the manifest.

After extraction the image count is checked, and a per-image manifest (``MANIFEST.csv``: name, size,
colour mode, file bytes, sha256 of the decoded 8-bit RGB pixels) is written beside the images; later
loads compare the files with it, so a changed or missing image is named instead of silently measured.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from rdp_bench.atomic import atomic_write_text
from rdp_bench.datasets.base import Dataset, DatasetUnavailable, list_images
from rdp_bench.datasets.download import DownloadError, download, safe_extract, verified
from rdp_bench.imageio import IMAGE_SUFFIXES, image_sha256, load_image_uint8
from rdp_bench.offline import OFF_REASON, downloads_allowed

MANIFEST = "MANIFEST.csv"
MANIFEST_FIELDS = ("image_id", "width", "height", "mode", "bytes", "pixel_sha256")
#: Pillow modes that hold no colour; such images are converted to RGB (channel repeated) when loaded
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass(frozen=True)
class Archive:
    """One file to fetch. ``sha256``/``size`` are the pins (None: not pinned, so never downloaded)."""

    url: str
    name: str
    sha256: str | None = None
    size: int | None = None
    source: str = ""  # where the pin was copied from
    images: int | None = None  # images it holds, when known (checked after extraction)


@dataclass(frozen=True)
class DatasetStatus:
    present: bool
    where: Path
    detail: str  # "41 images", "found 3 of 24 images", "not found"


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    folder: str
    count: int
    description: str
    #: archives are extracted (several into one sub-folder each); ``files`` are single images
    archives: tuple[Archive, ...] = ()
    files: tuple[Archive, ...] = ()
    #: allowed (width, height) pairs, empty for "any size"
    sizes: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    min_side: int = 0

    # --- facts for `rdp-bench list datasets` -------------------------------------------------------
    @property
    def pinned(self) -> bool:
        parts = (*self.archives, *self.files)
        return bool(parts) and all(p.sha256 for p in parts)

    @property
    def download_bytes(self) -> int | None:
        parts = (*self.archives, *self.files)
        sizes = [p.size for p in parts]
        return sum(sizes) if parts and all(s is not None for s in sizes) else None  # type: ignore[misc]

    def status(self, root: Path) -> DatasetStatus:
        """Cheap presence check (file names only, nothing decoded)."""
        folder = root / self.folder
        if not folder.is_dir():
            return DatasetStatus(False, folder, "not found")
        n = len(list_images(folder))
        if n != self.count:
            return DatasetStatus(False, folder, f"found {n} of {self.count} images")
        return DatasetStatus(True, folder, f"{n} images")

    # --- messages ------------------------------------------------------------------------------------
    def layout_hint(self, root: Path) -> str:
        """What to put where, in one line."""
        pinned = [a for a in self.archives if a.sha256]
        if pinned:
            names = " and ".join(f"{a.name} ({a.size:,} bytes)" if a.size else a.name for a in pinned)
            return (f"put {names} in {root / '.archives'}/ (verified by sha256, then extracted), or the {self.count} "
                    f"images of {self.description} under {root / self.folder}/; --data-root or RDP_BENCH_DATA "
                    f"chooses another data root")
        return (f"put the {self.count} images of {self.description} under {root / self.folder}/ (any sub-folders; "
                f"png/jpg); --data-root or RDP_BENCH_DATA chooses another data root")

    # --- checks --------------------------------------------------------------------------------------
    def _check_images(self, folder: Path, root: Path, after_extraction: bool = False) -> list[Path]:
        paths = list_images(folder) if folder.is_dir() else []
        if len(paths) != self.count:
            if after_extraction:
                raise DatasetUnavailable(f"{self.name}: the archive(s) gave {len(paths)} images, expected {self.count}; "
                                         "the download is not the pinned set")
            raise DatasetUnavailable(f"{self.name}: found {len(paths)} images under {folder}, expected {self.count}; "
                                     + self.layout_hint(root))
        return paths

    def _check_sizes(self, rows: list[dict[str, str]]) -> None:
        for row in rows:
            size = (int(row["width"]), int(row["height"]))
            if self.sizes and size not in self.sizes:
                raise DatasetUnavailable(f"{self.name}: {row['image_id']} has size {size}, expected one of "
                                         f"{sorted(self.sizes)}")
            if min(size) < self.min_side:
                raise DatasetUnavailable(f"{self.name}: {row['image_id']} is smaller than {self.min_side}px on a side")

    def verify(self, root: Path) -> list[Path]:
        """Image count, sizes and the manifest (written on first use of a hand-placed set)."""
        folder = root / self.folder
        paths = self._check_images(folder, root)
        manifest = folder / MANIFEST
        if manifest.is_file():
            rows = read_manifest(manifest)
            check_against_manifest(self.name, folder, paths, rows)
        else:
            rows = build_manifest(folder, paths)
            self._check_sizes(rows)
            try:
                write_manifest(manifest, rows)
            except OSError:
                pass  # a read-only copy of the set is still usable; the checks above ran
        self._check_sizes(rows)
        return paths

    # --- fetching ------------------------------------------------------------------------------------
    def _archive_ready(self, root: Path, part: Archive, allow_download: bool) -> Path:
        archive = root / ".archives" / part.name
        assert part.sha256, "fetch() refuses unpinned parts first"
        if verified(archive, part.sha256):  # a cached or hand-placed archive is used only when it matches
            return archive
        if not allow_download:
            state = "does not match its pinned sha256" if archive.exists() else "is not there"
            raise DownloadError(f"{archive} {state} and {OFF_REASON}")
        archive.unlink(missing_ok=True)
        download(part.url, archive, part.sha256, part.size)
        return archive

    def fetch(self, root: Path, allow_download: bool | None = None) -> None:
        """Download (or reuse a verified archive), extract into a staging folder, check the image count
        and write the manifest there, then move it into place. Any failure removes the staging folder and
        raises ``DatasetUnavailable``. Downloads follow ``rdp_bench.offline.downloads_allowed``."""
        allow_download = downloads_allowed(allow_download)
        folder = root / self.folder
        if not self.pinned:
            unpinned = [p.name for p in (*self.archives, *self.files) if not p.sha256]
            raise DatasetUnavailable(f"{self.name}: rdp-bench pins no sha256 for {unpinned[0]}"
                                     f"{f' (and {len(unpinned) - 1} more)' if len(unpinned) > 1 else ''}, so it is "
                                     f"not downloaded; {self.layout_hint(root)}")
        staging = root / f".{self.folder.replace('/', '_')}.download"
        record: dict[str, str] = {}
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for part in self.files:
                if not allow_download:
                    raise DownloadError(f"{part.name} is not there and {OFF_REASON}")
                record[part.url] = download(part.url, staging / part.name, part.sha256, part.size)
            for part in self.archives:
                archive = self._archive_ready(root, part, allow_download)
                record[part.url] = str(part.sha256)
                # several archives (professional + mobile) each get a folder: their entries may share names
                target = staging / Path(part.name).stem if len(self.archives) > 1 else staging
                written = []
                for p in safe_extract(archive, target):
                    if _is_resource_fork(p, target):
                        p.unlink(missing_ok=True)
                    else:
                        written.append(p)
                shutil.rmtree(target / "__MACOSX", ignore_errors=True)
                got = sum(1 for p in written if p.suffix.lower() in IMAGE_SUFFIXES)
                if part.images is not None and got != part.images:
                    raise DatasetUnavailable(f"{self.name}: {part.name} holds {got} images, expected {part.images}")
            paths = self._check_images(staging, root, after_extraction=True)
            rows = build_manifest(staging, paths)
            self._check_sizes(rows)
            write_manifest(staging / MANIFEST, rows)
            atomic_write_text(staging / "SOURCE.json", json.dumps({"dataset": self.name, "sha256": record}, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(folder)
        except (DownloadError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatasetUnavailable(f"{self.name}: {exc}. {self.layout_hint(root)}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def load(self, root: Path, allow_download: bool | None = None) -> Dataset:
        allow_download = downloads_allowed(allow_download)  # the one policy: RDP_BENCH_OFFLINE, --no-download
        try:
            self.verify(root)
        except DatasetUnavailable as missing:
            if self.status(root).present:
                raise  # the images are there but wrong (manifest, sizes): never overwrite them silently
            if not allow_download and not (self.pinned and self.archives):
                if self.pinned:  # it would have been downloaded: say why it was not
                    raise DatasetUnavailable(f"{missing} ({OFF_REASON})") from None
                raise
            try:
                self.fetch(root, allow_download=allow_download)
            except DatasetUnavailable:
                if not allow_download:  # offline: the one line that says what to put where
                    raise DatasetUnavailable(f"{missing} ({OFF_REASON})") from None
                raise
            self.verify(root)
        ds = Dataset.from_folder(self.name, root / self.folder)
        gray = grayscale_count(root / self.folder / MANIFEST)
        if gray:
            ds.notes.append(f"{gray} of {len(ds)} images are grayscale; they are converted to RGB (the channel "
                            "repeated), as TensorFlow Datasets' clic does")
        return ds


def _is_resource_fork(path: Path, root: Path) -> bool:
    """macOS zip debris (``__MACOSX/._x.png``): named like images, holds none, so it must not be counted."""
    parts = path.relative_to(root).parts
    return "__MACOSX" in parts or path.name.startswith("._")


# --- manifest ----------------------------------------------------------------------------------------
def build_manifest(folder: Path, paths: list[Path]) -> list[dict[str, str]]:
    """One row per image: id, size, original colour mode, file bytes, sha256 of the 8-bit RGB pixels."""
    rows = []
    for p in paths:
        with Image.open(p) as im:
            width, height, mode = im.width, im.height, im.mode
        rows.append({"image_id": p.relative_to(folder).as_posix(), "width": str(width), "height": str(height),
                     "mode": mode, "bytes": str(p.stat().st_size), "pixel_sha256": image_sha256(load_image_uint8(p))})
    return rows


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_against_manifest(name: str, folder: Path, paths: list[Path], rows: list[dict[str, str]]) -> None:
    """Same image names and byte sizes as recorded (cheap: nothing decoded); else say which file differs."""
    recorded = {r["image_id"]: int(r["bytes"]) for r in rows}
    found = {p.relative_to(folder).as_posix(): p.stat().st_size for p in paths}
    for image_id, size in sorted(recorded.items()):
        if image_id not in found:
            raise DatasetUnavailable(f"{name}: {folder / image_id} is listed in {folder / MANIFEST} but missing; "
                                     "restore it, or delete the folder to extract the set again")
        if found[image_id] != size:
            raise DatasetUnavailable(f"{name}: {folder / image_id} is {found[image_id]} bytes, {folder / MANIFEST} "
                                     f"recorded {size}; the image changed since extraction")
    extra = sorted(set(found) - set(recorded))
    if extra:
        raise DatasetUnavailable(f"{name}: {folder / extra[0]} is not in {folder / MANIFEST}")


def grayscale_count(manifest: Path) -> int:
    if not manifest.is_file():
        return 0
    return sum(1 for r in read_manifest(manifest) if r.get("mode") in GRAYSCALE_MODES)


# --- the registry ----------------------------------------------------------------------------------
_TFDS_CLIC = "TensorFlow Datasets tensorflow_datasets/url_checksums/clic.txt @ 31f1255e57e519a6c004f0b097a2f5cfcf0dde7d"
_TFDS_DIV2K = "TensorFlow Datasets tensorflow_datasets/url_checksums/div2k.txt @ 1054f22dfd67025f459c5735206ab404dbb12a6e"
_CLIC = "https://data.vision.ee.ethz.ch/cvl/clic"

#: Kodak's 24 PNGs as r0k.us serves them: (bytes, sha256), copied from the TFDS-format checksum file of
#: the kodak24 builder in HedgehogCode/tensorflow-datasets-bw (TensorFlow Datasets' own catalogue has no
#: Kodak); NeuralCompression's Kodak loader checks the same files, concatenated in order, against the
#: SHA-1 076e2a5fd4515b5fda677f15fe63dd112d266bc5
_KODAK_SOURCE = ("HedgehogCode/tensorflow-datasets-bw tensorflow_datasets_bw/kodak24/checksums.tsv @ "
                 "26303b19a0275a0a35b1818785e5401742894c12")
_KODAK_PINS = (
    (736501, "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd"),
    (617995, "4f4b74a79237e311d72cad958237b5f7088d8bce1c82305ebefe1a70e3022dfd"),
    (502888, "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db"),
    (637432, "e3b946107c5d3441c022f678d0c3caf1e224d81b1604ba840a4f88e562de61aa"),
    (785610, "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53"),
    (618959, "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18"),
    (566322, "b77d3f006f42414bb242222e0482e750c0fb9e5ee8d4bed2f6f11c5605fe54a4"),
    (788470, "ba23983c76b4832ee0e8af0592664756841a16779acd69f792e268fb6d13d6e7"),
    (582899, "6a4361c2fc194feb4edaa9f9a4a0620fb9943e460ac7fdf037fb0f6dd6607a7d"),
    (593463, "9dfb70f5867c29ff9ed6313683f19b3d867849e40fbc0c4c54a4a89df341cf23"),
    (621023, "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6"),
    (531024, "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980"),
    (822712, "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08"),
    (692201, "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e"),
    (612582, "7538cbb80cb9103606c48b806eae57d56c885c7f90b9b3be70a41160f9cbb683"),
    (534247, "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54"),
    (602078, "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b"),
    (780947, "1a9258c365988961d87a0598725b609139c303ad48a5aad6c503c3b1a87849aa"),
    (671476, "b7450b264b1b0a411390d8931b112c27905a992520fc90569dc4b920aa32bbdc"),
    (492462, "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a"),
    (637051, "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b"),
    (701970, "1cee58eb1f2d9c7ebb254d208a03c783ce6cf2c4d8c2cf45e235dd23b4ce1b29"),
    (557596, "e3111a2fd4da24af15d6459ef9eacfe54106b38e27b4a21821b75c3f5d2d5baf"),
    (706397, "1071c68372cc5a01435c2c225a5cf7d4bb803846ec08bb6b3d6721b156d7cb96"),
)

KODAK = RemoteDataset(
    name="kodak",
    folder="kodak",
    count=24,
    description="the Kodak PhotoCD set (kodim01.png ... kodim24.png)",
    # the URLs as the pins' source records them (plain http: every file is checked against its sha256)
    files=tuple(Archive(f"http://r0k.us/graphics/kodak/kodak/kodim{i:02d}.png", f"kodim{i:02d}.png", sha, size,
                        _KODAK_SOURCE, 1)
                for i, (size, sha) in enumerate(_KODAK_PINS, start=1)),
    sizes=frozenset({(768, 512), (512, 768)}),
)

CLIC2020_VALID = RemoteDataset(
    name="clic2020-valid",
    folder="clic2020/professional_valid",
    count=41,
    description="the CLIC 2020 professional validation split (professional_valid_2020.zip)",
    archives=(Archive(f"{_CLIC}/professional_valid_2020.zip", "professional_valid_2020.zip",
                      "00be38092ade2ab5163b65f7f6523d46c7bca147007f559adbb02c0afc236b7d", 134_834_429, _TFDS_CLIC),),
    min_side=256,
)

CLIC2020_TEST = RemoteDataset(
    name="clic2020-test",
    folder="clic2020/test",
    count=428,
    description=("the CLIC 2020 test set, professional (250) + mobile (178) merged as TensorFlow Datasets' clic "
                 "test split; HiFiC's and MS-ILLM's FID/256 set"),
    archives=(
        Archive(f"{_CLIC}/test/CLIC2020Professional_test.zip", "CLIC2020Professional_test.zip",
                "857df244fc2bfa5da28d4c66bf0db16ee99bfc79eb807be8afa89cd507852884", 891_643_809, _TFDS_CLIC, 250),
        Archive(f"{_CLIC}/test/CLIC2020Mobile_test.zip", "CLIC2020Mobile_test.zip",
                "2025f07a6c652270e534640de4271feef3b3dd3260beed4ac4821064837aa732", 721_789_976, _TFDS_CLIC, 178),
    ),
    min_side=256,
)

DIV2K_VALID = RemoteDataset(
    name="div2k-valid",
    folder="div2k/DIV2K_valid_HR",
    count=100,
    description="the DIV2K validation high-resolution set (DIV2K_valid_HR.zip, 0801.png ... 0900.png)",
    archives=(Archive("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip", "DIV2K_valid_HR.zip",
                      "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc", 448_993_893, _TFDS_DIV2K),),
    min_side=256,
)
