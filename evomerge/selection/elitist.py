"""Elitist survivor selection: the best `population_size` of parents ∪ children by weighted select score (ties: the
older member); a member without a finite score never displaces one that has it."""
from __future__ import annotations

from evomerge.config import KindSettings
from evomerge.scores import Scores
from evomerge.selection.base import SurvivorSelector, sort_key


class Elitist(SurvivorSelector):
    class Settings(KindSettings):
        """No settings of its own."""

    def select(self, candidates: list[int], scores: dict[int, Scores], *, size: int) -> list[int]:
        return sorted(candidates, key=lambda m: (-sort_key(scores[m]), m))[:size]
