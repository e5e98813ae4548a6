"""Pareto fronts over the per-task scores, as NSGA-II ranks them (Deb et al. 2002, sec. III): fast non-dominated
sorting, then crowding distance within a front. One module, so that the selectors, `evomerge leaderboard
--pareto` and the report agree on every member's front.

    points = objectives(scores, tasks)       # member id -> one value per task, higher is better
    ranked = rank(points)                     # member id -> (front, crowding distance); front 0 is non-dominated
    numbered(members, scores, tasks)          # what a user reads: contenders' fronts, 1 = non-dominated

Members without a finite score on every task are not placed on a front by domination: they share the last front,
after every member that has one, with crowding distance 0 (like `elitist`, such a member never displaces one that
has a score). Ties are broken by the caller with member ids (the older member first), so the order is fixed.
"""
from __future__ import annotations

import math
from typing import Optional

from evomerge.records import MemberRecord, MemberState
from evomerge.scores import Scores

Point = tuple[float, ...]


def objectives(scores: dict[int, Scores], tasks: list[str]) -> dict[int, Optional[Point]]:
    """Each member's per-task scores in `tasks` order, or None if one of them is missing or not finite."""
    out: dict[int, Optional[Point]] = {}
    for m, s in scores.items():
        values = [s.tasks.get(t) for t in tasks]
        out[m] = tuple(float(v) for v in values) if all(v is not None and math.isfinite(v) for v in values) else None
    return out


def dominates(a: Point, b: Point) -> bool:
    """a is at least as good as b on every objective and better on one (maximising)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def fronts(points: dict[int, Optional[Point]]) -> list[list[int]]:
    """The members in non-dominated fronts, best first, each front in id order (NSGA-II's fast non-dominated
    sort: O(M·N²)); members without a point make up the last front."""
    ids = sorted(m for m, p in points.items() if p is not None)
    beaten_by = {m: 0 for m in ids}             # how many members dominate m
    beats: dict[int, list[int]] = {m: [] for m in ids}
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if dominates(points[a], points[b]):
                beats[a].append(b)
                beaten_by[b] += 1
            elif dominates(points[b], points[a]):
                beats[b].append(a)
                beaten_by[a] += 1
    out, current = [], [m for m in ids if beaten_by[m] == 0]
    while current:
        out.append(current)
        following = []
        for a in current:
            for b in beats[a]:
                beaten_by[b] -= 1
                if beaten_by[b] == 0:
                    following.append(b)
        current = sorted(following)
    missing = sorted(m for m, p in points.items() if p is None)
    return out + ([missing] if missing else [])


def crowding(points: dict[int, Optional[Point]], front: list[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each member of one front: per objective, the members at either end get
    infinity, the others the gap between their neighbours over the objective's range, summed over objectives."""
    out = {m: 0.0 for m in front}
    members = [m for m in front if points[m] is not None]
    if not members:
        return out
    for k in range(len(points[members[0]])):
        ordered = sorted(members, key=lambda m: (points[m][k], m))
        low, high = points[ordered[0]][k], points[ordered[-1]][k]
        out[ordered[0]] = out[ordered[-1]] = math.inf
        if high == low:
            continue
        for before, m, after in zip(ordered, ordered[1:], ordered[2:]):
            out[m] += (points[after][k] - points[before][k]) / (high - low)
    return out


def rank(points: dict[int, Optional[Point]]) -> dict[int, tuple[int, float]]:
    """Each member's (front, crowding distance): the crowded-comparison key is (front ascending, crowding
    descending)."""
    out = {}
    for f, front in enumerate(fronts(points)):
        for m, d in crowding(points, front).items():
            out[m] = (f, d)
    return out


def crowded_key(ranked: dict[int, tuple[int, float]], m: int) -> tuple[int, float, int]:
    """Sort key, best first: lower front, then larger crowding distance, then the older member."""
    front, distance = ranked[m]
    return front, -distance, m


def numbered(members: list[MemberRecord], scores: dict[int, Scores], tasks: list[str]) -> dict[int, int]:
    """The front of every contender (neither an intermediate nor failed) that has a score on every task, numbered
    from 1 (not dominated by any contender): what `leaderboard --pareto` and the report show."""
    contenders = {m.id: scores[m.id] for m in members if m.state not in (MemberState.INTERMEDIATE, MemberState.FAILED)}
    points = objectives(contenders, tasks)
    return {m: f + 1 for f, front in enumerate(fronts(points)) for m in front if points[m] is not None}
