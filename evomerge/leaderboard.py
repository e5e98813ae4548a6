"""Rankings of a run's members by weighted score on the select or report split, per task, in several formats, each
score with its standard error over documents, and whether a member beats every seed beyond noise (paired)."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from evomerge.config import PipelineConfig
from evomerge.outcomes import fmt_pm
from evomerge.records import MemberState
from evomerge.scores import ScoreBoard
from evomerge.store.base import Store


@dataclass(frozen=True)
class Row:
    rank: int
    member: str
    generation: int
    operator: str
    state: str
    score: Optional[float]            # weighted score on the chosen split
    tasks: dict[str, Optional[float]]  # task -> its configured metric
    docs: dict[str, int]
    front: Optional[int] = None        # with pareto: its Pareto front on this split's per-task scores (1 = best)
    se: Optional[float] = None         # the weighted score's standard error over documents
    tasks_se: dict[str, Optional[float]] = field(default_factory=dict)  # task -> its score's standard error
    beats_seeds: Optional[bool] = None  # the 95% paired interval of the difference to every seed is above 0 (None:
                                        # a seed, unscored, or no per-document outcomes to pair)
    shared: Optional[float] = None     # M2N2's shared fitness among the alive members (selection/shared.py), where
                                       # the run's selectors use it
    path: Optional[str] = None         # a layer-path child's path, compactly (a[0-5] b[4-11]×0.9)
    estimated: bool = False            # its score is an estimate from anchor documents (fitness.select.estimator)


def rows(store: Store, pipeline: PipelineConfig, *, split: str = "select", pareto: bool = False,
         intermediates: bool = False, vs_seeds: bool = True) -> list[Row]:
    """The members best first (ties: the older), intermediates only if asked; with `pareto`, each with its Pareto
    front over the per-task scores of the split (evomerge/selection/pareto.py: what nsga2 selects by, on the select
    split); with `vs_seeds`, whether each beats every seed member by a paired comparison; where the run selects by
    shared fitness (`shared`, `attraction`), each alive member's shared fitness among the alive members."""
    board = ScoreBoard(store, pipeline.fitness)
    out = []
    for m in store.members():
        if m.state is MemberState.INTERMEDIATE and not intermediates:
            continue  # a merge that was mutated at once is part of its child's lineage, not a contender
        out.append((m, board.member(m.id, split)))
    out.sort(key=lambda e: (e[1].weighted is None, -(e[1].weighted or 0.0), e[0].id))
    fronts: dict[int, int] = {}
    if pareto:
        from evomerge.selection.pareto import numbered

        fronts = numbered([m for m, _ in out], {m.id: s for m, s in out}, [t.task for t in pipeline.fitness.tasks])
    seeds = [s for m, s in out if m.generation == 0 and s.weighted is not None] if vs_seeds else []

    def beats(m, s) -> Optional[bool]:
        if not seeds or m.generation == 0 or s.weighted is None:
            return None
        compared = [board.compare(s, seed) for seed in seeds]
        if any(c is None for c in compared):
            return None
        return all(whole.low > 0 for _, whole in compared)

    shared: dict[int, float] = {}
    from evomerge.selection.shared import shared_fitness, uses_shared_fitness

    if uses_shared_fitness(pipeline):
        alive = [m.id for m, _ in out if m.state is MemberState.ALIVE]
        shared = shared_fitness(alive, {m.id: s for m, s in out}) or {}
    return [Row(rank=i + 1, member=m.name, generation=m.generation, operator=m.operator, state=m.state.value,
                score=s.weighted, tasks=s.tasks, docs=s.docs, front=fronts.get(m.id), se=s.weighted_se,
                tasks_se=s.se, beats_seeds=beats(m, s), shared=shared.get(m.id), path=_path(m),
                estimated=bool(s.estimator))
            for i, (m, s) in enumerate(out)]


def _path(member) -> Optional[str]:
    """A layer-path child's path as its crossover kind labels it; None for every other member."""
    from evomerge.lineage import drawn_path, operator_class

    if drawn_path(member) is None:
        return None
    return operator_class(member.operator).describe(member.params["merge"])


def beats_every_seed(table: list[Row]) -> tuple[set[str], bool]:
    """The members to mark as beating every seed member, and whether that is the paired comparison (per-document
    outcomes) or, for a run that kept none, the point scores. Estimates from anchors are marked nowhere: an
    estimate is not paired with a seed's score (the report split says who beats the seeds)."""
    if any(r.estimated for r in table):
        return set(), False
    if any(r.beats_seeds is not None for r in table):
        return {r.member for r in table if r.beats_seeds}, True
    best_seed = max((r.score for r in table if r.generation == 0 and r.score is not None), default=None)
    return {r.member for r in table if best_seed is not None and r.score is not None and r.score > best_seed}, False


def _columns(table: list[Row], split: str, task_names: list[str]) -> tuple[list[str], list[list[str]]]:
    """The header and the cells of every row (the front column only where fronts were computed)."""
    pareto = any(r.front is not None for r in table)
    shared = any(r.shared is not None for r in table)
    paths = any(r.path is not None for r in table)
    header = ["rank", "member", "gen", "operator", "state", *(["front"] if pareto else []), f"{split} (weighted)",
              *(["shared"] if shared else []), *task_names, *(["path"] if paths else [])]
    lines = [[str(r.rank), r.member, str(r.generation), r.operator, r.state,
              *([str(r.front) if r.front is not None else "-"] if pareto else []),
              ("≈" if r.estimated and r.score is not None else "") + fmt_pm(r.score, r.se),
              *([fmt_pm(r.shared, None)] if shared else []),
              *[("≈" if r.estimated and r.tasks[t] is not None else "") + fmt_pm(r.tasks[t], r.tasks_se.get(t))
                for t in task_names],
              *([r.path or ""] if paths else [])] for r in table]
    return header, lines


def _csv_columns(table: list[Row], split: str, task_names: list[str]) -> tuple[list[str], list[list]]:
    """CSV's columns: numbers only, each score followed by its standard error (and a layer path's path)."""
    pareto = any(r.front is not None for r in table)
    shared = any(r.shared is not None for r in table)
    paths = any(r.path is not None for r in table)
    header = ["rank", "member", "gen", "operator", "state", *(["front"] if pareto else []), f"{split} (weighted)",
              "se", *(["shared"] if shared else []), *[c for t in task_names for c in (t, f"{t} se")],
              "beats every seed", "estimated", *(["path"] if paths else [])]
    blank = lambda v: "" if v is None else v  # noqa: E731
    lines = [[r.rank, r.member, r.generation, r.operator, r.state, *([blank(r.front)] if pareto else []),
              blank(r.score), blank(r.se), *([blank(r.shared)] if shared else []),
              *[blank(v) for t in task_names for v in (r.tasks[t], r.tasks_se.get(t))],
              blank(r.beats_seeds), r.estimated, *([blank(r.path)] if paths else [])] for r in table]
    return header, lines


def render(table: list[Row], *, fmt: str, split: str, task_names: list[str]) -> str:
    header, lines = (_csv_columns if fmt == "csv" else _columns)(table, split, task_names)
    if fmt == "json":
        return json.dumps([asdict(r) for r in table], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(lines)
        return buf.getvalue().rstrip("\n")
    if fmt == "md":
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    raise ValueError(f"unknown format {fmt!r}")


def short_labels(task_names: list[str]) -> dict[str, str]:
    """Task names without the prefix they share (`evomerge_arith`, `evomerge_arc_easy` -> `arith`, `arc_easy`), cut
    to 12 characters: columns that fit 80 columns; the table's caption says what each stands for."""
    prefix = os.path.commonprefix(task_names) if len(task_names) > 1 else ""
    prefix = prefix[:prefix.rfind("_") + 1]
    labels = {}
    for t in task_names:
        short = t[len(prefix):] or t
        labels[t] = short if len(short) <= 12 else short[:11] + "…"
    return labels


def print_table(table: list[Row], *, split: str, task_names: list[str], title: str, docs_note: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    labels = short_labels(task_names)
    legend = ", ".join(f"{labels[t]} = {t}" for t in task_names if labels[t] != t)
    if any(r.shared is not None for r in table):
        legend = "shared = M2N2's shared fitness among the alive members (what selection ranks by)" + (
            f", {legend}" if legend else "")
    t = Table(title=title, caption=docs_note + (f"; {legend}" if legend else ""), pad_edge=False)
    header, lines = _columns(table, split, task_names)
    for col in header:
        numeric = col in ("rank", "gen", "front", "shared") or col.startswith(split) or col in task_names
        label = "#" if col == "rank" else split if col.startswith(split) else labels.get(col, col)
        t.add_column(label, justify="right" if numeric else "left", no_wrap=numeric,
                     min_width=6 if col.startswith(split) or col in task_names else None,
                     overflow="fold")
    green, _ = beats_every_seed(table)
    for r, line in zip(table, lines):
        style = "bold green" if r.member in green else None
        if r.state == MemberState.FAILED.value:
            style = "red"  # non-finite weights or outputs: listed, never ranked among the others
        t.add_row(*(escape(cell) for cell in line), style=style)
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200  # piped or logged: don't truncate columns to 80 unless asked to
    with console.capture() as captured:  # rich ends the process with status 1 on a closed pipe; Python's print
        console.print(t)                 # raises BrokenPipeError, which the CLI ends quietly with
    print(captured.get(), end="")
