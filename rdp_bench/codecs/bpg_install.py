"""``rdp-bench install bpg``: build the real bpgenc/bpgdec 0.9.8 into the project's cache ``bin/``.

No package registry ships bpgenc, so published BPG curves are hard to reproduce; this builds it from
the official libbpg 0.9.8 tarball (sha256 pinned below, the value of Homebrew's ``libbpg`` formula)
or from a local copy (``--from TARBALL|DIR``). Only the 8-bit x265 is built: the anchor uses
``-b 8``, and the 10/12-bit libraries would triple the build time. The ``bpg`` codecs look in
``cache_bin_dir()`` before PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

SOURCE_URL = "https://bellard.org/bpg/libbpg-0.9.8.tar.gz"
#: Homebrew's ``Formula/libbpg.rb`` for 0.9.8 (url above)
SOURCE_SHA256 = "c0788e23bdf1a7d36cb4424ccb2fae4c7789ac94949563c4ad0e2569d3bf0095"

#: (what is missing, Debian package, Homebrew package)
PREREQUISITES = {
    "cmake": ("cmake", "cmake"),
    "make": ("make", "make"),
    "cc": ("gcc", "gcc"),
    "yasm": ("yasm", "yasm"),
    "png.h": ("libpng-dev", "libpng"),
    "jpeglib.h": ("libjpeg-dev", "jpeg"),
}


class BuildError(RuntimeError):
    """The build cannot start or failed; the message says what to do."""


def cache_root() -> Path:
    root = os.environ.get("RDP_BENCH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "rdp-bench"


def cache_bin_dir() -> Path:
    return cache_root() / "bin"


def _has_header(name: str) -> bool:
    """Whether the C compiler finds ``name`` (asks the compiler itself: include paths differ per system)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return False
    probe = subprocess.run([cc, "-E", "-x", "c", "-"], input=f"#include <{name}>\n", capture_output=True, text=True)
    return probe.returncode == 0


def missing_prerequisites() -> list[str]:
    missing = []
    for tool in ("cmake", "make", "yasm"):
        if not shutil.which(tool):
            missing.append(tool)
    if not (shutil.which("cc") or shutil.which("gcc")):
        missing.append("cc")
    for header in ("png.h", "jpeglib.h"):
        if "cc" not in missing and not _has_header(header):
            missing.append(header)
    return missing


def prerequisite_message(missing: list[str]) -> str:
    debian = " ".join(PREREQUISITES[m][0] for m in missing)
    brew = " ".join(PREREQUISITES[m][1] for m in missing)
    return (f"building bpgenc needs {', '.join(missing)}: install them with `apt-get install {debian}` "
            f"(Debian/Ubuntu) or `brew install {brew}` (Homebrew), then run `rdp-bench install bpg` again")


def only_8bit_makefile(text: str) -> str:
    """libbpg's Makefile with the 10/12-bit x265 builds removed (the 8-bit library no longer links them)."""
    text = re.sub(r"^X265_LIBS:=.*$", "X265_LIBS:=./x265.out/8bit/libx265.a", text, flags=re.M)
    text = re.sub(r"^\tmkdir -p x265.out/8bit x265.out/10bit x265.out/12bit$", "\tmkdir -p x265.out/8bit", text, flags=re.M)
    text = re.sub(r"^\tcd x265.out/1[02]bit && cmake .*\n", "", text, flags=re.M)
    text = re.sub(r"^\t\$\(MAKE\) -C x265.out/1[02]bit\n", "", text, flags=re.M)
    text = text.replace(" -DLINKED_10BIT=ON -DLINKED_12BIT=ON", "")
    if "10bit" in text or "12bit" in text:
        raise BuildError("this libbpg Makefile has an unexpected layout (is it 0.9.8?)")
    return text


def _source_tree(source: Path | None, work: Path, log: Callable[[str], None]) -> tuple[Path, str]:
    """Unpacked source tree and the sha256 of the tarball (or "dir" for a folder)."""
    from rdp_bench.datasets.download import download, safe_extract, sha256_file
    from rdp_bench.offline import downloads_allowed, offline_miss

    if source is not None and Path(source).is_dir():
        return Path(source), "dir"
    if source is None:
        tarball = cache_root() / "downloads" / "libbpg-0.9.8.tar.gz"
        if not tarball.is_file() or sha256_file(tarball) != SOURCE_SHA256:
            if not downloads_allowed():  # the one policy (rdp_bench.offline), as for weights and datasets
                raise BuildError(offline_miss("rdp-bench install bpg", tarball.name, tarball.parent, SOURCE_URL)
                                 + ", or pass --from TARBALL")
            log(f"downloading {SOURCE_URL}")
            download(SOURCE_URL, tarball, expected_sha256=SOURCE_SHA256)
    else:
        tarball = Path(source)
        if not tarball.is_file():
            raise BuildError(f"--from {tarball}: no such file or folder")
    digest = sha256_file(tarball)
    if digest != SOURCE_SHA256:
        log(f"note: {tarball.name} is not the official tarball (sha256 {digest[:16]}…); building it as given")
    safe_extract(tarball, work)
    makefiles = sorted(work.glob("*/Makefile")) + sorted(work.glob("Makefile"))
    if not makefiles:
        raise BuildError(f"{tarball} holds no libbpg source tree (no Makefile)")
    return makefiles[0].parent, digest


def install_bpg(source: Path | None = None, dest: Path | None = None, jobs: int = 2,
                log: Callable[[str], None] = print) -> Path:
    """Build bpgenc/bpgdec 0.9.8 and install them into ``dest`` (default the cache ``bin/``); returns ``dest``."""
    missing = missing_prerequisites()
    if missing:
        raise BuildError(prerequisite_message(missing))
    dest = Path(dest) if dest else cache_bin_dir()
    with tempfile.TemporaryDirectory(prefix="rdp-bench-bpg-") as tmp:
        work = Path(tmp)
        tree, digest = _source_tree(source, work / "src", log)
        if tree.parent != work / "src":  # a folder given with --from: build a copy, never the user's tree
            shutil.copytree(tree, work / "tree")
            tree = work / "tree"
        makefile = tree / "Makefile"
        makefile.write_text(only_8bit_makefile(makefile.read_text()))
        log(f"building bpgenc and bpgdec (8-bit x265, {jobs} jobs; about a minute on 2 cores)")
        build = subprocess.run(["make", f"-j{jobs}", "bpgenc", "bpgdec"], cwd=tree, capture_output=True, text=True)
        if build.returncode != 0:
            tail = "\n".join((build.stdout + build.stderr).strip().splitlines()[-15:])
            raise BuildError(f"make failed (exit {build.returncode}); its last lines:\n{tail}")
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("bpgenc", "bpgdec"):
            tmp_bin = dest / f".{name}.tmp"
            shutil.copy2(tree / name, tmp_bin)
            tmp_bin.chmod(0o755)
            os.replace(tmp_bin, dest / name)
        (dest / "bpg-build.json").write_text(json.dumps(
            {"version": "0.9.8", "source_sha256": digest, "official_sha256": SOURCE_SHA256,
             "official": digest == SOURCE_SHA256, "x265": "bundled, 8-bit only"}, indent=1) + "\n")
    log(f"installed bpgenc and bpgdec in {dest}")
    return dest


__all__ = ["BuildError", "SOURCE_SHA256", "SOURCE_URL", "cache_bin_dir", "install_bpg", "missing_prerequisites"]
