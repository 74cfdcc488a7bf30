"""``rdp-bench report``: BD tables (Markdown, CSV, optional LaTeX), plots and ``report.html``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rdp_bench.atomic import atomic_write_text
from rdp_bench.reports.bdrate import (
    BDTable, bd_table, context_line, small_sample_note, to_frame, to_latex, to_markdown,
)
from rdp_bench.reports.bootstrap import bootstrap_report
from rdp_bench.reports.html import build_grid, write_html
from rdp_bench.reports.plots import plot_metrics
from rdp_bench.reports.published import add_published
from rdp_bench.reports.runs import Aggregate, ReportError, aggregate, load_run


@dataclass
class ReportFiles:
    out: Path
    tables: list[BDTable]
    files: list[Path] = field(default_factory=list)
    markdown: str = ""
    anchor: str = ""
    anchor_note: str = ""  # set when the anchor was picked for the user


#: the anchor when none is asked for: the usual reference of learned-codec papers
DEFAULT_ANCHOR = "bpg"


def pick_anchor(codecs: list[str], wanted: str | None = None) -> tuple[str, str]:
    """(anchor, note): ``wanted`` if given, else bpg when present, else the first codec (the note says so)."""
    if wanted:
        if wanted not in codecs:
            raise ReportError(f"anchor {wanted!r} is not in the run(s); codecs present: {', '.join(codecs)} "
                              "(choose one with --anchor)")
        return wanted, ""
    if DEFAULT_ANCHOR in codecs:
        return DEFAULT_ANCHOR, ""
    others = f"; choose another with --anchor {'|'.join(codecs[1:])}" if len(codecs) > 1 else ""
    return codecs[0], f"anchor: {codecs[0]} ({DEFAULT_ANCHOR} is not in the run(s){others})"


def make_report(run_dirs: list[Path], out: Path, anchor: str | None = None, method: str = "akima", latex: bool = False,
                log_x: bool = False, grid_images: int = 3, grid_bpp: float | None = None,
                codecs: list[str] | None = None, title: str | None = None,
                sizes: tuple[str, ...] = ("paper", "screen"), published: list[str] | None = None,
                bootstrap: int = 0) -> ReportFiles:
    """``published``: keys of ``rdp_bench.published.ENTRIES`` drawn and tabled beside the run's codecs
    (refused with ``ReportError`` when their dataset or protocol is not the run's). ``bootstrap``: resamples
    of the images for 95 % confidence intervals (0: none)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aggregate's notes are kept in agg.warnings and shown in the report
        agg: Aggregate = aggregate([load_run(p) for p in run_dirs], codecs=codecs)
    if published:
        add_published(agg, published)
    anchor, anchor_note = pick_anchor(agg.codecs, anchor)
    tables = [bd_table(agg, anchor, kind, method) for kind in ("rate", "quality")]
    if small_sample_note(agg):
        agg.warnings.append(small_sample_note(agg))
    if bootstrap_report(agg, tables, bootstrap):
        agg.warnings.append(f"[lo, hi]: 95% bootstrap intervals over the {agg.rows['image_sha256'].nunique()} "
                            f"images ({bootstrap} resamples, the same for every codec); FID/KID over their patches "
                            "(stored features, per rate point; FID's re-centred on the estimate), and their "
                            "BD cells over the images with their patches; published curves have none")
    files: list[Path] = []

    points_csv = out / "rate_points.csv"
    atomic_write_text(points_csv, agg.points.to_csv(index=False))
    files.append(points_csv)

    # the dataset, not the run folder: the folder name means nothing to a reader (and may not exist for them)
    context = context_line(agg)
    md_parts = [f"# BD tables: {context}", ""]
    notes = [anchor_note, *agg.warnings] if anchor_note else list(agg.warnings)
    if notes:  # a blank line after the quote, or Markdown folds the next title into it
        md_parts += [*(f"> {w}  " for w in notes), ""]
    md_parts += [to_markdown(t) for t in tables]
    markdown = "\n".join(md_parts)
    atomic_write_text(out / "bd_tables.md", markdown)
    frame = pd.concat([to_frame(t) for t in tables], ignore_index=True)
    atomic_write_text(out / "bd_tables.csv", frame.to_csv(index=False))
    files += [out / "bd_tables.md", out / "bd_tables.csv"]
    if latex:
        for t in tables:
            path = out / f"bd_{t.kind}.tex"
            atomic_write_text(path, to_latex(t))
            files.append(path)

    figures = plot_metrics(agg, out / "figures", anchor=anchor, log_x=log_x, sizes=sizes)
    files += [p for paths in figures.values() for p in paths]
    grid = build_grid(agg, n_images=grid_images, target_bpp=grid_bpp) if grid_images > 0 else None
    html_path = write_html(out / "report.html", agg, tables, figures, anchor, method, grid,
                           title=title or f"rdp-bench report: {context}", notes=[anchor_note] if anchor_note else None)
    files.append(html_path)
    return ReportFiles(out, tables, files, markdown, anchor, anchor_note)
