"""Downloads with sha256 records and archive extraction that never writes outside its target."""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path


class DownloadError(RuntimeError):
    """A download or an archive failed; the message names the URL or entry. No partial output is left."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, expected_sha256: str | None, expected_size: int | None = None,
             timeout: float = 30.0) -> str:
    """Download ``url`` to ``dest`` atomically and return its sha256, which must equal ``expected_sha256``
    (a full digest, or a prefix of at least 8 hex digits as in torchvision's file names).

    Nothing is downloaded without a pinned sum. The body must be as long as its Content-Length (and as
    ``expected_size`` when given). Every failure is a ``DownloadError`` and leaves no partial file; the
    file gets ordinary permissions (0644).
    """
    dest = Path(dest)
    if not expected_sha256 or len(expected_sha256) < 8:
        raise DownloadError(f"refusing to download {url}: rdp-bench pins no sha256 for it, so the file could not be "
                            f"verified; download it yourself and put it at {dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest.parent}: {exc.strerror or exc}") from exc
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        h, size = hashlib.sha256(), 0
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            declared = resp.headers.get("Content-Length")
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
        if declared is not None and declared.strip().isdigit() and size != int(declared):
            raise DownloadError(f"download of {url} ended after {size} of {int(declared)} bytes")
        if expected_size is not None and size != expected_size:
            raise DownloadError(f"{url} is {size} bytes, expected {expected_size}")
        digest = h.hexdigest()
        if not digest.startswith(expected_sha256.lower()):  # a full digest, or torchvision's name prefix
            raise DownloadError(f"sha256 mismatch for {url}: got {digest}, expected {expected_sha256}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return digest
    except DownloadError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # ValueError: a malformed URL; HTTPException: a bad status line or a short read
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        raise DownloadError(f"could not download {url}: {reason}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def verified(path: Path, expected_sha256: str) -> bool:
    """Whether a file already on disk (a cached download) has the pinned sha256."""
    try:
        return Path(path).is_file() and sha256_file(path) == expected_sha256
    except OSError:
        return False


def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DownloadError(f"archive entry {name!r} would be extracted outside {root}")
    return target


def safe_extract(archive: Path, target: Path) -> list[Path]:
    """Extract a zip or tar archive into ``target``, refusing absolute paths, ``..`` and links.

    Any failure (also an entry that collides with a folder, or a corrupt archive) is a ``DownloadError``.
    """
    try:
        return _extract(archive, target)
    except DownloadError:
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"cannot extract {archive}: {type(exc).__name__}: {exc}") from exc


def _extract(archive: Path, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                dest = _safe_target(target, info.filename)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(f"archive entry {info.filename!r} is a symbolic link; refusing it")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                written.append(dest)
        return written
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                dest = _safe_target(target, member.name)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise DownloadError(f"archive entry {member.name!r} is not a regular file; refusing it")
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                written.append(dest)
        return written
    raise DownloadError(f"{archive} is neither a zip nor a tar archive")
