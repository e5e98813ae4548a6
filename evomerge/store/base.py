"""The store contract: what every backend of a run's records guarantees (Optuna's `BaseStorage` is the model).

tests/test_store.py runs one suite of contract tests against every registered backend.
"""
from __future__ import annotations

import abc
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

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


Outcomes = dict[str, dict[str, Sequence[float]]]  # task -> metric -> each document's outcome, in split order


def packed_rows(results: dict[str, dict[str, float]], docs: dict[str, int], outcomes: Optional[Outcomes]
                ) -> dict[tuple[str, str], Optional[bytes]]:
    """(task, metric) -> the row's packed outcomes (None without), for every row of `results`; outcomes that are not
    one finite number per scored document raise ValueError."""
    from evomerge.outcomes import check, pack

    out = {}
    for task, metrics in results.items():
        for metric in metrics:
            values = (outcomes or {}).get(task, {}).get(metric)
            out[task, metric] = None if values is None else pack(check(values, docs[task], f"{task} {metric}"))
    return out


class StoreConflict(Exception):
    """A write that the contract forbids: a record written twice, or an immutable field changed."""


class NotInTransaction(Exception):
    """A write outside `with store.transaction():`."""


class Store(abc.ABC):
    """A run's records: members, scores, crossovers and their CMA-ES candidates, mutations and their steps,
    survivors, events.

    Transactions
    - Every write happens inside `with store.transaction():`; a write outside one raises `NotInTransaction`.
    - A transaction commits all of its writes or none of them. An exception inside it, or a `kill -9` for a backend
      that persists, leaves the store as it was before the transaction began. The run makes each of its steps one
      transaction: a member with its mutation link, a CMA-ES ask (its candidates), one candidate's score, a tell,
      a mutation step, a generation's survivors with the retirements they cause.
    - Transactions do not nest. Reads inside a transaction see its writes; other readers see only committed ones.

    Immutable once written (writing it again raises `StoreConflict`)
    - a member: its id, name (unique), generation, operator, parents, params and recipe;
    - a score row, keyed by (subject, task, split, metric, limit, fewshot, estimator), with its per-document
      outcomes and, for an estimate, its standard error;
    - a split's anchor documents (one set per task), keyed by (split, limit, fewshot);
    - a crossover (unique per generation and slot) and its parents; a candidate (unique per crossover, iteration
      and index), its proposal and params; a candidate's score or failure, once either is set;
    - a mutation (unique per generation and slot), its parent and operator; a mutation step (unique per mutation
      and step);
    - the survivors of a generation;
    - events: append-only, in order.

    What may change
    - a member's state, only from ALIVE to RETIRED, INTERMEDIATE or FAILED (which drops its weights path);
    - a member's weights path (set when its weights are written or rebuilt, cleared when they are deleted);
    - a crossover's told iterations, one more at a time;
    - the child of a crossover or of a mutation: set once, from None.

    Ids are integers, unique per kind of record. The caller may give them (evomerge/ids.py derives them from what a
    record is, so that they do not depend on the order work finishes in); otherwise the next free one is taken.
    """

    kind: str = ""  # the registry name

    # ------------------------------------------------------------ lifecycle

    @classmethod
    @abc.abstractmethod
    def create(cls, location: Optional[Path], *, config: dict) -> "Store":
        """A new, empty store for a run whose configuration is `config` (kept as given)."""

    @classmethod
    @abc.abstractmethod
    def open(cls, location: Path) -> "Store":
        """An existing store; raises EvomergeError if there is none at `location` or it cannot be read."""

    @classmethod
    def exists(cls, location: Path) -> bool:
        """Whether `location` holds a store of this backend (False for backends that do not persist)."""
        return False

    def close(self) -> None:
        """Release the backend's resources; the store is not used afterwards."""

    def check(self) -> list[str]:
        """Verify the backend's own storage and make it complete on its own (a database file without a separate
        log to copy); the problems found, none if it is sound."""
        return []

    @abc.abstractmethod
    def transaction(self):
        """A context manager: everything written inside it commits together or not at all."""

    @abc.abstractmethod
    def config(self) -> dict:
        """The run's configuration, as given to `create`."""

    # ------------------------------------------------------------ members

    @abc.abstractmethod
    def add_member(self, *, name: str, generation: int, operator: str, parents: tuple[int, ...], params: dict,
                   recipe: str, weights: Optional[str], state: MemberState = MemberState.ALIVE,
                   id: Optional[int] = None) -> int:
        """Add a member; returns its id. A name or an id already used raises StoreConflict."""

    @abc.abstractmethod
    def retire(self, member_id: int, *, state: MemberState = MemberState.RETIRED) -> None:
        """An ALIVE member leaves the population (RETIRED), was a step of breeding (INTERMEDIATE) or failed."""

    @abc.abstractmethod
    def promote(self, member_id: int, weights: str) -> None:
        """An INTERMEDIATE merge whose mutant was rejected (`mutation.keep: better`) becomes the child: ALIVE, with
        `weights`. The only way back to ALIVE."""

    @abc.abstractmethod
    def set_weights(self, member_id: int, weights: Optional[str]) -> None:
        """Where the member's weights are now (None: nowhere)."""

    @abc.abstractmethod
    def member(self, key: int | str) -> Optional[MemberRecord]:
        """By id or by name."""

    @abc.abstractmethod
    def members(self, *, state: Optional[MemberState] = None) -> list[MemberRecord]:
        """By id."""

    # ------------------------------------------------------------ scores

    @abc.abstractmethod
    def add_scores(self, subject: str, *, split: str, limit: Optional[int], fewshot: int,
                   results: dict[str, dict[str, float]], docs: dict[str, int],
                   reused_from: Optional[str] = None, outcomes: Optional[Outcomes] = None,
                   estimator: str = "", se: Optional[dict[str, dict[str, float]]] = None) -> None:
        """results: task -> metric -> value; docs: task -> documents scored; outcomes: task -> metric -> each
        document's outcome, in split order (a metric without them has none; `packed_rows` checks them). An estimate
        (`estimator`, e.g. "anchors") has its values estimated for the whole split, its outcomes and `docs` are the
        documents it scored, and `se` (task -> metric -> standard error) its standard errors. Each row is written
        once, with its outcomes: an existing row raises StoreConflict."""

    @abc.abstractmethod
    def scores(self, subject: str, *, split: Optional[str] = None, limit: Optional[int] = None,
               fewshot: Optional[int] = None, any_limit: bool = False, estimator: str = "") -> list[ScoreRow]:
        """A subject's rows computed by `estimator` ("": on the documents they count), by task and metric; `limit`
        None means "all documents" unless `any_limit`."""

    @abc.abstractmethod
    def add_anchors(self, *, split: str, limit: Optional[int], fewshot: int, anchors: Sequence[AnchorSet]) -> None:
        """A split's anchor documents, one set per task, written once (again raises StoreConflict)."""

    @abc.abstractmethod
    def anchors(self, *, split: str, limit: Optional[int], fewshot: int) -> dict[str, AnchorSet]:
        """task -> its anchor set on the split; empty if none were chosen."""

    @abc.abstractmethod
    def all_scores(self) -> list[ScoreRow]:
        """Every row, by subject, task, split and metric."""

    # ------------------------------------------------------------ crossovers and their CMA-ES candidates

    @abc.abstractmethod
    def add_crossover(self, *, generation: int, slot: int, parents: tuple[int, ...], id: Optional[int] = None) -> int:
        ...

    @abc.abstractmethod
    def crossover(self, generation: int, slot: int) -> Optional[CrossoverRecord]: ...

    @abc.abstractmethod
    def crossovers(self) -> list[CrossoverRecord]:
        """By id."""

    @abc.abstractmethod
    def set_crossover_iteration(self, crossover_id: int, iteration: int) -> None:
        """A CMA-ES iteration was told: `iteration` is one more than the crossover's."""

    @abc.abstractmethod
    def set_crossover_child(self, crossover_id: int, child_id: int) -> None: ...

    @abc.abstractmethod
    def add_candidates(self, crossover_id: int, iteration: int, proposals: list[tuple[list[float], dict]],
                       ids: Optional[list[int]] = None) -> None:
        """One CMA-ES iteration's proposals (x, params), indexed 0.. in the order given (with these ids)."""

    @abc.abstractmethod
    def set_candidate_score(self, candidate_id: int, score: float) -> None: ...

    @abc.abstractmethod
    def set_candidate_failure(self, candidate_id: int, failure: str) -> None:
        """The candidate could not be scored, and why; it has no score."""

    @abc.abstractmethod
    def candidates(self, crossover_id: Optional[int] = None, *, iteration: Optional[int] = None
                   ) -> list[CandidateRecord]:
        """A crossover's candidates (every crossover's when None), by crossover, iteration and index."""

    # ------------------------------------------------------------ mutations and their steps

    @abc.abstractmethod
    def add_mutation(self, *, generation: int, slot: int, parent_id: int, operator: dict,
                     id: Optional[int] = None) -> int: ...

    @abc.abstractmethod
    def mutation(self, generation: int, slot: int) -> Optional[MutationRecord]: ...

    @abc.abstractmethod
    def mutations(self) -> list[MutationRecord]:
        """By id."""

    @abc.abstractmethod
    def set_mutation_child(self, mutation_id: int, child_id: int) -> None: ...

    @abc.abstractmethod
    def add_mutation_step(self, mutation_id: int, step: int, data: dict) -> None: ...

    @abc.abstractmethod
    def mutation_steps(self, mutation_id: int) -> list[MutationStep]:
        """By step."""

    # ------------------------------------------------------------ generations and events

    @abc.abstractmethod
    def set_survivors(self, generation: int, survivors: list[int]) -> None: ...

    @abc.abstractmethod
    def generations(self) -> dict[int, list[int]]:
        """generation -> its survivors, for every finished generation."""

    def survivors(self, generation: int) -> Optional[list[int]]:
        return self.generations().get(generation)

    @abc.abstractmethod
    def add_event(self, kind: str, **data: Any) -> None: ...

    @abc.abstractmethod
    def events(self, *, kind: Optional[str] = None, last: Optional[int] = None) -> list[tuple[float, str, dict]]:
        """(time, kind, data) in order; `last`: only the last N."""


class TransactionGuard:
    """The bookkeeping every backend shares: whether a transaction is open, refusing writes outside one, and the
    lock that lets the driver's threads share a store (a transaction holds it from begin to commit)."""

    def __init__(self) -> None:
        self.open = False
        self.lock = threading.RLock()

    @contextmanager
    def around(self, begin, commit, rollback) -> Iterator[None]:
        with self.lock:
            if self.open:
                raise NotInTransaction("transactions do not nest")
            begin()
            self.open = True
            try:
                yield
            except BaseException:
                self.open = False
                rollback()
                raise
            self.open = False
            commit()

    def check(self) -> None:
        if not self.open:
            raise NotInTransaction("a write outside `with store.transaction():`")


def serialised(cls: type) -> type:
    """Make every public method of a backend take its guard's lock: one thread at a time reads or writes, and no
    thread sees another's uncommitted transaction."""
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or name == "transaction" or not callable(fn) or isinstance(fn, (classmethod,
                                                                                               staticmethod)):
            continue

        def locked(self, *args, __fn=fn, **kwargs):
            with self._guard.lock:
                return __fn(self, *args, **kwargs)

        locked.__name__, locked.__doc__ = fn.__name__, fn.__doc__
        setattr(cls, name, locked)
    return cls
