"""Racing the CMA-ES candidates of a crossover: score a candidate on the first part of the select documents, then
more, and stop once it cannot win (successive halving with confidence bounds, as in F-Race and MERGE³'s subset
fitness estimates).

With `crossover.racing: {schedule: [0.25, 0.5, 1.0], confidence: 0.95}`, each candidate is scored on the first 25%
of every task's select documents, then 50%, then all of them. After each rung short of the last it is compared with
the best candidate of the crossover scored on every document so far, the *reference*: if the candidate's upper
confidence bound is below the reference's lower bound, it stops there. CMA-ES is told the stopped candidate's
estimate (its weighted score on the documents it was scored on), the store keeps every rung's scores with their
document counts, and only a candidate scored on every document can become the child. Every decision is a function
of stored scores, made in candidate order, so a resumed crossover makes the same ones and one or N workers race
alike.

`bound: paired` (the default) compares the candidate with the reference document by document: on the first n
documents of every task that the candidate has been scored on, the differences candidate − reference of each
document's outcome, their weighted mean D = Σ wₜ mean(dₜ)/Σ wₜ and its standard error
S = √(Σ wₜ² varₜ/nₜ)/Σ wₜ (varₜ the differences' sample variance). The candidate stops when D + z·S < 0, z the
one-sided normal quantile at `confidence`: it is worse than the reference beyond noise. Candidates of one
crossover are merges of the same parents and agree on most documents, so the differences vary far less than two
independent accuracies do, and a paired bound is much tighter. Without per-document outcomes (scores of a run
that kept none) it never stops a candidate.

`bound: wilson` or `hoeffding` compare independent bounds, per task, on the configured metric read as a
proportion of the documents scored (accuracy and exact-match metrics of lm-eval tasks, values in [0, 1]): Wilson's
score interval or Hoeffding's, one-sided at `confidence`; the weighted bound is the task weights' mean of the
per-task bounds; the candidate stops when its upper bound is below the reference's lower bound. A task whose metric
is not a proportion (a Python fitness function's, or a value outside [0, 1]) has no bound, so a crossover with one
never stops a candidate early.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Optional

import numpy as np

from evomerge.config import FitnessSpec, RacingSpec
from evomerge.outcomes import PROPORTIONS


@dataclass(frozen=True)
class Estimate:
    """A candidate's weighted score on some documents and its confidence bounds."""
    value: Optional[float]
    low: float
    high: float


def rung_limits(spec: RacingSpec, limit: int) -> list[int]:
    """The document limit of each rung (the last is the select limit itself), without repeats."""
    out: list[int] = []
    for fraction in spec.schedule:
        n = max(1, min(limit, math.ceil(fraction * limit - 1e-9)))
        if not out or n > out[-1]:
            out.append(n)
    if out[-1] != limit:
        out.append(limit)
    return out


def window(fitness: FitnessSpec, start: int, stop: int) -> dict[str, tuple[int, ...]]:
    """Documents start..stop-1 of every task: the slice a rung adds."""
    return {t.task: tuple(range(start, stop)) for t in fitness.tasks}


def _bounds(p: float, n: int, spec: RacingSpec) -> tuple[float, float]:
    if spec.bound == "hoeffding":
        half = math.sqrt(math.log(1 / (1 - spec.confidence)) / (2 * n))
        return max(0.0, p - half), min(1.0, p + half)
    z = NormalDist().inv_cdf(spec.confidence)  # Wilson's score interval, one side at `confidence`
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(results: dict, docs: dict, fitness: FitnessSpec, spec: RacingSpec) -> Estimate:
    """The weighted score of `results` (task -> metric -> value, on `docs` documents per task) with its bounds
    (unbounded where a task's metric is not a proportion of documents)."""
    value = fitness.weighted(results)
    if value is None:
        return Estimate(None, -math.inf, math.inf)
    proportions = proportion_tasks(fitness)
    low = high = 0.0
    for t in fitness.tasks:
        p, n = results[t.task][t.metric], docs.get(t.task, 0)
        if t.task not in proportions or not 0 <= p <= 1 or n <= 0:
            return Estimate(value, -math.inf, math.inf)
        lo, hi = _bounds(p, n, spec)
        low, high = low + t.weight * lo, high + t.weight * hi
    total = sum(t.weight for t in fitness.tasks)
    return Estimate(value, low / total, high / total)


def proportion_tasks(fitness: FitnessSpec) -> set[str]:
    """The tasks whose configured metric is a proportion of documents: lm-eval tasks scored by a PROPORTIONS metric."""
    return {t.task for t in fitness.tasks if t.python is None and t.metric in PROPORTIONS}


def _count(value: float, n: int) -> float:
    """value·n, snapped to the whole number it is for a proportion of n documents."""
    total = value * n
    return float(round(total)) if abs(total - round(total)) < 1e-6 else total


def combine(previous: Optional["Rung"], results: dict, docs: dict, outcomes: dict) -> tuple[dict, dict, dict]:
    """The scores on the first documents of every task from the previous rung's scores and the next slice's: each
    metric the document-weighted mean of the two (for a share of documents, exactly what scoring them at once
    gives: whole counts over the whole number), and its outcomes the previous rung's followed by the slice's."""
    if previous is None:
        return results, docs, outcomes
    out, counts, joined = {}, {}, {}
    for task, metrics in results.items():
        n0, n1 = previous.docs.get(task, 0), docs.get(task, 0)
        counts[task] = n0 + n1
        out[task] = {m: (_count(previous.results[task][m], n0) + _count(v, n1)) / max(1, n0 + n1)
                     for m, v in metrics.items()}
        before, now = previous.outcomes.get(task, {}), outcomes.get(task, {})
        joined[task] = {m: [*before[m], *now[m]] for m in metrics if m in before and m in now}
    return out, counts, joined


@dataclass(frozen=True)
class Rung:
    """A candidate's scores on the first `n` documents of every task: task -> metric -> value, task -> documents,
    task -> metric -> outcomes (those it has)."""
    results: dict
    docs: dict
    n: int
    outcomes: dict


def chosen_outcomes(outcomes: dict, fitness: FitnessSpec) -> Optional[dict[str, np.ndarray]]:
    """task -> the configured metric's outcomes, or None unless every task has them."""
    try:
        return {t.task: np.asarray(outcomes[t.task][t.metric], dtype=np.float64) for t in fitness.tasks}
    except KeyError:
        return None


def paired_high(candidate: Optional[dict], reference: Optional[dict], fitness: FitnessSpec, spec: RacingSpec
                ) -> tuple[Optional[float], Optional[float]]:
    """(D, D + z·S): the weighted mean paired difference candidate − reference on the candidate's documents and its
    one-sided upper bound (see the module docstring); (None, None) without outcomes on both sides."""
    if candidate is None or reference is None:
        return None, None
    total = sum(t.weight for t in fitness.tasks)
    mean = var = 0.0
    for t in fitness.tasks:
        n = candidate[t.task].size
        if n < 2 or reference[t.task].size < n:
            return None, None
        d = candidate[t.task] - reference[t.task][:n]
        mean += t.weight * float(d.mean()) / total
        var += (t.weight / total) ** 2 * float(d.var(ddof=1)) / n
    return mean, mean + NormalDist().inv_cdf(spec.confidence) * math.sqrt(var)


def beaten(candidate: Estimate, reference: Optional[Estimate]) -> bool:
    """Whether a partly scored candidate cannot win: its upper bound is below the reference's lower bound."""
    return reference is not None and candidate.high < reference.low
