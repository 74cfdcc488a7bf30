"""Reports name which backend made the bpg anchor and, for the emulation, its measured gap to real bpgenc.

The text comes from the codec (``BPG.report_note``, built on ``bpg.EMULATION_MEASURED``) through the
run's provenance.json; the reports hold no BPG numbers of their own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from rdp_bench.codecs import bpg as B
from rdp_bench.codecs import get_codec
from rdp_bench.reports import bdrate, html as report_html
from rdp_bench.reports.report import make_report


def _run(path: Path, bpg_record: dict) -> Path:
    """A run folder with bpg and a codec at 1.5x its rate; provenance as ``rdp-bench run`` writes it."""
    rows, codecs = [], {}
    for codec, factor, record in (("bpg", 1.0, bpg_record), ("jpeg", 1.5, {"description": "JPEG"})):
        ckpt = bpg_record.get("checkpoint", "x") if codec == "bpg" else "none"
        for rid, (bpp, psnr) in enumerate([(0.1, 26.0), (0.2, 28.5), (0.4, 31.0), (0.8, 34.0)]):
            for i in range(2):
                bytes_ = int(bpp * factor * 100 * 100 / 8)
                rows.append({"codec": codec, "checkpoint": ckpt, "rate_label": f"q{rid}", "rate_id": rid,
                             "dataset": "synthetic", "image_id": f"img{i}.png", "image_sha256": f"sha{i}",
                             "height": 100, "width": 100, "bpp": bpp * factor, "bytes": bytes_,
                             "container_bytes": bytes_ + 25, "psnr": psnr, "dists": math.nan})
        codecs[codec] = {**{k: v for k, v in record.items() if k != "checkpoint"},
                         "rate_points": {f"q{r}": {"params": {}, "checkpoint": ckpt} for r in range(4)}}
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    (path / "provenance.json").write_text(json.dumps({"runs": [{"command": "rdp-bench run", "codecs": codecs}]}))
    return path


def _report(tmp_path: Path, record: dict, anchor: str | None = None) -> dict[str, str]:
    make_report([_run(tmp_path / "run", record)], tmp_path / "rep", anchor=anchor, grid_images=0,
                sizes=("screen",), latex=True)
    return {name: (tmp_path / "rep" / name).read_text() for name in ("bd_tables.md", "bd_rate.tex", "report.html")}


def _emulation_record() -> dict:
    pytest.importorskip("av", reason="the emulation's provenance names the PyAV version")
    codec = get_codec("bpg", backend="pyav")
    return {"description": codec.description, "checkpoint": codec.checkpoint_id(codec.rate_point(0)),
            **codec.provenance()}


def test_report_names_the_emulation_and_its_measured_gap(tmp_path):
    out = _report(tmp_path, _emulation_record())
    note = get_codec("bpg", backend="pyav").report_note()
    assert B.EMULATION_MEASURED in note and "emulation" in note
    md, tex, page = out["bd_tables.md"], out["bd_rate.tex"], out["report.html"]
    assert md.count(f"Anchor {note}.") == 2  # under both BD tables
    assert "+0.37 \\% (4:2:0)" in tex and "emulation of bpgenc 0.9.8" in tex  # in the table's notes
    assert "Anchor: <b>bpg</b> (" + report_html.html.escape(note) + ")" in page
    assert page.count("emulation of bpgenc 0.9.8, not bpgenc itself") >= 3  # the page's head and both tables


def test_report_names_the_real_binaries(tmp_path, monkeypatch):
    monkeypatch.setattr(B.BPG, "binaries", staticmethod(lambda: ("/opt/bpg/bpgenc", "/opt/bpg/bpgdec")))
    codec = get_codec("bpg")
    record = {"description": codec.description, "checkpoint": codec.checkpoint_id(codec.rate_point(0)),
              **codec.provenance()}
    assert record["checkpoint"] == "bpgenc-binary"
    md = _report(tmp_path, record)["bd_tables.md"]
    assert "Anchor bpg: the real bpgenc/bpgdec 0.9.8 binaries." in md
    assert "emulation" not in md and B.EMULATION_MEASURED not in md


def test_older_provenance_names_its_backend_and_other_anchors_get_no_line(tmp_path):
    old = {"description": "BPG", "backend": "x265 through PyAV, bpgenc 0.9.8 pre/post-processing reproduced in Python"}
    md = _report(tmp_path, old)["bd_tables.md"]
    assert "Anchor bpg: backend x265 through PyAV" in md
    md = _report(tmp_path / "other", _emulation_record(), anchor="jpeg")["bd_tables.md"]
    assert "Anchor " not in md and "| bpg |" in md  # jpeg recorded no note; bpg is a test codec here


def test_reports_hold_no_bpg_numbers():
    for module in (bdrate, report_html):
        text = Path(module.__file__).read_text()
        assert "0.37" not in text and "bpgenc" not in text
