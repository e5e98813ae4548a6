"""Model Breadcrumbs (Davari and Belilovsky, arXiv 2312.06795; mergekit `breadcrumbs`): from each task vector drop
the largest `gamma` share of entries (outliers) and then the smallest, keeping `density` of them; add the weighted
task vectors to the base. No fast kernel: mergekit merges every candidate."""
from __future__ import annotations

from evomerge.crossover.methods.base import DENSITY, WEIGHT, TaskVectorMethod

GAMMA = "gamma"


class Breadcrumbs(TaskVectorMethod):
    mergekit_method = "breadcrumbs"
    parameters = (WEIGHT, DENSITY, GAMMA)
    bounds = {**TaskVectorMethod.bounds, GAMMA: (0.0, 0.1)}
    start = {**TaskVectorMethod.start, GAMMA: 0.01}  # mergekit's default
    color = "#A0522D"
