"""Atomic file output: write beside the target, fsync, then rename over it.

A reader (or a killed writer's next run) sees either the old file or the complete new one, never a
truncated one. Every run-folder and report file goes through here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


def _temp_name(path: Path) -> Path:
    # same folder (rename stays on one file system), unique per writer, and the real suffix last so
    # that tools choosing a format by extension (savefig, np.save) still do the right thing
    return path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed it already: flush to disk here
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]
