"""Network look-ups that only inform (is a file on the Hub?) can be switched off for a block of code.

``rdp-bench list`` runs inside ``no_network_probes()``: listing must answer at once, offline or not;
``run`` still probes and downloads as before.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator

_PROBES: contextvars.ContextVar[bool] = contextvars.ContextVar("rdp_bench_network_probes", default=True)


@contextmanager
def no_network_probes() -> Iterator[None]:
    token = _PROBES.set(False)
    try:
        yield
    finally:
        _PROBES.reset(token)


def network_probes_allowed() -> bool:
    return _PROBES.get()
