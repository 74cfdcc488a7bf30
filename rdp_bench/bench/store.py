"""Crash-safe results store for a run folder.

``rows.jsonl`` is the append-only source of truth: one JSON object per (codec, checkpoint, rate point,
image), each line flushed and fsync'ed. A run killed mid-write leaves at most one partial last line,
which is dropped on the next open. ``results.csv`` is the tidy table materialised from it (one row per
key, later entries completing earlier ones).

Rate columns: ``bytes`` and ``bpp`` count the codec's payload; ``container_bytes`` and ``bpp_container``
the whole file (``rdp_bench.container``). A row written under bitstream format v1 has no
``container_bytes`` (its ``bytes``/``bpp`` were the v1 container's); ``upgrade_row``/``upgrade_table``
convert such rows exactly wherever rows are read, so old run folders resume and compare in today's schema.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from rdp_bench.atomic import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)
from rdp_bench.container import legacy_rate_columns

#: a row per file and decode seed: two files with identical pixels keep their own rows (and image ids),
#: and each sample of a seeded decoder (``--seeds K``) its own row
KEY_FIELDS = ("codec", "checkpoint", "rate_label", "image_sha256", "image_id", "seed")

#: rows written before ``--seeds`` existed are seed 0: the stream's own noise, as they were decoded
_KEY_DEFAULTS = {"seed": 0}


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, _KEY_DEFAULTS.get(k, ""))) for k in KEY_FIELDS)


def _is_legacy(container_bytes: Any, nbytes: Any) -> bool:
    missing = container_bytes is None or (isinstance(container_bytes, float) and math.isnan(container_bytes))
    return missing and isinstance(nbytes, (int, float, np.integer, np.floating)) and math.isfinite(nbytes)


def upgrade_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` in today's rate columns: a format-v1 row (no ``container_bytes``) converted, others as they are."""
    if not _is_legacy(row.get("container_bytes"), row.get("bytes")):
        return row
    return {**row, **legacy_rate_columns(str(row["codec"]), row["bytes"], row["height"], row["width"])}


def upgrade_table(table: pd.DataFrame) -> pd.DataFrame:
    """``upgrade_row`` over a results table (a new table when any row changes)."""
    if "bytes" not in table.columns:
        return table
    current = table["container_bytes"] if "container_bytes" in table.columns else [None] * len(table)
    if not any(_is_legacy(c, b) for c, b in zip(current, table["bytes"])):
        return table
    out = pd.DataFrame([upgrade_row(r) for r in table.to_dict("records")], index=table.index)
    for key in ("bytes", "container_bytes"):  # whole numbers again once every row has them
        if out[key].notna().all():
            out[key] = out[key].astype("int64")
    return out


def with_seed_column(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a whole-number ``seed`` column: rows from before ``--seeds`` (or from other codecs in a
    merged table) are seed 0, the stream's own noise."""
    if table.empty:
        return table
    seeds = table["seed"].fillna(0) if "seed" in table.columns else 0
    return table.assign(seed=seeds).astype({"seed": "int64"})


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: store them as strings a reader turns back into floats.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _restore(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


class JsonlLog:
    """Append-only JSON-lines file that tolerates a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1  # drop the torn tail left by a killed writer
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                out.append({k: _restore(v) for k, v in json.loads(line).items()})
        return out

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in record.items()}, default=_json_default, sort_keys=True) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


class ResultsStore:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rows_log = JsonlLog(self.run_dir / "rows.jsonl")
        self.dataset_log = JsonlLog(self.run_dir / "dataset_metrics.jsonl")
        self._rows: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in self.rows_log.read():
            self._merge(row)
        self._dataset_rows: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in self.dataset_log.read():
            self._dataset_rows[self.dataset_key(row)] = {**_KEY_DEFAULTS, **row}

    # per-image rows -------------------------------------------------------------------------
    def _merge(self, row: dict[str, Any]) -> None:
        key = row_key(row)
        self._rows[key] = {**_KEY_DEFAULTS, **self._rows.get(key, {}), **upgrade_row(row)}

    def get(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        return self._rows.get(key)

    def add(self, row: dict[str, Any]) -> None:
        self.rows_log.append(row)
        self._merge(row)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    # dataset-level rows ---------------------------------------------------------------------
    @staticmethod
    def dataset_key(row: dict[str, Any]) -> tuple[str, ...]:
        return (*(str(row[k]) for k in ("codec", "checkpoint", "rate_label", "dataset_fingerprint", "metric")),
                str(row.get("seed", 0)))

    def get_dataset(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        return self._dataset_rows.get(key)

    def add_dataset(self, row: dict[str, Any]) -> None:
        self.dataset_log.append(row)
        self._dataset_rows[self.dataset_key(row)] = {**_KEY_DEFAULTS, **row}

    def dataset_rows(self) -> list[dict[str, Any]]:
        return list(self._dataset_rows.values())

    # tables -----------------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows())

    def dataset_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.dataset_rows())

    def write_tables(self) -> None:
        table = self.table()
        if not table.empty:
            table = table.sort_values(["codec", "rate_id", "image_id", "seed"], kind="stable")
        atomic_write_text(self.run_dir / "results.csv", table.to_csv(index=False))
        atomic_write_text(self.run_dir / "dataset_metrics.csv", self.dataset_table().to_csv(index=False))


def partial_file(run_dir: str | Path, metric: str, codec: str, checkpoint: str, rate_label: str, sha: str,
                 seed: int = 0) -> Path:
    """Where a run keeps one image's dataset-metric partial (FID/KID: its patches' Inception features);
    a seeded decoder's sample ``seed`` > 0 gets its own file."""
    rate = re.sub(r"[^A-Za-z0-9._=-]+", "_", rate_label)
    suffix = f"-s{int(seed)}" if seed else ""
    return Path(run_dir) / "partials" / metric / codec / checkpoint[:12] / rate / f"{sha[:24]}{suffix}.npz"


def iter_partials(paths: Iterable[Path]) -> Iterable[dict[str, np.ndarray]]:
    for p in paths:
        with np.load(p) as z:
            yield {k: z[k] for k in z.files}
