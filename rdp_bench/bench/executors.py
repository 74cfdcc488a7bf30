"""Executors run ``BatchTask``s and yield their results; the driver persists them.

``local`` runs in this process on one device. Other executors (Ray) live in their own module and
register in ``EXECUTORS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from rdp_bench.bench.tasks import BatchTask, InstanceCache, ItemResult, run_task


class Executor(Protocol):
    name: str

    def run(self, tasks: Iterable[BatchTask], bitstream_root: Path) -> Iterator[tuple[BatchTask, list[ItemResult]]]:
        ...


class LocalExecutor:
    name = "local"

    def __init__(self, **_: Any) -> None:
        self.cache = InstanceCache()

    def run(self, tasks: Iterable[BatchTask], bitstream_root: Path) -> Iterator[tuple[BatchTask, list[ItemResult]]]:
        for task in tasks:
            yield task, run_task(task, bitstream_root, self.cache)


EXECUTORS: dict[str, str] = {
    "local": "rdp_bench.bench.executors:LocalExecutor",
    "ray": "rdp_bench.bench.ray_executor:RayExecutor",
}


def get_executor(name: str, **options: Any) -> Executor:
    import importlib

    try:
        module, _, attr = EXECUTORS[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}") from None
    return getattr(importlib.import_module(module), attr)(**options)
