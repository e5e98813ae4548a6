"""What the HTML report and the PNG plots show, read from a run's store in one pass: every member with every score
and its place in the lineage layout, fitness per generation, each crossover's CMA-ES candidates and each ES
mutation's rewards. The result is plain JSON-able data, so the HTML page and matplotlib draw the same numbers.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.config import PipelineConfig
from evomerge.lineage import OPERATOR_COLORS, edge_label, operator_color, operator_kind
from evomerge.store import (
    MemberRecord,
    MemberState,
    ScoreRow,
    Store,
    by_task,
    candidate_subject,
    member_subject,
)


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
             "value": _num(r.value), "docs": r.docs, "reused_from": r.reused_from} for r in rows]


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"best": max(values), "median": statistics.median(values), "worst": min(values)}


def collect(store: Store, pipeline: PipelineConfig, *, run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, as JSON-able data."""
    fit = pipeline.fitness
    splits = {"select": fit.select, "report": fit.report}
    members = store.members()
    by_id = {m.id: m for m in members}
    generations = store.generations()
    survived: dict[int, list[int]] = {}
    for gen, ids in generations.items():
        for i in ids:
            survived.setdefault(i, []).append(gen)
    children: dict[int, list[int]] = {}
    for m in members:
        for p in m.parents:
            children.setdefault(p, []).append(m.id)
    tree = layout(members)

    out_members = []
    weighted: dict[str, dict[int, float | None]] = {"select": {}, "report": {}}
    for m in members:
        tasks: dict[str, dict[str, float | None]] = {t.task: {} for t in fit.tasks}
        for name, spec in splits.items():
            results = by_task(store.scores(member_subject(m.id), split=spec.split, limit=spec.limit,
                                           fewshot=fit.num_fewshot))
            weighted[name][m.id] = _num(fit.weighted(results))
            for t in fit.tasks:
                tasks[t.task][name] = _num(results.get(t.task, {}).get(t.metric))
        col, row = tree.places[m.id]
        out_members.append({
            "id": m.id, "name": m.name, "generation": m.generation, "operator": m.operator,
            "kind": operator_kind(m.operator), "state": m.state.value,
            "parents": list(m.parents), "children": children.get(m.id, []),
            "edges": [{"parent": p, "label": edge_label(m, by_id[p]), "lanes": tree.lanes.get((p, m.id), [])}
                      for p in m.parents if p in by_id],
            "params": m.params, "recipe": _recipe_text(m), "survived": survived.get(m.id, []),
            "select": weighted["select"][m.id], "report": weighted["report"][m.id], "tasks": tasks,
            "scores": _score_rows(store.scores(member_subject(m.id), any_limit=True)),
            "col": col, "row": row,
        })

    contenders = [m for m in members if m.state is not MemberState.INTERMEDIATE]
    out_generations = []
    for gen in [0, *sorted(generations)]:
        population = [m.id for m in contenders if m.generation == 0] if gen == 0 else generations[gen]
        born = [m.id for m in contenders if m.generation == gen]
        entry: dict[str, Any] = {"generation": gen, "population": population, "born": born}
        for name in splits:
            entry[name] = _stats([v for i in population if (v := weighted[name].get(i)) is not None])
        out_generations.append(entry)

    sigmas: dict[int, dict[int, float]] = {}
    for _, _, d in store.events(kind="cma_tell"):
        sigmas.setdefault(d["crossover"], {})[d["iteration"]] = _num(d.get("sigma"))
    candidates: dict[int, list[dict]] = {}
    for c in store.all_candidates():
        candidates.setdefault(c.crossover_id, []).append(
            {"id": c.id, "subject": candidate_subject(c.id), "iteration": c.iteration, "idx": c.idx,
             "params": c.params, "fitness": _num(c.fitness)})
    method = pipeline.crossover.method if pipeline.crossover is not None else None
    out_crossovers = [{"id": x.id, "generation": x.generation, "slot": x.slot, "parents": list(x.parents),
                       "child": x.child_id, "method": method, "candidates": candidates.get(x.id, []),
                       "sigma": [sigmas.get(x.id, {}).get(i) for i in range(x.iteration)]}
                      for x in store.crossovers()]

    out_mutations = []
    for mu in store.mutations():
        iterations = store.es_iterations(mu.id) if mu.operator.get("kind") == "es" else []
        out_mutations.append({
            "id": mu.id, "generation": mu.generation, "slot": mu.slot, "parent": mu.parent_id, "child": mu.child_id,
            "kind": mu.operator.get("kind"), "operator": mu.operator,
            "rewards": [{"iteration": it["iteration"],
                         "mean": _num(statistics.fmean(it["rewards_plus"] + it["rewards_minus"])),
                         "best": _num(max(it["rewards_plus"] + it["rewards_minus"])),
                         "worst": _num(min(it["rewards_plus"] + it["rewards_minus"]))} for it in iterations],
        })

    best = max((m for m in out_members if m["state"] != "intermediate" and m["select"] is not None),
               key=lambda m: (m["select"], -m["id"]), default=None)
    return {
        "run": {
            "name": pipeline.name, "dir": str(run_dir), "seed": pipeline.seed,
            "generations": pipeline.generations, "generations_done": len(generations),
            "finished": bool(store.events(kind="run_finished")),
            "population_size": pipeline.population_size, "children_per_generation": pipeline.children_per_generation,
            "crossover": method,
            "mutation": [op.kind for op in pipeline.mutation.operators] if pipeline.mutation else [],
            "tasks": [{"task": t.task, "metric": t.metric, "weight": t.weight} for t in fit.tasks],
            "splits": {name: {"split": s.split, "limit": s.limit} for name, s in splits.items()},
            "num_fewshot": fit.num_fewshot,
            "best": None if best is None else best["id"],
        },
        "colors": {**OPERATOR_COLORS, **{m.operator: operator_color(m.operator) for m in members}},
        "members": out_members,
        "generations": out_generations,
        "crossovers": out_crossovers,
        "mutations": out_mutations,
    }
