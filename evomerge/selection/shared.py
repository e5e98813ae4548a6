"""Survivor selection by resource competition (M2N2: Abrantes, Lange and Tang, "Competition and Attraction Improve
Model Fusion", GECCO 2025, arXiv 2508.16204, section 3.2). Every select document is a resource shared by the
members that solve it: a member's shared fitness is

    f_i = sum_j c_j * s_ij / (sum_k s_kj)^alpha

over the documents j of every task, where s_ij is member i's per-document outcome (evomerge/outcomes.py) and
c_j = w_t / (sum_t w_t * n_t) spreads each task's weight over its n_t documents, so that a lone member's shared
fitness is its weighted score. Where the select split is estimated from anchors, the documents are the anchors and
each carries the share of its task's documents it stands for (its stratum's size over the stratum's anchors). A member that alone solves what the others cannot is worth keeping; one of several
near-copies shares its documents with the others.

As in M2N2's archive update (which drops the worst member each time a child arrives), the members with the lowest
shared fitness are dropped one at a time, recomputing the others' after each, until `size` remain; ties drop the
newer member. Members without per-document outcomes (scores from before they were kept) cannot share: the whole
selection then falls back to the weighted score (elitist), with a warning.
"""
from __future__ import annotations

import logging
import math
from typing import ClassVar, Optional

import numpy as np
from pydantic import Field

from evomerge.config import KindSettings
from evomerge.scores import Scores
from evomerge.selection.base import SurvivorSelector, sort_key

log = logging.getLogger(__name__)


def outcome_matrix(members: list[int], scores: dict[int, Scores]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(s, c): the members' per-document outcomes over every task's documents side by side (members x documents)
    and each document's capacity c_j; None, with the reason logged, when they cannot be put side by side (a member
    without outcomes, different document counts, a negative outcome)."""
    if not members:
        return None
    first = scores[members[0]]
    missing = [m for m in members if not scores[m].paired]
    if missing:
        log.warning("shared fitness: members %s have no per-document outcomes (scored before evomerge kept them); "
                    "falling back to the weighted score", ", ".join(map(str, missing)))
        return None
    tasks = list(first.outcomes)
    sizes = {t: len(first.outcomes[t]) for t in tasks}
    if any(len(scores[m].outcomes[t]) != sizes[t] for m in members for t in tasks):
        log.warning("shared fitness: members were scored on different documents; falling back to the weighted score")
        return None
    s = np.stack([np.concatenate([np.asarray(scores[m].outcomes[t], dtype=np.float64) for t in tasks])
                  for m in members])
    if (s < 0).any() or not np.isfinite(s).all():
        log.warning("shared fitness needs non-negative per-document outcomes (a document is a resource a member "
                    "solves to a degree); falling back to the weighted score")
        return None
    weights = first.weights or {t: 1.0 for t in tasks}
    total = sum(weights[t] for t in tasks)
    c = np.concatenate([np.full(sizes[t], weights[t] / (total * sizes[t])) if t not in first.doc_weights
                        else weights[t] / total * first.doc_weights[t] / first.doc_weights[t].sum()
                        for t in tasks])  # an anchor stands for its stratum's documents
    return s, c


def shares(s: np.ndarray, c: np.ndarray, alpha: float) -> np.ndarray:
    """M2N2's fitness matrix: c_j * s_ij / (sum_k s_kj)^alpha, with 0 for a document nobody solves."""
    z = s.sum(axis=0)
    z = np.where(z > 0, z, 1.0) ** alpha
    return s * (c / z)[None, :]


def shared_fitness(members: list[int], scores: dict[int, Scores], *, alpha: float = 1.0) -> Optional[dict[int, float]]:
    """Each member's shared fitness among `members`; None when they have no outcomes to share (see outcome_matrix)."""
    matrix = outcome_matrix(members, scores)
    if matrix is None:
        return None
    return dict(zip(members, shares(*matrix, alpha).sum(axis=1).tolist()))


def uses_shared_fitness(pipeline) -> bool:
    """Whether a pipeline's parent or survivor selector ranks by shared fitness (then tables show it)."""
    from evomerge.registry import PARENT_SELECTORS, SURVIVOR_SELECTORS

    return (PARENT_SELECTORS.get(pipeline.parent_selection.kind).shows_shared_fitness
            or SURVIVOR_SELECTORS.get(pipeline.survivor_selection.kind).shows_shared_fitness)


class Shared(SurvivorSelector):
    shows_shared_fitness: ClassVar[bool] = True

    class Settings(KindSettings):
        alpha: float = Field(1.0, ge=0, allow_inf_nan=False,
                             description="strength of the competition: 0 = no sharing (the weighted score), "
                                         "1 = M2N2's default")

    def select(self, candidates: list[int], scores: dict[int, Scores], *, size: int) -> list[int]:
        ranked = [m for m in candidates if math.isfinite(sort_key(scores[m]))]
        unranked = sorted(m for m in candidates if m not in ranked)
        matrix = outcome_matrix(ranked, scores)
        if matrix is None:
            return sorted(candidates, key=lambda m: (-sort_key(scores[m]), m))[:size]
        s, c = matrix
        alive = list(range(len(ranked)))
        while len(alive) > size:
            fitness = shares(s[alive], c, self.settings.alpha).sum(axis=1)
            worst = min(range(len(alive)), key=lambda i: (fitness[i], -ranked[alive[i]]))  # ties: the newer goes
            del alive[worst]
        kept = [ranked[i] for i in alive]
        fitness = dict(zip(kept, shares(s[alive], c, self.settings.alpha).sum(axis=1).tolist()))
        kept.sort(key=lambda m: (-fitness[m], m))
        return (kept + unranked)[:size]
