"""NSGA-II over the per-task select scores (Deb et al. 2002): survivors are the best fronts of parents ∪ children,
the last front that does not fit whole cut by crowding distance; parents are picked by tournaments on the
crowded-comparison operator (lower front, then larger crowding distance). Ties go to the older member, so the
choice is fixed. Use both blocks together:

    parent_selection: {kind: nsga2, k: 2}
    survivor_selection: {kind: nsga2}
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from evomerge.config import KindSettings
from evomerge.scores import Scores
from evomerge.selection.base import ParentSelector, SurvivorSelector
from evomerge.selection.pareto import crowded_key, objectives, rank


def _ranked(ids: list[int], scores: dict[int, Scores]) -> dict[int, tuple[int, float]]:
    tasks = list(next(iter(scores.values())).tasks) if scores else []
    return rank(objectives({m: scores[m] for m in ids}, tasks))


class Nsga2Survivors(SurvivorSelector):
    class Settings(KindSettings):
        """No settings of its own: the objectives are the fitness tasks' select scores (their weights are unused)."""

    def select(self, candidates: list[int], scores: dict[int, Scores], *, size: int) -> list[int]:
        ranked = _ranked(candidates, scores)
        return sorted(candidates, key=lambda m: crowded_key(ranked, m))[:size]


class Nsga2Parents(ParentSelector):
    class Settings(KindSettings):
        k: int = Field(2, ge=1, description="entrants per tournament, compared by (front, crowding distance)")

    def select(self, population: list[int], scores: dict[int, Scores], *, n: int,
               rng: np.random.Generator) -> list[int]:
        ranked = _ranked(population, scores)
        pool = sorted(population)
        chosen: list[int] = []
        for _ in range(n):
            entrants = rng.choice(len(pool), size=min(self.settings.k, len(pool)), replace=False)
            pick = min((pool[i] for i in entrants), key=lambda m: crowded_key(ranked, m))
            chosen.append(pick)
            pool.remove(pick)
        return chosen
