"""The frozen records a run's store holds: members, scores, crossovers with their CMA-ES candidates, mutations
with their steps. Every backend (evomerge/store/) reads and writes exactly these; live objects (a CMA-ES search, a
model being mutated) hold working state and hand the store only these records.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


class MemberState(str, enum.Enum):
    ALIVE = "alive"                # in the current population, weights on disk
    RETIRED = "retired"            # left the population: recipe and scores kept, weights deleted
    INTERMEDIATE = "intermediate"  # a merge that was mutated at once: a step of breeding, never in the population
    FAILED = "failed"              # non-finite weights or outputs: recipe kept, never scored, never selected


@dataclass(frozen=True)
class MemberRecord:
    id: int
    name: str
    generation: int
    operator: str                  # seed, a merge method, or a mutation operator (registry names)
    parents: tuple[int, ...]       # member ids
    params: dict                   # the operator's parameters (merge weights, LoRA settings, ES settings)
    recipe: str                    # how to rebuild it: mergekit YAML for merges, JSON otherwise
    state: MemberState
    weights: Optional[str]         # model directory: relative to the run directory when inside it; None if none
    created: float


@dataclass(frozen=True)
class ScoreRow:
    subject: str                   # member:<id> or candidate:<id>
    task: str
    split: str
    metric: str
    limit: Optional[int]           # document limit; None for all
    fewshot: int
    value: float
    docs: int
    reused_from: Optional[str]     # a crossover child's select scores are its best candidate's
    packed: Optional[bytes] = None  # each document's outcome, in split order (evomerge/outcomes.py); None for
                                    # scores written before outcomes were kept, or by a function that gives none
    estimator: str = ""            # "": computed on the documents it counts; else the estimator (a registry name,
                                   # e.g. anchors) whose estimate of the whole split's score `value` is; its outcomes
                                   # are then those of the documents scored (the anchors, in split order)
    se: Optional[float] = None     # an estimate's standard error (the estimator's); None: from the outcomes

    def outcomes(self):
        """The per-document outcomes as a float64 array, or None."""
        if self.packed is None:
            return None
        from evomerge.outcomes import unpack

        return unpack(self.packed)


@dataclass(frozen=True)
class AnchorSet:
    """One task's anchor documents on a split (evomerge/fitness/anchors.py): chosen once from the seeds'
    per-document outcomes; every later score on the split is estimated from them."""
    task: str
    docs: tuple[int, ...]          # the anchor documents, as indices into the split, increasing
    strata: tuple[int, ...]        # every document's stratum, in split order (one entry per document)

    def weights(self) -> tuple[float, ...]:
        """How many of the split's documents each anchor stands for: its stratum's size over the stratum's
        anchors (they add up to the split's documents)."""
        from collections import Counter

        size, drawn = Counter(self.strata), Counter(self.strata[d] for d in self.docs)
        return tuple(size[self.strata[d]] / drawn[self.strata[d]] for d in self.docs)


@dataclass(frozen=True)
class CrossoverRecord:
    """One child's CMA-ES search over merges of its parents. The search's state is its told candidates."""
    id: int
    generation: int
    slot: int                      # the child's position in its generation
    parents: tuple[int, ...]
    iteration: int                 # CMA-ES iterations told
    child_id: Optional[int]


@dataclass(frozen=True)
class CandidateRecord:
    id: int
    crossover_id: int
    iteration: int
    idx: int                       # position in its CMA-ES iteration
    x: tuple[float, ...]           # the CMA-ES proposal
    params: dict                   # the merge parameters it stands for
    score: Optional[float]         # weighted select score; None until evaluated, or if it failed
    failure: Optional[str] = None  # why it could not be scored (non-finite weights or log-likelihoods)

    @property
    def done(self) -> bool:
        return self.score is not None or self.failure is not None


@dataclass(frozen=True)
class MutationRecord:
    id: int
    generation: int
    slot: int
    parent_id: int
    operator: dict                 # the operator's settings, as configured (its `kind` names it)
    child_id: Optional[int]


@dataclass(frozen=True)
class MutationStep:
    """One committed step of a mutation (an ES iteration's seeds and coefficients): what resume replays."""
    mutation_id: int
    step: int
    data: dict


def member_subject(member_id: int) -> str:
    return f"member:{member_id}"


def candidate_subject(candidate_id: int) -> str:
    return f"candidate:{candidate_id}"


def by_task(rows: list[ScoreRow]) -> dict[str, dict[str, float]]:
    """Score rows as task -> metric -> value (what lm-eval calls results)."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        out.setdefault(r.task, {})[r.metric] = r.value
    return out
