"""Parent selection by attraction (M2N2: Abrantes, Lange and Tang, "Competition and Attraction Improve Model
Fusion", GECCO 2025, arXiv 2508.16204, section 3.3): the first parent wins a tournament of k on shared fitness
(selection/shared.py); each next parent complements the parents chosen so far. Its attraction is

    g_b = sum_j max(0, F_bj - max_a F_aj)

over the select documents j, with F M2N2's fitness matrix (c_j * s_bj / (sum_k s_kj)^alpha) and a over the parents
already chosen: what b solves where they are weak, weighted by how few members solve it. As in M2N2 it is drawn with
probability proportional to g; when no candidate adds anything (g = 0 for all), by a tournament on shared fitness.
Draws come from the generator the breeding stage keys by (seed, generation, slot); ties go to the older member.
Without per-document outcomes every draw is a tournament on the weighted score, with a warning.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from evomerge.config import KindSettings
from evomerge.scores import Scores
from evomerge.selection.base import ParentSelector, sort_key
from evomerge.selection.shared import outcome_matrix, shares


class Attraction(ParentSelector):
    shows_shared_fitness: ClassVar[bool] = True

    class Settings(KindSettings):
        k: int = Field(2, ge=1, description="entrants in the first parent's tournament")
        alpha: float = Field(1.0, ge=0, allow_inf_nan=False,
                             description="strength of the competition in shared fitness (1 = M2N2's default)")

    def select(self, population: list[int], scores: dict[int, Scores], *, n: int,
               rng: np.random.Generator) -> list[int]:
        pool = sorted(population)
        matrix = outcome_matrix(pool, scores)
        if matrix is None:
            fitness = {m: sort_key(scores[m]) for m in pool}
            table = None
        else:
            table = dict(zip(pool, shares(*matrix, self.settings.alpha)))
            fitness = {m: float(row.sum()) for m, row in table.items()}
        chosen = [self._tournament(pool, fitness, rng)]
        while len(chosen) < n:
            rest = [m for m in pool if m not in chosen]
            pull = np.zeros(len(rest))
            if table is not None:
                covered = np.max([table[a] for a in chosen], axis=0)
                pull = np.array([np.maximum(0.0, table[b] - covered).sum() for b in rest])
            if pull.sum() > 0:
                chosen.append(rest[int(rng.choice(len(rest), p=pull / pull.sum()))])
            else:
                chosen.append(self._tournament(rest, fitness, rng))
        return chosen

    def _tournament(self, pool: list[int], fitness: dict[int, float], rng: np.random.Generator) -> int:
        entrants = rng.choice(len(pool), size=min(self.settings.k, len(pool)), replace=False)
        return max((pool[i] for i in entrants), key=lambda m: (fitness[m], -m))
