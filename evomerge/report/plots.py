"""The report's charts as PNG files (matplotlib, imported only here): the lineage tree, fitness over generations,
select against report fitness, the Pareto fronts over the tasks, each crossover's CMA-ES curve and each ES mutant's
reward curve. Members' scores carry error bars of ±1 standard error over documents.

    evomerge report runs/demo-20261123-120000 --plots plots/

Drawn from the same data as the HTML page (`evomerge.report.collect`), with pyplot's global state left alone.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

DPI = 150  # sharp on a slide or a README, a few hundred kB per file

_LINES = (("best", "#1a7f37", "-"), ("median", "#0b5cad", "--"), ("worst", "#b42318", ":"))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _color(data: dict, operator: str) -> str:
    return data["colors"].get(operator, "#444444")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _bars(ax, xs, ys, *, xerr=None, yerr=None, color) -> None:
    """±1 standard error around each point (a missing SE draws no bar), behind the points."""
    zero = lambda es: None if es is None else [0.0 if e is None else e for e in es]  # noqa: E731
    ax.errorbar(xs, ys, xerr=zero(xerr), yerr=zero(yerr), fmt="none", ecolor=color, elinewidth=0.9, alpha=0.5,
                zorder=2)


class _Grid:
    """The tree's geometry, in inches (one data unit is one inch): node size, column and row pitch."""
    node_w, node_h, col_w, row_h = 1.45, 0.56, 2.0, 0.75

    def left(self, col: int) -> float:
        return col * self.col_w

    def mid(self, row: float) -> float:
        return -row * self.row_h - self.node_h / 2


def lineage(data: dict[str, Any], path: Path) -> Path:
    """The tree as in the HTML page: columns by generation, edges coloured by operator along the same lanes, nodes
    coloured by select fitness."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    members, grid = data["members"], _Grid()
    lanes = [row for m in members for e in m["edges"] for _, row in e["lanes"]]
    ncols = max(m["col"] for m in members) + 1
    nrows = max([m["row"] for m in members] + lanes) + 1
    width = (ncols - 1) * grid.col_w + grid.node_w + 0.3 + 1.5
    height = (nrows - 1) * grid.row_h + grid.node_h + 0.3 + 0.7
    fig = Figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.15, width - 0.15)
    ax.set_ylim(-(height - 0.7 - 0.15), 0.7)
    ax.axis("off")
    values = [m["select"] for m in members if m["select"] is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    _edges(ax, data, grid)
    for g in sorted({m["generation"] for m in members}):
        cols = [m["col"] for m in members if m["generation"] == g]
        ax.text((grid.left(min(cols)) + grid.left(max(cols)) + grid.node_w) / 2, 0.25,
                "seeds" if g == 0 else f"generation {g}", ha="center", fontsize=8, weight="bold", color="#57606a")
    for m in members:
        _node(ax, data, grid, m, lo, hi)
    ops = sorted({m["operator"] for m in members if m["edges"]})
    ax.legend(handles=[Line2D([], [], color=_color(data, op), lw=2, label=op) for op in ops], loc="upper right",
              fontsize=7, frameon=False, title="operator", title_fontsize=7)
    ax.text(-0.1, 0.55, f"{data['run']['name']}: lineage; nodes by select fitness {lo:.3f} (dark) to {hi:.3f} "
            "(light); ★ alive; dashed: intermediate", fontsize=7.5, va="center")
    fig.savefig(path)
    return path


def _edges(ax, data: dict[str, Any], grid: _Grid) -> None:
    """Each edge as a curve from its parent's right side through its lanes to its child's left side."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    by_id = {m["id"]: m for m in data["members"]}
    for m in data["members"]:
        for e in m["edges"]:
            p = by_id[e["parent"]]
            x, y = grid.left(p["col"]) + grid.node_w, grid.mid(p["row"])
            verts = [(x, y)]
            for col, row in [*e["lanes"], (m["col"], m["row"])]:
                qx, qy = grid.left(col), grid.mid(row)
                dx = max(0.15, (qx - x) / 2)
                verts += [(x + dx, y), (qx - dx, qy), (qx, qy)]
                x, y = qx, qy
                if (col, row) != (m["col"], m["row"]):
                    verts += [(x, y), (x + grid.node_w, y), (x + grid.node_w, y)]  # along the lane (a flat curve)
                    x += grid.node_w
            codes = [MplPath.MOVETO] + [MplPath.CURVE4] * (len(verts) - 1)
            ax.add_patch(PathPatch(MplPath(verts, codes), fill=False, lw=1.6, alpha=0.85,
                                   edgecolor=_color(data, m["operator"]), zorder=1))


def _node(ax, data: dict[str, Any], grid: _Grid, m: dict, lo: float, hi: float) -> None:
    """One member's box: filled by select fitness, its operator's colour on the left edge, name and scores."""
    import matplotlib
    from matplotlib.patches import FancyBboxPatch

    x, y = grid.left(m["col"]), grid.mid(m["row"])
    v = m["select"]
    face = (0.9, 0.91, 0.92) if v is None else matplotlib.colors.to_rgb(
        matplotlib.colormaps["viridis"](0.5 if hi - lo < 1e-12 else (v - lo) / (hi - lo)))
    if m["state"] == "intermediate":
        face = tuple(c + (1 - c) * 0.6 for c in face)
    ink = "#111111" if 0.2126 * face[0] + 0.7152 * face[1] + 0.0722 * face[2] > 0.55 else "#ffffff"
    style = {"alive": {"lw": 2.2, "ls": "-", "ec": "#111111"},
             "intermediate": {"lw": 1.0, "ls": "--", "ec": "#57606a"}}
    ax.add_patch(FancyBboxPatch((x, y - grid.node_h / 2), grid.node_w, grid.node_h,
                                boxstyle="round,pad=0,rounding_size=0.05", fc=face, zorder=2,
                                **style.get(m["state"], {"lw": 0.8, "ec": "#8c959f"})))
    ax.add_patch(FancyBboxPatch((x, y - grid.node_h / 2), 0.05, grid.node_h, boxstyle="square,pad=0",
                                fc=_color(data, m["operator"]), ec="none", zorder=3))
    name = m["name"] if len(m["name"]) <= 20 else m["name"][:19] + "…"
    ax.text(x + 0.1, y + 0.1, name, fontsize=7, weight="bold", color=ink, va="center", zorder=4)
    if m["state"] == "alive":
        ax.text(x + grid.node_w - 0.06, y + 0.1, "★", fontsize=8, color=ink, va="center", ha="right", zorder=4)
    ax.text(x + 0.1, y - 0.12, f"sel {_fmt(m['select'])} · rep {_fmt(m['report'])}", fontsize=6, color=ink,
            va="center", zorder=4)


def fitness(data: dict[str, Any], path: Path) -> Path:
    """Best, median and worst of the population after each generation, select and report side by side."""
    by_id = {m["id"]: m for m in data["members"]}
    fig = _figure(9, 3.6)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, split in zip(axes, ("select", "report")):
        gens = [g for g in data["generations"] if g[split]]
        for stat, color, ls in _LINES:
            ax.plot([g["generation"] for g in gens], [g[split][stat] for g in gens], ls, color=color, lw=2,
                    marker="o", ms=3, label=stat)
        for g in data["generations"]:
            born = [by_id[i] for i in g["born"] if by_id[i][split] is not None]
            for k, m in enumerate(born):
                jitter = (k / (len(born) - 1) - 0.5) * 0.24 if len(born) > 1 else 0.0
                _bars(ax, [g["generation"] + jitter], [m[split]], yerr=[m[f"{split}_se"]],
                      color=_color(data, m["operator"]))
                ax.scatter(g["generation"] + jitter, m[split], s=22, color=_color(data, m["operator"]),
                           edgecolors="white", linewidths=0.5, zorder=3)
        spec = data["run"]["splits"][split]
        ax.set_title(f"{split} split '{spec['split']}'" + ("" if spec["limit"] is None else f", {spec['limit']} docs"),
                     fontsize=9)
        ax.set_xlabel("generation")
        ax.set_xticks(sorted({g["generation"] for g in data["generations"]}))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weighted fitness")
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"{data['run']['name']}: population fitness per generation (dots: members born, by operator, "
                 "±1 SE)", fontsize=10)
    fig.savefig(path)
    return path


def select_vs_report(data: dict[str, Any], path: Path) -> Path:
    """Each member's select fitness against its held-out report fitness: below the diagonal is overfitting."""
    members = [m for m in data["members"]
               if m["state"] != "intermediate" and m["select"] is not None and m["report"] is not None]
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    from matplotlib.lines import Line2D

    handles = []
    for op in sorted({m["operator"] for m in members}):
        group = [m for m in members if m["operator"] == op]
        _bars(ax, [m["select"] for m in group], [m["report"] for m in group], xerr=[m["select_se"] for m in group],
              yerr=[m["report_se"] for m in group], color=_color(data, op))
        ax.scatter([m["select"] for m in group], [m["report"] for m in group], s=36, color=_color(data, op),
                   edgecolors=["#111111" if m["state"] == "alive" else "white" for m in group], linewidths=1.2,
                   zorder=3)
        handles.append(Line2D([], [], ls="", marker="o", ms=6, color=_color(data, op), mec="white", label=op))
    handles.append(Line2D([], [], ls="", marker="o", ms=6, color="#d0d7de", mec="#111111", mew=1.2, label="alive"))
    values = [v + sign * (se or 0.0) for m in members for v, se in ((m["select"], m["select_se"]),
                                                                     (m["report"], m["report_se"])) for sign in (-1, 1)]
    values = values or [0.0, 1.0]
    pad = max(0.02, (max(values) - min(values)) * 0.08)
    lo, hi = min(values) - pad, max(values) + pad
    ax.plot([lo, hi], [lo, hi], "--", color="#8c959f", lw=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("select fitness (seen by selection)")
    ax.set_ylabel("report fitness (held out)")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, frameon=False)  # one swatch per operator, its own edge; then "alive"
    ax.set_title(f"{data['run']['name']}: select vs report (black edge: alive; bars: ±1 SE)", fontsize=9)
    fig.savefig(path)
    return path


def fronts(data: dict[str, Any], path: Path) -> Path:
    """The select front and the report front over the tasks (Pareto: no member beats a front member on every
    task): a scatter of two tasks, or parallel coordinates of more; each front member labelled with its held-out gap."""
    tasks = [t["task"] for t in data["run"]["tasks"]]
    fig = _figure(9.2, 4.2)
    for ax, which in zip(fig.subplots(1, 2), ("select", "report")):
        members = [m for m in data["members"] if m["state"] not in ("intermediate", "failed")
                   and all(m["tasks"][t][which] is not None for t in tasks)]
        front = set(data["fronts"][which])
        colour = "#0b5cad" if which == "select" else "#b45309"
        if len(tasks) == 2:
            others = [m for m in members if m["id"] not in front]
            for m in members:
                _bars(ax, [m["tasks"][tasks[0]][which]], [m["tasks"][tasks[1]][which]],
                      xerr=[m["tasks"][tasks[0]][f"{which}_se"]], yerr=[m["tasks"][tasks[1]][f"{which}_se"]],
                      color=_color(data, m["operator"]) if m["id"] in front else "#c7ccd4")
            ax.scatter([m["tasks"][tasks[0]][which] for m in others], [m["tasks"][tasks[1]][which] for m in others],
                       s=18, color="#c7ccd4", label="other members", zorder=2)
            on = sorted((m for m in members if m["id"] in front),
                        key=lambda m: (m["tasks"][tasks[0]][which], -m["tasks"][tasks[1]][which]))
            xs, ys = [m["tasks"][tasks[0]][which] for m in on], [m["tasks"][tasks[1]][which] for m in on]
            ax.plot(xs, ys, "-" if which == "select" else "--", color=colour, lw=1.5, label=f"{which} front", zorder=3)
            ax.scatter(xs, ys, s=40, color=[_color(data, m["operator"]) for m in on], edgecolors="#111111",
                       linewidths=0.8, zorder=4)
            for m, x, y in zip(on, xs, ys):
                gap = None if m["select"] is None or m["report"] is None else m["report"] - m["select"]
                ax.annotate(f"{m['name']} ({'–' if gap is None else f'{gap:+.3f}'})", (x, y), fontsize=6,
                            xytext=(4, 4), textcoords="offset points")
            ax.set_ylabel(tasks[1], fontsize=8)
            ax.legend(fontsize=7, frameon=False)
        else:
            ranges = [(min(m["tasks"][t][which] for m in members), max(m["tasks"][t][which] for m in members))
                      if members else (0.0, 1.0) for t in tasks]
            for m in sorted(members, key=lambda m: m["id"] in front):
                ys = [(m["tasks"][t][which] - lo) / (hi - lo) if hi > lo else 0.5 for t, (lo, hi) in zip(tasks, ranges)]
                on = m["id"] in front
                ax.plot(range(len(tasks)), ys, color=_color(data, m["operator"]) if on else "#c7ccd4",
                        lw=2 if on else 0.8, zorder=3 if on else 2)
            ax.set_xticks(range(len(tasks)), tasks, fontsize=7, rotation=20)
            ax.set_ylabel("score, lowest to highest per task", fontsize=8)
        _panel(ax, f"{which} split: front of {len(front)} (label: held-out gap, report − select; bars: ±1 SE)",
               tasks[0] if len(tasks) == 2 else "")
    fig.suptitle(f"{data['run']['name']}: Pareto fronts over the tasks", fontsize=10)
    fig.savefig(path)
    return path


def _grid(n: int):
    """Small multiples, four to a row; wide enough for the title even with one panel."""
    from matplotlib.ticker import MaxNLocator

    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = _figure(max(7.0, 3.2 * cols), 2.5 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    for ax in axes[:n]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def cmaes(data: dict[str, Any], path: Path) -> Path:
    """One panel per crossover: each scored merge in order, and the best so far."""
    by_id = {m["id"]: m for m in data["members"]}
    xs = data["crossovers"]
    fig, axes = _grid(len(xs))
    for ax, x in zip(axes, xs):
        child = by_id.get(x["child"])
        chosen = child["params"].get("candidate") if child else None
        scored = [(i + 1, c) for i, c in enumerate(x["candidates"]) if c["score"] is not None]
        best, curve = -math.inf, []
        for i, c in scored:
            best = max(best, c["score"])
            curve.append((i, best))
        ax.scatter([i for i, _ in scored], [c["score"] for _, c in scored], s=14, color="#9ca3af", zorder=2)
        ring = [(i, c["score"]) for i, c in scored if c["id"] == chosen]
        if ring:
            ax.scatter(*zip(*ring), s=40, facecolors="none", edgecolors="#111111", linewidths=1.5, zorder=4)
        if curve:
            ax.step(*zip(*curve), where="post", color=_color(data, x["method"] or "linear"), lw=2, zorder=3)
        parents = " × ".join(by_id[p]["name"] for p in x["parents"])
        _panel(ax, f"{child['name'] if child else 'in progress'} ← {parents}", "merge scored")
    fig.suptitle(f"{data['run']['name']}: CMA-ES convergence (select fitness; line: best so far; ring: the child)",
                 fontsize=10)
    fig.savefig(path)
    return path


def _panel(ax, title: str, xlabel: str) -> None:
    """The small-multiple style shared by the CMA-ES and ES panels."""
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def es(data: dict[str, Any], path: Path) -> Path:
    """One panel per mutant with a reward curve (noise ES): mean reward per iteration between the best and worst
    perturbation."""
    by_id = {m["id"]: m for m in data["members"]}
    mutants = [mu for mu in data["mutations"] if mu["rewards"]]
    fig, axes = _grid(len(mutants))
    for ax, mu in zip(axes, mutants):
        its = [r["iteration"] for r in mu["rewards"]]
        ax.fill_between(its, [r["worst"] for r in mu["rewards"]], [r["best"] for r in mu["rewards"]],
                        color=_color(data, mu["kind"]), alpha=0.15, lw=0)
        ax.plot(its, [r["mean"] for r in mu["rewards"]], color=_color(data, mu["kind"]), lw=2, marker="o", ms=2.5)
        child = by_id.get(mu["child"])
        _panel(ax, f"{child['name'] if child else 'in progress'} ← {by_id[mu['parent']]['name']}", "iteration")
    fig.suptitle(f"{data['run']['name']}: ES reward per iteration (mean; band: best to worst perturbation)",
                 fontsize=10)
    fig.savefig(path)
    return path


def write_all(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every chart that has data, as out_dir/<chart>.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not data["members"]:
        return []
    written = [lineage(data, out_dir / "lineage.png"), fitness(data, out_dir / "fitness.png"),
               select_vs_report(data, out_dir / "select_vs_report.png")]
    if len(data["run"]["tasks"]) >= 2:
        written.append(fronts(data, out_dir / "fronts.png"))
    if data["crossovers"]:
        written.append(cmaes(data, out_dir / "cmaes.png"))
    if any(mu["rewards"] for mu in data["mutations"]):
        written.append(es(data, out_dir / "es.png"))
    return written
