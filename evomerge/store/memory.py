"""The in-memory backend: the store contract with plain Python objects, for library use and tests. Nothing persists:
a run kept here cannot be resumed or read by another process.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

from evomerge.records import (
    AnchorSet,
    CandidateRecord,
    CrossoverRecord,
    MemberRecord,
    MemberState,
    MutationRecord,
    MutationStep,
    ScoreRow,
)
from evomerge.store.base import Outcomes, Store, StoreConflict, TransactionGuard, packed_rows, serialised


class _Tables:
    """Everything the store holds; copied at the start of a transaction and put back if it fails."""

    def __init__(self) -> None:
        self.members: dict[int, MemberRecord] = {}
        self.scores: dict[tuple, ScoreRow] = {}
        self.anchors: dict[tuple, dict[str, AnchorSet]] = {}
        self.crossovers: dict[int, CrossoverRecord] = {}
        self.candidates: dict[int, CandidateRecord] = {}
        self.mutations: dict[int, MutationRecord] = {}
        self.steps: dict[tuple[int, int], MutationStep] = {}
        self.generations: dict[int, list[int]] = {}
        self.events: list[tuple[float, str, dict]] = []


def _new_id(table: dict, wanted: Optional[int]) -> int:
    """The id asked for (which must be free), or the next one after the largest."""
    if wanted is None:
        return max(table, default=0) + 1
    if wanted in table:
        raise StoreConflict(f"id {wanted} is taken")
    return wanted


def _copy(value: Any) -> Any:
    """Records as a database would hand them out: the caller's to change."""
    return copy.deepcopy(value)


def _frozen(value: Any) -> Any:
    """A copy that the caller cannot change afterwards (what a database row gives)."""
    return json.loads(json.dumps(value))


@serialised
class MemoryStore(Store):
    kind = "memory"

    def __init__(self, config: dict) -> None:
        self._config = _frozen(config)
        self._t = _Tables()
        self._saved: Optional[_Tables] = None
        self._guard = TransactionGuard()

    @classmethod
    def create(cls, location: Optional[Path], *, config: dict) -> "MemoryStore":
        return cls(config)

    @classmethod
    def open(cls, location: Path) -> "MemoryStore":
        from evomerge.errors import EvomergeError

        raise EvomergeError("the in-memory store keeps nothing between processes. Fix: run with the sqlite store "
                            "to resume or inspect a run later")

    def transaction(self):
        def begin() -> None:
            self._saved = copy.deepcopy(self._t)

        def rollback() -> None:
            self._t, self._saved = self._saved, None

        def commit() -> None:
            self._saved = None

        return self._guard.around(begin, commit, rollback)

    def config(self) -> dict:
        return _frozen(self._config)

    # ------------------------------------------------------------ members

    def add_member(self, *, name: str, generation: int, operator: str, parents: tuple[int, ...], params: dict,
                   recipe: str, weights: Optional[str], state: MemberState = MemberState.ALIVE,
                   id: Optional[int] = None) -> int:
        self._guard.check()
        if any(m.name == name for m in self._t.members.values()):
            raise StoreConflict(f"member name {name!r} is taken")
        mid = _new_id(self._t.members, id)
        self._t.members[mid] = MemberRecord(id=mid, name=name, generation=generation, operator=operator,
                                            parents=tuple(parents), params=_frozen(params), recipe=recipe,
                                            state=state, weights=weights, created=time.time())
        return mid

    def retire(self, member_id: int, *, state: MemberState = MemberState.RETIRED) -> None:
        self._guard.check()
        m = self._t.members.get(member_id)
        if state is MemberState.ALIVE or m is None or m.state is not MemberState.ALIVE:
            raise StoreConflict(f"member {member_id} is not alive")
        self._t.members[member_id] = replace(m, state=state, weights=None)

    def promote(self, member_id: int, weights: str) -> None:
        self._guard.check()
        m = self._t.members.get(member_id)
        if m is None or m.state is not MemberState.INTERMEDIATE:
            raise StoreConflict(f"member {member_id} is not an intermediate")
        self._t.members[member_id] = replace(m, state=MemberState.ALIVE, weights=weights)

    def set_weights(self, member_id: int, weights: Optional[str]) -> None:
        self._guard.check()
        self._t.members[member_id] = replace(self._t.members[member_id], weights=weights)

    def member(self, key: int | str) -> Optional[MemberRecord]:
        if isinstance(key, int):
            return _copy(self._t.members.get(key))
        return _copy(next((m for m in self._t.members.values() if m.name == key), None))

    def members(self, *, state: Optional[MemberState] = None) -> list[MemberRecord]:
        return _copy([m for _, m in sorted(self._t.members.items()) if state is None or m.state is state])

    # ------------------------------------------------------------ scores

    def add_scores(self, subject: str, *, split: str, limit: Optional[int], fewshot: int,
                   results: dict[str, dict[str, float]], docs: dict[str, int],
                   reused_from: Optional[str] = None, outcomes: Optional[Outcomes] = None,
                   estimator: str = "", se: Optional[dict[str, dict[str, float]]] = None) -> None:
        self._guard.check()
        packed = packed_rows(results, docs, outcomes)
        errors = se or {}
        rows = {(subject, task, split, metric, limit, fewshot, estimator): ScoreRow(
                    subject=subject, task=task, split=split, metric=metric, limit=limit, fewshot=fewshot,
                    value=float(value), docs=docs[task], reused_from=reused_from, packed=packed[task, metric],
                    estimator=estimator,
                    se=None if errors.get(task, {}).get(metric) is None else float(errors[task][metric]))
                for task, metrics in results.items() for metric, value in metrics.items()}
        if rows.keys() & self._t.scores.keys():
            raise StoreConflict(f"{subject}: a score on {split} is written already")
        self._t.scores.update(rows)

    def scores(self, subject: str, *, split: Optional[str] = None, limit: Optional[int] = None,
               fewshot: Optional[int] = None, any_limit: bool = False, estimator: str = "") -> list[ScoreRow]:
        rows = [r for r in self._t.scores.values()
                if r.subject == subject and r.estimator == estimator and (split is None or r.split == split)
                and (any_limit or r.limit == limit) and (fewshot is None or r.fewshot == fewshot)]
        return sorted(rows, key=lambda r: (r.task, r.metric))

    def all_scores(self) -> list[ScoreRow]:
        return sorted(self._t.scores.values(), key=lambda r: (r.subject, r.task, r.split, r.metric, r.estimator))

    def add_anchors(self, *, split: str, limit: Optional[int], fewshot: int, anchors: Sequence[AnchorSet]) -> None:
        self._guard.check()
        if (split, limit, fewshot) in self._t.anchors:
            raise StoreConflict(f"the anchors of split {split!r} are chosen already")
        self._t.anchors[split, limit, fewshot] = {a.task: AnchorSet(task=a.task, docs=tuple(a.docs),
                                                                    strata=tuple(a.strata)) for a in anchors}

    def anchors(self, *, split: str, limit: Optional[int], fewshot: int) -> dict[str, AnchorSet]:
        return dict(sorted(self._t.anchors.get((split, limit, fewshot), {}).items()))

    # ------------------------------------------------------------ crossovers and their CMA-ES candidates

    def add_crossover(self, *, generation: int, slot: int, parents: tuple[int, ...], id: Optional[int] = None) -> int:
        self._guard.check()
        if self.crossover(generation, slot) is not None:
            raise StoreConflict(f"generation {generation} slot {slot} has a crossover already")
        cid = _new_id(self._t.crossovers, id)
        self._t.crossovers[cid] = CrossoverRecord(id=cid, generation=generation, slot=slot, parents=tuple(parents),
                                                  iteration=0, child_id=None)
        return cid

    def crossover(self, generation: int, slot: int) -> Optional[CrossoverRecord]:
        return next((x for x in self._t.crossovers.values() if (x.generation, x.slot) == (generation, slot)), None)

    def crossovers(self) -> list[CrossoverRecord]:
        return [x for _, x in sorted(self._t.crossovers.items())]

    def set_crossover_iteration(self, crossover_id: int, iteration: int) -> None:
        self._guard.check()
        x = self._t.crossovers[crossover_id]
        if iteration != x.iteration + 1:
            raise StoreConflict(f"crossover {crossover_id}: iteration {iteration} does not follow the told ones")
        self._t.crossovers[crossover_id] = replace(x, iteration=iteration)

    def set_crossover_child(self, crossover_id: int, child_id: int) -> None:
        self._guard.check()
        x = self._t.crossovers[crossover_id]
        if x.child_id is not None:
            raise StoreConflict(f"crossover {crossover_id} has a child already")
        self._t.crossovers[crossover_id] = replace(x, child_id=child_id)

    def add_candidates(self, crossover_id: int, iteration: int, proposals: list[tuple[list[float], dict]],
                       ids: Optional[list[int]] = None) -> None:
        self._guard.check()
        if crossover_id not in self._t.crossovers:
            raise StoreConflict(f"no crossover {crossover_id}")
        if self.candidates(crossover_id, iteration=iteration):
            raise StoreConflict(f"crossover {crossover_id} iteration {iteration} has its candidates already")
        for i, (x, params) in enumerate(proposals):
            cid = _new_id(self._t.candidates, None if ids is None else ids[i])
            self._t.candidates[cid] = CandidateRecord(id=cid, crossover_id=crossover_id, iteration=iteration, idx=i,
                                                      x=tuple(float(v) for v in x), params=_frozen(params), score=None)

    def set_candidate_score(self, candidate_id: int, score: float) -> None:
        self._guard.check()
        c = self._t.candidates[candidate_id]
        if c.done:
            raise StoreConflict(f"candidate {candidate_id} is scored or failed already")
        self._t.candidates[candidate_id] = replace(c, score=float(score))

    def set_candidate_failure(self, candidate_id: int, failure: str) -> None:
        self._guard.check()
        c = self._t.candidates[candidate_id]
        if c.done:
            raise StoreConflict(f"candidate {candidate_id} is scored or failed already")
        self._t.candidates[candidate_id] = replace(c, failure=failure)

    def candidates(self, crossover_id: Optional[int] = None, *, iteration: Optional[int] = None
                   ) -> list[CandidateRecord]:
        rows = [c for c in self._t.candidates.values()
                if (crossover_id is None or c.crossover_id == crossover_id)
                and (iteration is None or c.iteration == iteration)]
        return _copy(sorted(rows, key=lambda c: (c.crossover_id, c.iteration, c.idx)))

    # ------------------------------------------------------------ mutations and their steps

    def add_mutation(self, *, generation: int, slot: int, parent_id: int, operator: dict,
                     id: Optional[int] = None) -> int:
        self._guard.check()
        if self.mutation(generation, slot) is not None:
            raise StoreConflict(f"generation {generation} slot {slot} has a mutation already")
        mid = _new_id(self._t.mutations, id)
        self._t.mutations[mid] = MutationRecord(id=mid, generation=generation, slot=slot, parent_id=parent_id,
                                                operator=_frozen(operator), child_id=None)
        return mid

    def mutation(self, generation: int, slot: int) -> Optional[MutationRecord]:
        return _copy(next((m for m in self._t.mutations.values() if (m.generation, m.slot) == (generation, slot)),
                          None))

    def mutations(self) -> list[MutationRecord]:
        return _copy([m for _, m in sorted(self._t.mutations.items())])

    def set_mutation_child(self, mutation_id: int, child_id: int) -> None:
        self._guard.check()
        m = self._t.mutations[mutation_id]
        if m.child_id is not None:
            raise StoreConflict(f"mutation {mutation_id} has a child already")
        self._t.mutations[mutation_id] = replace(m, child_id=child_id)

    def add_mutation_step(self, mutation_id: int, step: int, data: dict) -> None:
        self._guard.check()
        if (mutation_id, step) in self._t.steps or mutation_id not in self._t.mutations:
            raise StoreConflict(f"mutation {mutation_id} step {step} is written already (or no such mutation)")
        self._t.steps[(mutation_id, step)] = MutationStep(mutation_id, step, _frozen(data))

    def mutation_steps(self, mutation_id: int) -> list[MutationStep]:
        return _copy([s for (m, _), s in sorted(self._t.steps.items()) if m == mutation_id])

    # ------------------------------------------------------------ generations and events

    def set_survivors(self, generation: int, survivors: list[int]) -> None:
        self._guard.check()
        if generation in self._t.generations:
            raise StoreConflict(f"generation {generation} has its survivors already")
        self._t.generations[generation] = list(survivors)

    def generations(self) -> dict[int, list[int]]:
        return {g: list(ids) for g, ids in sorted(self._t.generations.items())}

    def add_event(self, kind: str, **data: Any) -> None:
        self._guard.check()
        self._t.events.append((time.time(), kind, _frozen(data)))

    def events(self, *, kind: Optional[str] = None, last: Optional[int] = None) -> list[tuple[float, str, dict]]:
        rows = [e for e in self._t.events if kind is None or e[1] == kind]
        return _copy(rows[-last:] if last else rows)
