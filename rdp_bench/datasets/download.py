"""Downloads with sha256 records and archive extraction that never writes outside its target."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path


class DownloadError(RuntimeError):
    pass


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, expected_sha256: str | None = None, timeout: float = 30.0) -> str:
    """Download ``url`` to ``dest`` atomically; verify sha256 when given; return the sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, tmp)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tmp.close()
            tmp_path.unlink(missing_ok=True)
            raise DownloadError(f"could not download {url}: {exc}") from exc
    digest = sha256_file(tmp_path)
    if expected_sha256 and digest != expected_sha256:
        tmp_path.unlink(missing_ok=True)
        raise DownloadError(f"sha256 mismatch for {url}: got {digest}, expected {expected_sha256}")
    tmp_path.replace(dest)
    return digest


def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DownloadError(f"archive entry {name!r} would be extracted outside {root}")
    return target


def safe_extract(archive: Path, target: Path) -> list[Path]:
    """Extract a zip or tar archive into ``target``, refusing absolute paths, ``..`` and links."""
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
