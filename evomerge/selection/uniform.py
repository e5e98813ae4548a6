"""Uniform parent selection: each parent drawn with equal chance, without replacement, whatever its score."""
from __future__ import annotations

import numpy as np

from evomerge.config import KindSettings
from evomerge.scores import Scores
from evomerge.selection.base import ParentSelector


class Uniform(ParentSelector):
    class Settings(KindSettings):
        """No settings of its own."""

    def select(self, population: list[int], scores: dict[int, Scores], *, n: int,
               rng: np.random.Generator) -> list[int]:
        pool = sorted(population)
        chosen: list[int] = []
        for _ in range(n):
            chosen.append(pool.pop(int(rng.integers(len(pool)))))
        return chosen
