"""Hostile or careless input never hurts a run: bad images, bounded decoders, downloads, CLI mistakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rdp_bench.atomic import atomic_path, atomic_write_text


# --- atomic outputs ---------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "table.csv"
    atomic_write_text(target, "a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("a,b\n1,")  # a writer dying half-way ...
            raise RuntimeError("killed")
    assert target.read_text() == "a,b\n1,2\n"  # ... leaves the old file whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_report_figures_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from rdp_bench.reports import plots

    seen = []
    real = plt.Figure.savefig

    def spy(self, fname, *args, **kwargs):
        seen.append(Path(fname))
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = plots._save(fig, tmp_path, "rd_psnr_screen")
    assert [p.name for p in paths] == ["rd_psnr_screen.png", "rd_psnr_screen.svg"]
    assert all(p.parent == tmp_path and p.name.startswith(".") and ".tmp" in p.name for p in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rd_psnr_screen.png", "rd_psnr_screen.svg"]
    assert (tmp_path / "rd_psnr_screen.png").read_bytes().startswith(b"\x89PNG")
