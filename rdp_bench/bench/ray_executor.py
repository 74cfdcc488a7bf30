"""Runs a sweep's ``BatchTask``s as Ray tasks (``--executor ray [--ray-address ADDR]``).

Ray does the scheduling, placement and retries; this module only submits, waits and hands results
back. Each task is one (codec, rate point, image shard) and runs ``run_task`` on a worker, which
writes and decodes its bitstreams in a worker-local temp folder and returns them as bytes inside the
``ItemResult``s. Only the driver writes to the run folder (``Sweep.commit``), so:

* the results table is the same one a local run writes, and resuming skips finished keys;
* a task retried after its worker died leaves nothing behind on the worker side, and the driver
  commits the one result Ray returns for it: no duplicate rows;
* FID/KID partials travel back with the rows and are reduced by the driver, exactly like a local run.

Workers need ``rdp-bench`` installed and the dataset at the same path (a shared file system on a
multi-node cluster). At most ``max_in_flight`` tasks are outstanding, so the driver never holds more
than that many tasks' results (bounded memory for datasets of thousands of images).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from rdp_bench.bench.tasks import BatchTask, InstanceCache, ItemResult, run_task

# Codec and metric objects stay alive in a worker process between tasks (weights load once). Keyed
# by the GPUs Ray assigned, because a reused worker may see a different CUDA_VISIBLE_DEVICES.
_WORKER_CACHES: dict[str | None, InstanceCache] = {}


def run_shard(task: BatchTask, reused_bitstreams: dict[str, bytes]) -> list[ItemResult]:
    """The body of one Ray task: encode, write to a local temp folder, decode from it, measure."""
    cache = _WORKER_CACHES.setdefault(os.environ.get("CUDA_VISIBLE_DEVICES"), InstanceCache())
    with tempfile.TemporaryDirectory(prefix="rdp-bench-shard-") as scratch:
        root = Path(scratch)
        for rel, data in reused_bitstreams.items():  # bitstreams the driver already has: decode those bytes
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return run_task(task, root, cache)


def _codec_wants_gpu(name: str) -> bool:
    from rdp_bench.codecs import codec_class

    return bool(getattr(codec_class(name), "wants_gpu", False))


class RayExecutor:
    """Streams ``(task, results)`` back in completion order; see the module docstring."""

    name = "ray"
    #: what each Ray task runs; a subclass may wrap it (the tests inject worker deaths this way)
    task_function = staticmethod(run_shard)

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_task: float = 1.0,
        gpus_per_task: float = 1.0,
        max_retries: int = 3,
        max_in_flight: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        """``address``: an existing cluster ("auto", "HOST:PORT", "ray://HOST:PORT"); None starts a
        local one (or joins $RAY_ADDRESS) with ``num_cpus`` CPUs. ``max_retries``: re-runs of a task
        whose worker died. ``max_in_flight``: tasks outstanding at once (default: 2 x task slots)."""
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self.runtime_env = runtime_env

    def _connect(self) -> bool:
        """Joins or starts a cluster unless this process is already connected; True if we started it."""
        import ray

        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        if self.address:
            ray.init(address=self.address, **options)
        else:
            ray.init(num_cpus=self.num_cpus, **options)
        return True

    def run(self, tasks: Iterable[BatchTask], bitstream_root: Path) -> Iterator[tuple[BatchTask, list[ItemResult]]]:
        import ray

        started = self._connect()
        pending: dict[Any, BatchTask] = {}
        try:
            resources = ray.cluster_resources()
            has_gpus = resources.get("GPU", 0) > 0
            slots = max(1, int(resources.get("CPU", 1) // max(self.cpus_per_task, 1e-9)))
            limit = self.max_in_flight or 2 * slots
            remote = ray.remote(self.task_function)
            gpu_by_codec: dict[str, bool] = {}

            def submit(task: BatchTask) -> None:
                if task.codec not in gpu_by_codec:
                    gpu_by_codec[task.codec] = has_gpus and task.device != "cpu" and _codec_wants_gpu(task.codec)
                reused = {item.bitstream_rel: (Path(bitstream_root) / item.bitstream_rel).read_bytes()
                          for item in task.items if item.reuse_bitstream}
                ref = remote.options(
                    num_cpus=self.cpus_per_task,
                    num_gpus=self.gpus_per_task if gpu_by_codec[task.codec] else 0,
                    max_retries=self.max_retries,
                    retry_exceptions=False,  # an error in our code would fail again; only lost workers retry
                    name=f"rdp-bench:{task.codec}:{task.rate_label}",
                ).remote(task, reused)
                pending[ref] = task

            queue = iter(tasks)
            failure: BaseException | None = None
            while True:
                while failure is None and len(pending) < limit:
                    task = next(queue, None)
                    if task is None:
                        break
                    submit(task)
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        # keep collecting what is already running (it gets committed), then raise
                        failure = failure or exc
                        continue
                    yield task, results
            if failure is not None:
                if isinstance(failure, ray.exceptions.RayTaskError):
                    raise failure.as_instanceof_cause()
                raise failure
        finally:
            for ref in pending:  # the consumer stopped early: don't leave work running
                ray.cancel(ref)
            if started:
                ray.shutdown()
