"""Parent and survivor selectors: each one class, found by name in the registries, given every member's per-task
scores (`evomerge.scores.Scores`), so that a selector over several objectives is one new file."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from evomerge.config import KindSettings
from evomerge.scores import Scores


def sort_key(scores: Scores) -> float:
    """The weighted select score to maximise; a member without a finite one (missing, NaN, inf) ranks last."""
    w = scores.weighted
    return w if w is not None and math.isfinite(w) else -math.inf


class ParentSelector:
    name: ClassVar[str] = ""
    shows_shared_fitness: ClassVar[bool] = False  # the leaderboard and the report show shared fitness (shared.py)
    Settings: ClassVar[type[KindSettings]] = KindSettings

    def __init__(self, settings: KindSettings) -> None:
        self.settings = settings

    def select(self, population: list[int], scores: dict[int, Scores], *, n: int,
               rng: np.random.Generator) -> list[int]:
        """n distinct parents from `population` (member ids)."""
        raise NotImplementedError


class SurvivorSelector:
    name: ClassVar[str] = ""
    shows_shared_fitness: ClassVar[bool] = False
    Settings: ClassVar[type[KindSettings]] = KindSettings

    def __init__(self, settings: KindSettings) -> None:
        self.settings = settings

    def select(self, candidates: list[int], scores: dict[int, Scores], *, size: int) -> list[int]:
        """The `size` members of `candidates` (parents and children, member ids) that form the next population."""
        raise NotImplementedError
