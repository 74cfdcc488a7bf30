"""Dataset registry: ``samples`` (bundled), ``kodak``, ``clic2020-test``, ``clic2020-valid``, ``div2k-valid``
and ``folder:PATH``.

``clic``, ``clic2020`` -> ``clic2020-test`` (the 428 images HiFiC's and MS-ILLM's FID/256 numbers use, and
the set their results files call "clic2020"); ``div2k`` -> ``div2k-valid``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rdp_bench.datasets.base import Dataset, DatasetUnavailable, ImageItem, default_data_root
from rdp_bench.datasets.remote import CLIC2020_TEST, CLIC2020_VALID, DIV2K_VALID, KODAK, RemoteDataset

SAMPLES_DIR = Path(__file__).parent / "samples"

REMOTE: dict[str, RemoteDataset] = {d.name: d for d in (KODAK, CLIC2020_TEST, CLIC2020_VALID, DIV2K_VALID)}
ALIASES = {"clic": "clic2020-test", "clic2020": "clic2020-test", "div2k": "div2k-valid"}


def canonical_name(name: str) -> str:
    """The registry name behind an alias (``clic`` -> ``clic2020-test``); other names unchanged."""
    return ALIASES.get(name, name)


def dataset_names() -> list[str]:
    return ["samples", *REMOTE, "folder:PATH"]


def describe_datasets() -> dict[str, str]:
    out = {"samples": f"10 bundled photographs (CC0 / public domain / CC-BY), {SAMPLES_DIR}"}
    out.update({name: d.description for name, d in REMOTE.items()})
    out["folder:PATH"] = "every image under PATH (recursive)"
    return out


@dataclass(frozen=True)
class DatasetListing:
    """One line of ``rdp-bench list datasets``."""

    name: str
    aliases: tuple[str, ...]
    images: int | None
    present: bool
    where: str
    download: str  # "1.6 GB, sha256 pinned" / "not downloaded (no pinned sha256): put the files by hand"
    description: str


def _size_text(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def list_datasets(data_root: str | Path | None = None) -> list[DatasetListing]:
    """Every dataset with where it is (or would be), whether it is there, its image count and download size.

    Only file names are looked at: nothing is decoded or downloaded."""
    root = Path(data_root).expanduser() if data_root else default_data_root()
    aliases = lambda n: tuple(a for a, t in ALIASES.items() if t == n)  # noqa: E731
    samples = len(Dataset.from_folder("samples", SAMPLES_DIR))
    out = [DatasetListing("samples", (), samples, True, str(SAMPLES_DIR), "bundled", describe_datasets()["samples"])]
    for name, d in REMOTE.items():
        st = d.status(root)
        size = d.download_bytes
        if d.pinned and size is not None:
            how = f"{_size_text(size)}, sha256 pinned"
        else:
            how = "not downloaded (no pinned sha256): put the images in place by hand"
        where = str(st.where) if st.present else f"{st.where} ({st.detail})"
        out.append(DatasetListing(name, aliases(name), d.count, st.present, where, how, d.description))
    out.append(DatasetListing("folder:PATH", (), None, True, "PATH", "-", describe_datasets()["folder:PATH"]))
    return out


def load_dataset(name: str, data_root: str | Path | None = None, allow_download: bool | None = None,
                 limit: int | None = None) -> Dataset:
    """Resolve a dataset by name; remote sets are downloaded into ``data_root`` on first use, unless
    downloads are off (``allow_download=False``, ``RDP_BENCH_OFFLINE=1``, ``--no-download``)."""
    name = canonical_name(name)
    if name == "samples":
        ds = Dataset.from_folder("samples", SAMPLES_DIR)
    elif name.startswith("folder:"):
        ds = Dataset.from_folder(name, Path(name.split(":", 1)[1]).expanduser())
    elif name in REMOTE:
        root = Path(data_root).expanduser() if data_root else default_data_root()
        ds = REMOTE[name].load(root, allow_download=allow_download)
    else:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())} (aliases: "
                       f"{', '.join(f'{a} = {t}' for a, t in ALIASES.items())})")
    if limit is not None:
        ds.items = ds.items[:limit]
    return ds


__all__ = ["Dataset", "DatasetListing", "DatasetUnavailable", "ImageItem", "canonical_name", "dataset_names",
           "default_data_root", "describe_datasets", "list_datasets", "load_dataset"]
