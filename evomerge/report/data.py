"""What the HTML report and the PNG plots show, read from a run's store in one pass: every member with every score
(each with its standard error over documents) and its place in the lineage layout, the best member's paired
differences to its seeds and parents, fitness per generation, each crossover's CMA-ES candidates and each ES
mutation's rewards. The result is plain JSON-able data, so the HTML page and matplotlib draw the same numbers.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.config import SPLITS, PipelineConfig
from evomerge.lineage import drawn_path, edge_label, operator_class, operator_color, operator_colors, operator_kind
from evomerge.outcomes import task_se
from evomerge.records import MemberRecord, MemberState, ScoreRow, candidate_subject, member_subject
from evomerge.scores import Scores, ScoreBoard
from evomerge.selection.shared import shared_fitness, uses_shared_fitness
from evomerge.store.base import Store


def _num(v: float | None) -> float | None:
    """A finite float or None: JSON has no NaN, and a missing score is not a zero."""
    return None if v is None or not math.isfinite(v) else float(v)


def _recipe_text(m: MemberRecord) -> str:
    """Merges keep their mergekit YAML; JSON recipes (seeds, LoRA, ES) are indented to be read."""
    try:
        return json.dumps(json.loads(m.recipe), indent=2)
    except ValueError:
        return m.recipe


# Spacing of the layout, in rows: a node is 0.75 rows tall; an edge passing through a column takes a lane.
_GAP = {(True, True): 1.0, (True, False): 0.65, (False, True): 0.65, (False, False): 0.22}


@dataclass(frozen=True)
class Layout:
    """Where the tree puts things: each member's (column, row), and for each edge (parent id, child id) that skips
    columns, the (column, row) of its lane through each column between them."""
    places: dict[int, tuple[int, float]]
    lanes: dict[tuple[int, int], list[tuple[int, float]]]


def layout(members: list[MemberRecord]) -> Layout:
    """A left-to-right tree: one column per generation, split further where a member's parent is of its own
    generation (a LoRA seed of a seed, a mutant of its merge). Each member sits at the mean height of its parents,
    pushed apart from its neighbours; an edge that skips columns gets a lane in each column it crosses, so that it
    runs between the nodes there instead of through them (the dummy nodes of Sugiyama-style layouts)."""
    by_id = {m.id: m for m in members}
    depth: dict[int, int] = {}
    for m in sorted(members, key=lambda m: (m.generation, m.id)):  # a parent is older, so it is placed first
        same = [depth[p] for p in m.parents if p in depth and by_id[p].generation == m.generation]
        depth[m.id] = 1 + max(same) if same else 0
    columns = sorted({(m.generation, depth[m.id]) for m in members})
    col = {m.id: columns.index((m.generation, depth[m.id])) for m in members}

    # every item of a column: ("m", id) for a member, ("d", parent, child) for an edge's lane
    items: dict[int, list[tuple]] = {c: [] for c in range(len(columns))}
    feeds: dict[tuple, list[tuple]] = {}  # item -> the items left of it that it should line up with
    for m in sorted(members, key=lambda m: m.id):
        items[col[m.id]].append(("m", m.id))
        feeds[("m", m.id)] = []
        for p in m.parents:
            if p not in by_id:
                continue
            prev = ("m", p)
            for c in range(col[p] + 1, col[m.id]):
                lane = ("d", p, m.id, c)
                items[c].append(lane)
                feeds[lane] = [prev]
                prev = lane
            feeds[("m", m.id)].append(prev)

    y: dict[tuple, float] = {}
    for c in range(len(columns)):
        wanted = {}
        for k, item in enumerate(items[c]):
            ys = [y[f] for f in feeds[item] if f in y]
            wanted[item] = sum(ys) / len(ys) if ys else float(k)
        order = sorted(items[c], key=lambda it: (wanted[it], it[0] == "m", it[1:]))
        placed: list[float] = []
        for i, item in enumerate(order):
            if not placed:
                placed.append(wanted[item])
            else:
                gap = _GAP[(order[i - 1][0] == "m", item[0] == "m")]
                placed.append(max(wanted[item], placed[-1] + gap))
        shift = sum(wanted[it] - v for it, v in zip(order, placed)) / len(order)  # centred on what it lines up with
        for item, v in zip(order, placed):
            y[item] = v + shift
    top = min(y.values(), default=0.0)
    places = {m.id: (col[m.id], round(y[("m", m.id)] - top, 4)) for m in members}
    lanes: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for item, v in sorted(y.items(), key=lambda kv: kv[0][1:]):
        if item[0] == "d":
            lanes.setdefault((item[1], item[2]), []).append((item[3], round(v - top, 4)))
    return Layout(places=places, lanes=lanes)


def _score_rows(rows: list[ScoreRow]) -> list[dict]:
    return [{"task": r.task, "split": r.split, "metric": r.metric, "limit": r.limit, "fewshot": r.fewshot,
             "value": _num(r.value),
             "se": _num(r.se if r.se is not None else task_se(r.value, r.docs, r.metric, r.outcomes())),
             "docs": r.docs, "reused_from": r.reused_from, "estimator": r.estimator} for r in rows]


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"best": max(values), "median": statistics.median(values), "worst": min(values)}


def collect(store: Store, pipeline: PipelineConfig, *, run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, as JSON-able data."""
    members = store.members()
    board = ScoreBoard(store, pipeline.fitness)
    scores = {which: board.members([m.id for m in members], which) for which in SPLITS}
    fronts = _fronts(members, scores, [t.task for t in pipeline.fitness.tasks])
    out_members = _members(store, members, scores, estimator=board.estimator("select"))
    shared_on = uses_shared_fitness(pipeline)
    alive = [m.id for m in members if m.state is MemberState.ALIVE]
    shared = {which: (shared_fitness(alive, scores[which]) if shared_on else None) or {} for which in SPLITS}
    for m in out_members:
        m["front"] = {which: fronts[which]["of"].get(m["id"]) for which in SPLITS}
        m["shared"] = {which: shared[which].get(m["id"]) for which in SPLITS} if m["id"] in alive else None
    generations = store.generations()
    method = pipeline.crossover.method if pipeline.crossover is not None else None
    best = max((m for m in out_members if m["state"] != "intermediate" and m["select"] is not None),
               key=lambda m: (m["select"], -m["id"]), default=None)
    fit = pipeline.fitness
    return {
        "run": {
            "name": pipeline.name, "dir": run_dir.name, "seed": pipeline.seed,
            "generations": pipeline.generations, "generations_done": len(generations),
            "finished": bool(store.events(kind="run_finished")),
            "population_size": pipeline.population_size, "children_per_generation": pipeline.children_per_generation,
            "crossover": method,
            "mutation": [op.kind for op in pipeline.mutation.operators] if pipeline.mutation else [],
            "tasks": [{"task": t.task, "metric": t.metric, "weight": t.weight} for t in fit.tasks],
            "splits": {which: {"split": fit.split(which).split, "limit": fit.split(which).limit,
                               "anchors": _anchors(board, which)} for which in SPLITS},
            "num_fewshot": fit.num_fewshot,
            "best": None if best is None else best["id"],
            "shared_fitness": shared_on,
        },
        "colors": {**operator_colors(), **{m.operator: operator_color(m.operator) for m in members}},
        "members": out_members,
        "fronts": {which: fronts[which]["front"] for which in SPLITS},
        "paired": [] if best is None else _paired(board, members, scores, best["id"]),
        "generations": _generations(members, generations, scores),
        "crossovers": _crossovers(store, method),
        "mutations": _mutations(store),
    }


def _anchors(board: ScoreBoard, which: str) -> dict | None:
    """A split's anchors, where it is estimated: per task, how many documents are anchors out of how many."""
    anchors = board.anchors(which)
    return {task: {"anchors": len(a.docs), "documents": len(a.strata)} for task, a in anchors.items()} or None


def _members(store: Store, members: list[MemberRecord], scores: dict[str, dict[int, Scores]], *,
             estimator: str = "") -> list[dict]:
    by_id = {m.id: m for m in members}
    survived: dict[int, list[int]] = {}
    for gen, ids in store.generations().items():
        for i in ids:
            survived.setdefault(i, []).append(gen)
    children: dict[int, list[int]] = {}
    for m in members:
        for p in m.parents:
            children.setdefault(p, []).append(m.id)
    tree = layout(members)
    out = []
    for m in members:
        per = {which: scores[which][m.id] for which in SPLITS}
        tasks = {t: {**{w: _num(s.tasks[t]) for w, s in per.items()}, **{f"{w}_se": _num(s.se.get(t))
                                                                          for w, s in per.items()}}
                 for t in per["select"].tasks}
        col, row = tree.places[m.id]
        out.append({
            "id": m.id, "name": m.name, "generation": m.generation, "operator": m.operator,
            "kind": operator_kind(m.operator), "state": m.state.value,
            "parents": list(m.parents), "children": children.get(m.id, []),
            "edges": [{"parent": p, "label": edge_label(m, by_id[p]), "lanes": tree.lanes.get((p, m.id), [])}
                      for p in m.parents if p in by_id],
            "params": m.params, "recipe": _recipe_text(m), "survived": survived.get(m.id, []),
            **{w: _num(s.weighted) for w, s in per.items()}, **{f"{w}_se": _num(s.weighted_se) for w, s in per.items()},
            "tasks": tasks, "estimated": {w: bool(s.estimator) for w, s in per.items()},
            "scores": _score_rows(store.scores(member_subject(m.id), any_limit=True)
                                  + (store.scores(member_subject(m.id), any_limit=True, estimator=estimator)
                                     if estimator else [])),
            "col": col, "row": row,
            "path": drawn_path(m),
        })
    return out


def _paired(board: ScoreBoard, members: list[MemberRecord], scores: dict[str, dict[int, Scores]],
            best: int) -> list[dict]:
    """The best member (A) against each seed scored on the split and each parent (B), on the report split, then
    select: A − B with its 95% paired interval over documents (ScoreBoard.compare), or, where either has no
    per-document outcomes, the point difference only ("paired": false; None where either is unscored)."""
    by_id = {m.id: m for m in members}
    seeds = {m.id for m in members if m.generation == 0 and m.state not in (MemberState.FAILED,
                                                                             MemberState.INTERMEDIATE)}
    parents = set(by_id[best].parents)
    out = []
    for which in ("report", "select"):
        a = scores[which][best]
        others = sorted(i for i in (seeds | parents) - {best}
                        if i in parents or scores[which][i].weighted is not None)
        for i in others:
            b = scores[which][i]
            relation = ", ".join(r for r, ids in (("seed", seeds), ("parent", parents)) if i in ids)
            entry = {"other": i, "name": by_id[i].name, "relation": relation, "split": which, "paired": False,
                     "diff": None, "low": None, "high": None, "docs": None, "a_wins": None, "b_wins": None,
                     "ties": None, "verdict": None}
            if a.weighted is not None and b.weighted is not None:
                entry["diff"] = _num(a.weighted - b.weighted)
            compared = board.compare(a, b) if entry["diff"] is not None else None
            if compared is not None:
                whole = compared[1]
                entry.update(paired=True, diff=_num(whole.diff), low=_num(whole.low), high=_num(whole.high),
                             docs=int(whole.docs), a_wins=_num(whole.a_wins), b_wins=_num(whole.b_wins),
                             ties=_num(whole.ties), verdict=whole.verdict)
            out.append(entry)
    return out


def _fronts(members: list[MemberRecord], scores: dict[str, dict[int, Scores]], tasks: list[str]) -> dict:
    """Per split: every contender's Pareto front over the per-task scores (evomerge/selection/pareto.py) and the
    first front's members, in id order."""
    from evomerge.selection.pareto import numbered

    out = {}
    for which in SPLITS:
        ranked = numbered(members, scores[which], tasks)
        out[which] = {"of": ranked, "front": sorted(i for i, f in ranked.items() if f == 1)}
    return out


def _generations(members: list[MemberRecord], generations: dict[int, list[int]],
                 scores: dict[str, dict[int, Scores]]) -> list[dict]:
    """Per generation: its population, the members born in it, and the best, median and worst of the population."""
    contenders = [m for m in members if m.state is not MemberState.INTERMEDIATE]
    out = []
    for gen in [0, *sorted(generations)]:
        population = [m.id for m in contenders if m.generation == 0] if gen == 0 else generations[gen]
        entry: dict[str, Any] = {"generation": gen, "population": population,
                                 "born": [m.id for m in contenders if m.generation == gen]}
        for which in SPLITS:
            entry[which] = _stats([v for i in population if (v := _num(scores[which][i].weighted)) is not None])
        out.append(entry)
    return out


def _crossovers(store: Store, method: str | None) -> list[dict]:
    """Each crossover's CMA-ES candidates, in order, and its step size after each tell."""
    sigmas: dict[int, dict[int, float]] = {}
    for _, _, d in store.events(kind="cma_tell"):
        sigmas.setdefault(d["crossover"], {})[d["iteration"]] = _num(d.get("sigma"))
    candidates: dict[int, list[dict]] = {}
    for c in store.candidates():
        candidates.setdefault(c.crossover_id, []).append(
            {"id": c.id, "subject": candidate_subject(c.id), "iteration": c.iteration, "idx": c.idx,
             "params": c.params, "score": _num(c.score)})
    return [{"id": x.id, "generation": x.generation, "slot": x.slot, "parents": list(x.parents),
             "child": x.child_id, "method": method, "candidates": candidates.get(x.id, []),
             "sigma": [sigmas.get(x.id, {}).get(i) for i in range(x.iteration)]}
            for x in store.crossovers()]


def _mutations(store: Store) -> list[dict]:
    """Each mutation, with its operator's per-step reward curve (noise ES) where it has one."""
    out = []
    for mu in store.mutations():
        operator = operator_class(mu.operator.get("kind", ""))
        curve = operator.curve(store.mutation_steps(mu.id)) if operator is not None else []
        out.append({
            "id": mu.id, "generation": mu.generation, "slot": mu.slot, "parent": mu.parent_id, "child": mu.child_id,
            "kind": mu.operator.get("kind"), "operator": mu.operator,
            "rewards": [{k: (v if k == "iteration" else _num(v)) for k, v in point.items()} for point in curve],
        })
    return out
