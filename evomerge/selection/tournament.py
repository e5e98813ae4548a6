"""Tournament parent selection: each parent is the best of k members drawn without replacement (ties: the older)."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from evomerge.config import KindSettings
from evomerge.scores import Scores
from evomerge.selection.base import ParentSelector, sort_key


class Tournament(ParentSelector):
    class Settings(KindSettings):
        k: int = Field(2, ge=1, description="entrants per tournament")

    def select(self, population: list[int], scores: dict[int, Scores], *, n: int,
               rng: np.random.Generator) -> list[int]:
        pool = sorted(population)
        chosen: list[int] = []
        for _ in range(n):
            entrants = rng.choice(len(pool), size=min(self.settings.k, len(pool)), replace=False)
            pick = max((pool[i] for i in entrants), key=lambda m: (sort_key(scores[m]), -m))
            chosen.append(pick)
            pool.remove(pick)
        return chosen
