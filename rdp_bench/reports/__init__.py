"""Reports on run folders.

* ``runs``: read run folders, aggregate per (codec, rate point) on a common image set.
* ``bdrate``: BD-rate / BD-quality tables (``bjontegaard`` package) as Markdown, CSV, LaTeX, HTML.
* ``plots``: metric-vs-bpp curves and the distortion-perception plane (matplotlib).
* ``html``: the self-contained ``report.html`` with a visual comparison grid.
* ``report``: ``rdp-bench report``; ``check``: ``rdp-bench check``, the regression gate.
"""
