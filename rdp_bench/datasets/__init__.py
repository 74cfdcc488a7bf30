"""Dataset registry: ``samples`` (bundled), ``kodak``, ``clic2020``, ``clic2020-test``, ``div2k`` and
``folder:PATH``."""

from __future__ import annotations

from pathlib import Path

from rdp_bench.datasets.base import Dataset, DatasetUnavailable, ImageItem, default_data_root
from rdp_bench.datasets.remote import CLIC2020_TEST, CLIC2020_VALID, DIV2K_VALID, KODAK, RemoteDataset

SAMPLES_DIR = Path(__file__).parent / "samples"

REMOTE: dict[str, RemoteDataset] = {d.name: d for d in (KODAK, CLIC2020_VALID, CLIC2020_TEST, DIV2K_VALID)}
ALIASES = {"clic": "clic2020"}


def dataset_names() -> list[str]:
    return ["samples", *REMOTE, "folder:PATH"]


def describe_datasets() -> dict[str, str]:
    out = {"samples": f"10 bundled photographs (CC0 / public domain / CC-BY), {SAMPLES_DIR}"}
    out.update({name: d.description for name, d in REMOTE.items()})
    out["folder:PATH"] = "every image under PATH (recursive)"
    return out


def load_dataset(name: str, data_root: str | Path | None = None, allow_download: bool = True, limit: int | None = None) -> Dataset:
    """Resolve a dataset by name; remote sets are downloaded into ``data_root`` on first use."""
    name = ALIASES.get(name, name)
    if name == "samples":
        ds = Dataset.from_folder("samples", SAMPLES_DIR)
    elif name.startswith("folder:"):
        ds = Dataset.from_folder(name, Path(name.split(":", 1)[1]).expanduser())
    elif name in REMOTE:
        root = Path(data_root).expanduser() if data_root else default_data_root()
        ds = REMOTE[name].load(root, allow_download=allow_download)
    else:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    if limit is not None:
        ds.items = ds.items[:limit]
    return ds


__all__ = ["Dataset", "DatasetUnavailable", "ImageItem", "default_data_root", "dataset_names", "describe_datasets", "load_dataset"]
