"""The one score query: a member's (or a candidate's) per-task scores on the select or report split and their
weighted scalar. The loop, the selectors, the CLI, the leaderboard and the report all read scores through it.

    board = ScoreBoard(store, pipeline.fitness)
    s = board.member(member_id, "report")     # Scores(tasks={"evomerge_arith": 0.65, ...}, weighted=0.64, docs=...)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from evomerge.config import FitnessSpec
from evomerge.records import by_task, candidate_subject, member_subject
from evomerge.store.base import Store


@dataclass(frozen=True)
class Scores:
    tasks: dict[str, Optional[float]]   # task -> its configured metric (None: not scored)
    weighted: Optional[float]           # the pipeline's weighted score (None unless every task is scored)
    docs: dict[str, int]                # task -> documents scored


class ScoreBoard:
    def __init__(self, store: Store, fitness: FitnessSpec) -> None:
        self.store = store
        self.fitness = fitness

    def key(self, which: str) -> dict:
        """The store's key of a split's scores: (split name, document limit, few-shot count)."""
        spec = self.fitness.split(which)
        return {"split": spec.split, "limit": spec.limit, "fewshot": self.fitness.num_fewshot}

    def of(self, subject: str, which: str = "select") -> Scores:
        rows = self.store.scores(subject, **self.key(which))
        results = by_task(rows)
        return Scores(tasks={t.task: results.get(t.task, {}).get(t.metric) for t in self.fitness.tasks},
                      weighted=self.fitness.weighted(results), docs={r.task: r.docs for r in rows})

    def member(self, member_id: int, which: str = "select") -> Scores:
        return self.of(member_subject(member_id), which)

    def candidate(self, candidate_id: int, which: str = "select") -> Scores:
        return self.of(candidate_subject(candidate_id), which)

    def members(self, ids: list[int], which: str = "select") -> dict[int, Scores]:
        return {m: self.member(m, which) for m in ids}

    def has(self, subject: str, which: str) -> bool:
        return bool(self.store.scores(subject, **self.key(which)))
