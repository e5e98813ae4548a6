"""Per-document outcomes and what they make possible: standard errors and paired comparisons.

Every score row keeps the outcome of each document it was computed on, in split order (outcome i is the i-th
document of the split): 1/0 for a metric that is a share of documents (`acc`, `acc_norm`, `exact_match`), a float
for a continuous one. They are packed once, with their row (`pack`): a bit per document for 0/1 values, float32
otherwise, a few kB per row.

Standard errors are over documents: a task's SE is √(Σ(xᵢ − x̄)²/n)/√n, which for a 0/1 metric is √(p(1−p)/n) (so
a proportion scored before outcomes were kept still has one); the weighted score's SE is that of the weighted mean
of independent tasks, √(Σ wₜ² SEₜ²)/Σ wₜ.

A paired comparison of A and B (`compare`) takes, per task, the document-by-document differences A − B on the
documents both were scored on, and draws `ITERATIONS` paired bootstrap resamples of them, each task resampled on its
own (stratified). The draws are fixed: `numpy.random.default_rng(SEED)`, then for each task in the pipeline's order
`rng.integers(0, n, size=(ITERATIONS, n))`. The 95% interval is the 2.5% and 97.5% quantiles (numpy's default,
linear) of the resampled means; the weighted difference is resampled as the task weights' mean of the tasks'.
"""
from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

PROPORTIONS = ("acc", "acc_norm", "exact_match")  # lm-eval metrics that are a share of the documents
ITERATIONS = 2000
SEED = 0
LEVEL = 0.95

_BITS, _FLOATS = b"B", b"F"


def pack(values: Sequence[float]) -> bytes:
    """A row's outcomes as bytes: b"B", the count, one bit each when every value is 0 or 1; else b"F", the count and
    float32 values."""
    a = np.asarray(values, dtype=np.float64).ravel()
    head = struct.pack("<I", a.size)
    if np.all((a == 0) | (a == 1)):
        return _BITS + head + np.packbits(a.astype(bool)).tobytes()
    return _FLOATS + head + a.astype("<f4").tobytes()


def unpack(blob: bytes) -> np.ndarray:
    """The outcomes `pack` packed, as float64."""
    kind, (n,) = blob[:1], struct.unpack("<I", blob[1:5])
    body = np.frombuffer(blob[5:], dtype=np.uint8 if kind == _BITS else "<f4")
    if kind == _BITS:
        return np.unpackbits(body, count=n).astype(np.float64)
    if kind == _FLOATS:
        return body.astype(np.float64)
    raise ValueError(f"not packed outcomes (kind {kind!r})")


def check(values: Sequence[float], docs: int, where: str) -> np.ndarray:
    """Outcomes as an array, refused unless there is one finite number per scored document."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size != docs:
        raise ValueError(f"{where}: {a.size} outcomes for {docs} documents")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: outcomes that are not finite numbers")
    return a


def task_se(value: Optional[float], docs: int, metric: str, outcomes: Optional[np.ndarray]) -> Optional[float]:
    """A task score's standard error over its documents: from its outcomes, or, for a proportion without them, from
    p and n; None where neither tells."""
    if value is None or docs <= 0:
        return None
    if outcomes is not None and outcomes.size:
        return float(outcomes.std() / math.sqrt(outcomes.size))
    if metric in PROPORTIONS and 0 <= value <= 1:
        return math.sqrt(value * (1 - value) / docs)
    return None


def weighted_se(ses: Iterable[Optional[float]], weights: Sequence[float]) -> Optional[float]:
    """The SE of the weighted mean of independent task scores: √(Σ wₜ² SEₜ²)/Σ wₜ (None if a task has none)."""
    ses = list(ses)
    if not ses or any(s is None for s in ses):
        return None
    return math.sqrt(sum(w * w * s * s for w, s in zip(weights, ses))) / sum(weights)


# ---------------------------------------------------------------- paired comparisons


@dataclass(frozen=True)
class Paired:
    """A − B on the documents both were scored on: the mean difference, its 95% interval, and the share of
    documents where A is better, B is better, or they are equal."""
    diff: float
    low: float
    high: float
    docs: int
    a_wins: float
    b_wins: float
    ties: float

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "A better"
        if self.high < 0:
            return "B better"
        return "within noise"


@functools.lru_cache(maxsize=16)
def _draws(sizes: tuple[int, ...], iterations: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, n, size=(iterations, n)) for n in sizes)


def draws(sizes: Sequence[int], *, iterations: int = ITERATIONS, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """The paired bootstrap's fixed resamples: for each task (in order), an iterations × n matrix of document
    indices. Every comparison on documents of the same sizes draws the same ones (drawn once per process)."""
    return _draws(tuple(int(n) for n in sizes), iterations, seed)


def resampled_means(d: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The mean of d over each resample (a row of document indices)."""
    return d[idx].mean(axis=1)


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], weights: dict[str, float], *,
           iterations: int = ITERATIONS, seed: int = SEED) -> tuple[dict[str, Paired], Paired]:
    """Per task and weighted, A − B over the documents both were scored on (each task's first min(nA, nB)
    documents): see the module docstring for the bootstrap. `a`, `b`: task -> outcomes; `weights`: task -> weight,
    in the pipeline's order."""
    tasks = list(weights)
    diffs = {}
    for t in tasks:
        n = min(a[t].size, b[t].size)
        diffs[t] = a[t][:n] - b[t][:n]
    sizes = [diffs[t].size for t in tasks]
    if not all(sizes):
        raise ValueError("a task has no document that both were scored on")
    per, boots = {}, {}
    for t, idx in zip(tasks, draws(sizes, iterations=iterations, seed=seed)):
        boots[t] = resampled_means(diffs[t], idx)
        per[t] = _summary(diffs[t], boots[t])
    total = sum(weights.values())
    weighted_boot = sum(weights[t] * boots[t] for t in tasks) / total
    d_all = np.concatenate([diffs[t] for t in tasks])
    point = sum(weights[t] * diffs[t].mean() for t in tasks) / total
    return per, _summary(d_all, weighted_boot, diff=point)


def _interval(boot: np.ndarray) -> tuple[float, float]:
    if np.all(boot == boot[0]):
        return float(boot[0]), float(boot[0])  # identical resamples: exactly that, zero width
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def _summary(d: np.ndarray, boot: np.ndarray, diff: Optional[float] = None) -> Paired:
    """The comparison of documents' differences d with their resampled means (`diff`: the weighted point, where d
    spans several tasks)."""
    lo, hi = _interval(boot)
    n = d.size
    return Paired(diff=float(d.mean() if diff is None else diff), low=lo, high=hi, docs=n,
                  a_wins=float((d > 0).sum() / n),
                  b_wins=float((d < 0).sum() / n), ties=float((d == 0).sum() / n))


def fmt_pm(value: Optional[float], se: Optional[float], digits: int = 4) -> str:
    """`0.7125 ±0.0512` (± one standard error); `0.7125` where there is no SE; `-` where there is no value."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + ("" if se is None else f" ±{se:.{min(digits, 3)}f}")
