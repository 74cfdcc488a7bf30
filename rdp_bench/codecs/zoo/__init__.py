"""Weights tables: the fixed list of rate points of each learned codec, CompressAI-zoo style.

Each table (one module per codec) declares every rate point the codec has: a stable numeric id (what a
bitstream's header carries, never reused or renumbered), a label, the codec parameters, the weights
file, and its sha256 when known. Which files happen to be on disk decides only which rate points can
run here; a missing file makes its own rate point unavailable, with a message naming the file and the
folder to put it in, and never shifts the ids of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from rdp_bench.codecs.base import RatePoint

#: rate id of a model given as ``checkpoint=FILE`` outside a codec's table: no table entry has it, so a
#: codec at default options refuses such a stream instead of decoding it with a table model
CUSTOM_RATE_ID = 0xFFFF


@dataclass(frozen=True)
class WeightsEntry:
    """One rate point of a learned codec and the weights file behind it."""

    id: int
    label: str
    file: str
    params: Mapping[str, Any] = field(default_factory=dict)
    #: pinned in code, checked on load; None where upstream publishes none (the file's own sha256 is recorded)
    sha256: str | None = None
    url: str | None = None
    license: str | None = None

    def rate_point(self, path: str | Path, **extra: Any) -> RatePoint:
        params = {**self.params, **extra, "file": str(path)}
        if self.sha256:
            params["sha256"] = self.sha256
        return RatePoint(self.label, params, id=self.id)

    def missing(self, codec: str, folder: Path) -> str:
        """The one line a missing file gets: which rate point, which file, where to put it."""
        source = f" (from {self.url})" if self.url else ""
        return f"{codec}: rate point {self.label} (id {self.id}) needs {self.file}; put it in {folder}{source}"


def check_table(codec: str, table: Iterable[WeightsEntry]) -> tuple[WeightsEntry, ...]:
    """The table as a tuple, after checking that its ids, labels and files are unique (a clash would make
    two rate points share streams)."""
    entries = tuple(table)
    for attr in ("id", "label", "file"):
        values = [getattr(e, attr) for e in entries]
        if len(set(values)) != len(values):
            raise ValueError(f"{codec} weights table: duplicate {attr} in {values}")
    if any(not 0 <= e.id < CUSTOM_RATE_ID for e in entries):
        raise ValueError(f"{codec} weights table: ids must be in 0..{CUSTOM_RATE_ID - 1}")
    return entries


def entry_by_file(table: Iterable[WeightsEntry], filename: str) -> WeightsEntry | None:
    return next((e for e in table if e.file == filename), None)


__all__ = ["CUSTOM_RATE_ID", "WeightsEntry", "check_table", "entry_by_file"]
