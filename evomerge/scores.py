"""The one score query: a member's (or a candidate's) per-task scores on the select or report split and their
weighted scalar. The loop, the selectors, the CLI, the leaderboard and the report all read scores through it.

    board = ScoreBoard(store, pipeline.fitness)
    s = board.member(member_id, "report")     # Scores(tasks={"evomerge_arith": 0.65, ...}, weighted=0.64, docs=...)
    s.weighted_se, s.se["evomerge_arith"]     # standard errors over documents (evomerge/outcomes.py)
    board.compare(a_id, b_id, "report")       # paired A − B per task and weighted, with 95% intervals

Where the select split is estimated from anchors (fitness.select.estimator, evomerge/fitness/anchors.py), a
member's select Scores are its estimate (`estimator` names it; `se` is the estimator's), or, for a member scored
on every document (a seed), its exact score; either way its outcomes are those of the anchor documents, each
standing for `doc_weights` of the split's documents, so that members can be put side by side document by document
(shared fitness, attraction).
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
    estimator: str = ""                 # "": computed on the documents counted; else the estimator's estimate
    doc_weights: dict[str, np.ndarray] = field(default_factory=dict, compare=False)  # task -> how many split
                                        # documents each outcome stands for (empty: one each)

    @property
    def paired(self) -> bool:
        """Whether every task has per-document outcomes (scores from before they were kept have none)."""
        return bool(self.outcomes) and all(v is not None for v in self.outcomes.values())


class ScoreBoard:
    def __init__(self, store: Store, fitness: FitnessSpec) -> None:
        self.store = store
        self.fitness = fitness
        self._anchors: dict[str, dict] = {}  # split -> its anchors, once chosen (they never change)

    def key(self, which: str) -> dict:
        """The store's key of a split's scores: (split name, document limit, few-shot count)."""
        spec = self.fitness.split(which)
        return {"split": spec.split, "limit": spec.limit, "fewshot": self.fitness.num_fewshot}

    def estimator(self, which: str) -> str:
        """The estimator of a split's scores (its registry name), "" where every score is computed in full."""
        spec = self.fitness.split(which).estimator
        return "" if spec is None else spec.kind

    def anchors(self, which: str = "select") -> dict:
        """task -> the split's anchor set (evomerge/records.py AnchorSet), empty until they are chosen."""
        if not self.estimator(which):
            return {}
        if which not in self._anchors:
            found = self.store.anchors(**self.key(which))
            if not found:
                return {}
            self._anchors[which] = found
        return self._anchors[which]

    def of(self, subject: str, which: str = "select", *, exact: bool = False) -> Scores:
        """A subject's scores on a split (see the module docstring); `exact`: only a score computed on every document
        it counts, its outcomes as they are (not set beside the anchors)."""
        kind = "" if exact else self.estimator(which)
        rows = self.store.scores(subject, **self.key(which), estimator=kind) if kind else []
        estimated = bool(rows)
        rows = rows or self.store.scores(subject, **self.key(which))
        results = by_task(rows)
        chosen = {(t.task, t.metric) for t in self.fitness.tasks}
        picked = {r.task: r for r in rows if (r.task, r.metric) in chosen}
        outcomes = {t.task: picked[t.task].outcomes() if t.task in picked else None for t in self.fitness.tasks}
        se = {t.task: (picked[t.task].se if picked[t.task].se is not None else
                       task_se(picked[t.task].value, picked[t.task].docs, t.metric, outcomes[t.task]))
              if t.task in picked else None for t in self.fitness.tasks}
        anchors = {} if exact else self.anchors(which)
        doc_weights = {}
        if anchors:  # everyone side by side on the anchors: a full score's outcomes restricted to them
            for t in self.fitness.tasks:
                a = anchors.get(t.task)
                if a is None:
                    continue
                doc_weights[t.task] = np.asarray(a.weights())
                if not estimated and outcomes[t.task] is not None and outcomes[t.task].size == len(a.strata):
                    outcomes[t.task] = outcomes[t.task][list(a.docs)]
        return Scores(tasks={t.task: results.get(t.task, {}).get(t.metric) for t in self.fitness.tasks},
                      weighted=self.fitness.weighted(results), docs={r.task: r.docs for r in rows}, se=se,
                      weighted_se=self.fitness.weighted_se(se), outcomes=outcomes,
                      weights={t.task: t.weight for t in self.fitness.tasks}, estimator=kind if estimated else "",
                      doc_weights=doc_weights)

    def member(self, member_id: int, which: str = "select") -> Scores:
        return self.of(member_subject(member_id), which)

    def candidate(self, candidate_id: int, which: str = "select") -> Scores:
        return self.of(candidate_subject(candidate_id), which)

    def members(self, ids: list[int], which: str = "select") -> dict[int, Scores]:
        return {m: self.member(m, which) for m in ids}

    def compare(self, a: Scores, b: Scores) -> Optional[tuple[dict[str, Paired], Paired]]:
        """A − B, paired over the documents both were scored on, per task and weighted (evomerge/outcomes.py); None
        unless both have every task's outcomes on every document they count (not an estimate's anchors)."""
        if not (a.paired and b.paired) or a.doc_weights or b.doc_weights:
            return None
        return paired({t.task: a.outcomes[t.task] for t in self.fitness.tasks},
                      {t.task: b.outcomes[t.task] for t in self.fitness.tasks},
                      {t.task: t.weight for t in self.fitness.tasks})

    def has(self, subject: str, which: str) -> bool:
        """Whether the subject has its score on the split (an estimate counts where the split is estimated)."""
        kind = self.estimator(which)
        return bool(kind and self.store.scores(subject, **self.key(which), estimator=kind)
                    or self.store.scores(subject, **self.key(which)))
