"""The run report: one self-contained HTML page (lineage tree, leaderboard, charts) and the same charts as PNGs.

    evomerge report runs/demo-20261123-120000 -o report.html
    evomerge report runs/demo-20261123-120000 --plots plots/
"""
from __future__ import annotations

from evomerge.report.data import collect, layout
from evomerge.report.html import render_html

__all__ = ["collect", "layout", "render_html"]
