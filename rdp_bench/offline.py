"""The one network policy of rdp-bench: when files may be downloaded, and when the Hub may be asked.

**Downloads** (codec weights, metric backbones, datasets) are allowed by default. Any one switch turns
them off for everything at once:

* ``RDP_BENCH_OFFLINE=1`` in the environment (also ``true``/``yes``);
* ``rdp-bench run --no-download``, which runs the sweep inside ``no_downloads()``: a context variable for
  this process, and the same environment variable for processes started meanwhile (a local Ray cluster's
  workers), restored afterwards;
* ``allow_download=False`` passed to one call (a metric's options, ``load_dataset``); passing True never
  overrides the switches above.

Every download is verified by sha256 (``rdp_bench.datasets.download.download`` refuses to fetch a file
without a pinned sum). When a file is missing and downloads are off, the message says which file to put
where (``offline_miss``).

**Network probes** -- look-ups that only inform (is a file on the Hub?) -- can be switched off for a block
of code: ``rdp-bench list`` runs inside ``no_network_probes()``, because listing must answer at once,
offline or not; ``run`` still probes.
"""

from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: set to 1 to never download anything (``--no-download`` on ``rdp-bench run`` does the same)
OFFLINE_ENV = "RDP_BENCH_OFFLINE"
#: what an offline miss says about the switches
OFF_REASON = f"downloads are off ({OFFLINE_ENV}=1 or --no-download)"

_DOWNLOADS: contextvars.ContextVar[bool] = contextvars.ContextVar("rdp_bench_downloads", default=True)
_PROBES: contextvars.ContextVar[bool] = contextvars.ContextVar("rdp_bench_network_probes", default=True)


def _env_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """Whether a missing file may be fetched now: no switch is off (``allow_download=False`` is one)."""
    return allow_download is not False and _DOWNLOADS.get() and not _env_offline()


@contextmanager
def no_downloads() -> Iterator[None]:
    """No downloads inside the block, in this process and in processes it starts (``--no-download``)."""
    token = _DOWNLOADS.set(False)
    previous = os.environ.get(OFFLINE_ENV)
    os.environ[OFFLINE_ENV] = "1"
    try:
        yield
    finally:
        _DOWNLOADS.reset(token)
        if previous is None:
            os.environ.pop(OFFLINE_ENV, None)
        else:
            os.environ[OFFLINE_ENV] = previous


def offline_miss(what: str, filename: str, folder: str | Path, url: str | None = None) -> str:
    """The one line a file that is missing while downloads are off gets: which file, where it goes."""
    source = f" (from {url})" if url else ""
    return f"{what}: {filename} not found and {OFF_REASON}; put it in {folder}{source}"


@contextmanager
def no_network_probes() -> Iterator[None]:
    token = _PROBES.set(False)
    try:
        yield
    finally:
        _PROBES.reset(token)


def network_probes_allowed() -> bool:
    return _PROBES.get()


__all__ = ["OFFLINE_ENV", "OFF_REASON", "downloads_allowed", "network_probes_allowed", "no_downloads",
           "no_network_probes", "offline_miss"]
