"""Executors run ``BatchTask``s and yield their results; the driver persists them.

``local`` runs in this process on one device. Other executors (Ray) live in their own module and
register in ``EXECUTORS``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from rdp_bench.bench.tasks import BatchTask, InstanceCache, ItemResult, load_task_images, run_task


class Executor(Protocol):
    name: str

    def run(self, tasks: Iterable[BatchTask], bitstream_root: Path) -> Iterator[tuple[BatchTask, list[ItemResult]]]:
        ...


class LocalExecutor:
    name = "local"

    def __init__(self, **_: Any) -> None:
        self.cache = InstanceCache()

    def run(self, tasks: Iterable[BatchTask], bitstream_root: Path) -> Iterator[tuple[BatchTask, list[ItemResult]]]:
        # a thread decodes the next task's PNGs while this one runs (PIL releases the GIL); at most
        # two tasks' images are in memory
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdp-bench-prefetch") as pool:
            queue = iter(tasks)
            task = next(queue, None)
            loading = pool.submit(load_task_images, task) if task is not None else None
            while task is not None:
                try:
                    images = loading.result()
                except Exception:  # an image changed since it was hashed: run_task reads it and says which
                    images = None
                upcoming = next(queue, None)
                loading = pool.submit(load_task_images, upcoming) if upcoming is not None else None
                yield task, run_task(task, bitstream_root, self.cache, originals=images)
                task = upcoming


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
