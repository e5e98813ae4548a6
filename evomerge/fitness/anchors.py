"""Anchor documents: a select score estimated from a few documents per task (tinyBenchmarks, Polo et al. 2024,
arXiv 2402.14992; MERGE³, Mencattini et al. 2025, arXiv 2502.10436).

    fitness:
      select: {split: select, estimator: {kind: anchors, n: 30}}   # 30 anchor documents per task

Once every seed is scored on every select document, each task's documents are clustered by how the seeds did on
them (each document is the vector of the seeds' per-document outcomes on every metric that has them, e.g. acc and
acc_norm of each seed), with scikit-learn's k-means (`STRATA_PER_ANCHOR` anchors per cluster on average, the
clusters as strata), and `n` anchors are drawn from the strata without replacement: each stratum gets its share of
`n` (largest remainders, at least `MIN_PER_STRATUM` where it has them), its documents drawn uniformly by a
generator keyed by the run's seed and the task. The share is by size (`allocation: proportional`, the default)
or, with `allocation: neyman`, by size times the spread a model is expected to have there (Neyman allocation,
Cochran eq. 5.26: n_h ∝ N_h S_h), S_h = √(p_h(1 − p_h)) with p_h the stratum's mean seed outcome, as if a merge
got each of its documents right as often as the seeds do: a stratum every seed gets right (or wrong) gets its floor
only, the documents the seeds disagree on, where candidates differ, get the rest. Documents the seeds found alike
land in one stratum, so a stratum is a kind of document (all seeds right, only the arithmetic specialist right,
...) and a merge of the seeds behaves alike on most of it.

A later model (a CMA-ES candidate, a mutant) is scored on the anchors only, and its score on the whole split is the
stratified estimate (Cochran, Sampling Techniques, 3rd ed., eq. 5.1 and 5.6):

    ŷ = Σ_h W_h ȳ_h,    SE² = Σ_h W_h² (1 − n_h/N_h) s_h² / n_h

with W_h = N_h/N a stratum's share of the split's N documents, ȳ_h and s_h² the mean and variance (ddof 1) of its
n_h anchors' outcomes (a stratum with one anchor, which only happens when there are more strata than anchors can
cover twice, takes the variance of all the task's anchors). On the showcase's candidates (benchmarks/anchors.py)
this SE is calibrated: over 40 draws of anchors, 96% of the 95% intervals held the score on every document, and the
errors over their SEs had a standard deviation of 0.95; a stratum whose anchors all agree (all seeds right, say)
does hold documents a merge gets alike, so s_h² = 0 there is no overconfidence. The anchors are chosen once and
stored (`Store.add_anchors`); every estimate is stored with its standard error (estimator "anchors"), so a resumed
run decides on the same numbers. Seeds keep their scores on every document.
"""
from __future__ import annotations

import math
import zlib
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from evomerge.config import KindSettings
from evomerge.records import AnchorSet

STRATA_PER_ANCHOR = 1 / 3   # clusters per anchor: about three anchors to a stratum, so each has a variance
MIN_PER_STRATUM = 2         # anchors a stratum gets at least (where it has that many documents)


class Anchors:
    """The anchors estimator: its settings, how it chooses a task's anchors, and how it estimates a score."""

    name: ClassVar[str] = "anchors"

    class Settings(KindSettings):
        n: int = Field(ge=2, description="anchor documents per task (at most the split's documents)")
        allocation: Literal["proportional", "neyman"] = Field(
            "proportional", description="anchors per stratum: by its size, or by its size times the seeds' spread")

    def __init__(self, settings: "Anchors.Settings") -> None:
        self.settings = settings

    # ------------------------------------------------------------ choosing

    def choose(self, task: str, features: np.ndarray, *, seed: int) -> AnchorSet:
        """The anchors of a task from its documents' features (documents x features: the seeds' outcomes)."""
        from sklearn.cluster import KMeans

        features = np.asarray(features, dtype=np.float64)
        size = features.shape[0]
        n = min(self.settings.n, size)
        distinct = np.unique(features, axis=0).shape[0]
        k = max(1, min(distinct, round(n * STRATA_PER_ANCHOR)))
        key = [seed, zlib.crc32(task.encode())]
        if k == 1:
            strata = np.zeros(size, dtype=int)
        else:
            strata = KMeans(n_clusters=k, n_init=10, random_state=np.random.SeedSequence(key).generate_state(1)[0]
                            ).fit_predict(features)
            strata = _renumbered(strata)
        rng = np.random.default_rng(key)
        docs = []
        sizes = np.bincount(strata)
        weight = sizes.astype(np.float64)
        if self.settings.allocation == "neyman":
            p = np.asarray([features[strata == h].mean() for h in range(sizes.size)])
            spread = sizes * np.sqrt(p * (1 - p))
            weight = spread if spread.sum() > 0 else weight  # every seed alike everywhere: by size
        for h, count in enumerate(_allocation(sizes, n, weight)):
            members = np.flatnonzero(strata == h)
            docs += rng.choice(members, size=count, replace=False).tolist()
        return AnchorSet(task=task, docs=tuple(sorted(int(d) for d in docs)), strata=tuple(int(h) for h in strata))

    # ------------------------------------------------------------ estimating

    def estimate(self, anchors: AnchorSet, outcomes: np.ndarray) -> tuple[float, float]:
        """The whole split's score and its standard error from the anchors' outcomes (in anchor order)."""
        return stratified(anchors, outcomes)


def stratified(anchors: AnchorSet, outcomes: np.ndarray) -> tuple[float, float]:
    """Cochran's stratified mean and its standard error (see the module docstring)."""
    y = np.asarray(outcomes, dtype=np.float64)
    if y.size != len(anchors.docs):
        raise ValueError(f"{anchors.task}: {y.size} outcomes for {len(anchors.docs)} anchors")
    strata = np.asarray(anchors.strata)
    drawn = strata[list(anchors.docs)]
    total = strata.size
    pooled = float(y.var(ddof=1)) if y.size > 1 else 0.0  # for a stratum with a single anchor
    value = var = 0.0
    for h in np.unique(strata):
        size = int((strata == h).sum())
        ys = y[drawn == h]
        w = size / total
        value += w * float(ys.mean())
        if ys.size < size:
            var += w * w * (1 - ys.size / size) * (float(ys.var(ddof=1)) if ys.size > 1 else pooled) / ys.size
    return value, math.sqrt(var)


def _allocation(sizes: np.ndarray, n: int, weight: np.ndarray) -> list[int]:
    """Anchors per stratum: n shared in proportion to `weight` (largest remainders), at least MIN_PER_STRATUM where
    a stratum has that many documents, never more than it has."""
    floor = np.minimum(sizes, MIN_PER_STRATUM)
    if floor.sum() >= n:  # more strata than anchors allow: the largest strata first
        out = np.zeros_like(sizes)
        for h in np.argsort(-sizes, kind="stable"):
            take = min(floor[h], n - out.sum())
            out[h] = take
        return out.tolist()
    share = weight / weight.sum() * n
    out = np.minimum(sizes, np.maximum(floor, np.floor(share).astype(int)))  # neyman's share can exceed a stratum
    while out.sum() > n:  # the floors took more than their share: give back where the share is most exceeded
        over = np.where(out > floor, out - share, -np.inf)
        out[int(np.argmax(over))] -= 1
    while out.sum() < n:
        room = np.where(out < sizes, share - out, -np.inf)
        out[int(np.argmax(room))] += 1
    return out.tolist()


def _renumbered(labels: np.ndarray) -> np.ndarray:
    """Cluster labels numbered by their first document, so that the numbering does not depend on k-means's."""
    order = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.asarray([order[label] for label in labels.tolist()], dtype=int)


def features(rows: list[dict[str, Optional[np.ndarray]]], size: int) -> np.ndarray:
    """A task's documents x features matrix: each seed's outcomes on each metric that has them on every document
    (`rows`: per seed, metric -> outcomes)."""
    columns = [np.asarray(v, dtype=np.float64) for seed in rows for _, v in sorted(seed.items())
               if v is not None and len(v) == size]
    if not columns:
        raise ValueError("no seed has per-document outcomes on every document")
    return np.stack(columns, axis=1)
