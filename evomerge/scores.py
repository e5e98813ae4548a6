"""The one score query: a member's (or a candidate's) per-task scores on the select or report split and their
weighted scalar. The loop, the selectors, the CLI, the leaderboard and the report all read scores through it.

    board = ScoreBoard(store, pipeline.fitness)
    s = board.member(member_id, "report")     # Scores(tasks={"evomerge_arith": 0.65, ...}, weighted=0.64, docs=...)
    s.weighted_se, s.se["evomerge_arith"]     # standard errors over documents (evomerge/outcomes.py)
    board.compare(a_id, b_id, "report")       # paired A − B per task and weighted, with 95% intervals
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from evomerge.config import FitnessSpec
from evomerge.outcomes import Paired, paired, task_se
from evomerge.records import by_task, candidate_subject, member_subject
from evomerge.store.base import Store


@dataclass(frozen=True)
class Scores:
    tasks: dict[str, Optional[float]]   # task -> its configured metric (None: not scored)
    weighted: Optional[float]           # the pipeline's weighted score (None unless every task is scored)
    docs: dict[str, int]                # task -> documents scored
    se: dict[str, Optional[float]] = field(default_factory=dict)  # task -> standard error over its documents
    weighted_se: Optional[float] = None                          # the weighted score's standard error
    outcomes: dict[str, Optional[np.ndarray]] = field(default_factory=dict, compare=False)  # task -> per document
    weights: dict[str, float] = field(default_factory=dict, compare=False)  # task -> its weight in `weighted`

    @property
    def paired(self) -> bool:
        """Whether every task has per-document outcomes (scores from before they were kept have none)."""
        return bool(self.outcomes) and all(v is not None for v in self.outcomes.values())


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
        chosen = {(t.task, t.metric) for t in self.fitness.tasks}
        picked = {r.task: r for r in rows if (r.task, r.metric) in chosen}
        outcomes = {t.task: picked[t.task].outcomes() if t.task in picked else None for t in self.fitness.tasks}
        se = {t.task: task_se(picked[t.task].value, picked[t.task].docs, t.metric, outcomes[t.task])
              if t.task in picked else None for t in self.fitness.tasks}
        return Scores(tasks={t.task: results.get(t.task, {}).get(t.metric) for t in self.fitness.tasks},
                      weighted=self.fitness.weighted(results), docs={r.task: r.docs for r in rows}, se=se,
                      weighted_se=self.fitness.weighted_se(se), outcomes=outcomes,
                      weights={t.task: t.weight for t in self.fitness.tasks})

    def member(self, member_id: int, which: str = "select") -> Scores:
        return self.of(member_subject(member_id), which)

    def candidate(self, candidate_id: int, which: str = "select") -> Scores:
        return self.of(candidate_subject(candidate_id), which)

    def members(self, ids: list[int], which: str = "select") -> dict[int, Scores]:
        return {m: self.member(m, which) for m in ids}

    def compare(self, a: Scores, b: Scores) -> Optional[tuple[dict[str, Paired], Paired]]:
        """A − B, paired over the documents both were scored on, per task and weighted (evomerge/outcomes.py); None
        unless both have every task's outcomes."""
        if not (a.paired and b.paired):
            return None
        return paired({t.task: a.outcomes[t.task] for t in self.fitness.tasks},
                      {t.task: b.outcomes[t.task] for t in self.fitness.tasks},
                      {t.task: t.weight for t in self.fitness.tasks})

    def has(self, subject: str, which: str) -> bool:
        return bool(self.store.scores(subject, **self.key(which)))
