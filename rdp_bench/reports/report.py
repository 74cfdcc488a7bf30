"""``rdp-bench report``: BD tables (Markdown, CSV, optional LaTeX), plots and ``report.html``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rdp_bench.atomic import atomic_write_text
from rdp_bench.reports.bdrate import BDTable, bd_table, to_frame, to_latex, to_markdown
from rdp_bench.reports.html import build_grid, write_html
from rdp_bench.reports.plots import plot_metrics
from rdp_bench.reports.runs import Aggregate, ReportError, aggregate, load_run


@dataclass
class ReportFiles:
    out: Path
    tables: list[BDTable]
    files: list[Path] = field(default_factory=list)
    markdown: str = ""


def make_report(run_dirs: list[Path], out: Path, anchor: str = "bpg", method: str = "akima", latex: bool = False,
                log_x: bool = False, grid_images: int = 3, grid_bpp: float | None = None,
                codecs: list[str] | None = None, title: str | None = None,
                sizes: tuple[str, ...] = ("paper", "screen")) -> ReportFiles:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aggregate's notes are kept in agg.warnings and shown in the report
        agg: Aggregate = aggregate([load_run(p) for p in run_dirs], codecs=codecs)
    if anchor not in agg.codecs:
        raise ReportError(f"anchor {anchor!r} is not in the run(s); codecs present: {', '.join(agg.codecs)} "
                          "(choose one with --anchor)")
    tables = [bd_table(agg, anchor, kind, method) for kind in ("rate", "quality")]
    files: list[Path] = []

    points_csv = out / "rate_points.csv"
    atomic_write_text(points_csv, agg.points.to_csv(index=False))
    files.append(points_csv)

    md_parts = [f"# BD tables ({', '.join(str(p) for p in run_dirs)})", ""]
    md_parts += [f"> {w}" for w in agg.warnings]
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
                           title=title or f"rdp-bench report: {', '.join(Path(p).name for p in run_dirs)}")
    files.append(html_path)
    return ReportFiles(out, tables, files, markdown)
