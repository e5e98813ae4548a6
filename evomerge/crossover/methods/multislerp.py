"""Multi-SLERP (mergekit `multislerp`): barycentric interpolation of any number of parents on the hypersphere, one
weight per parent (normalised to sum to 1). No base. No fast kernel: mergekit merges every candidate."""
from __future__ import annotations

from evomerge.crossover.methods.base import WEIGHT, MergeMethod


class MultiSlerp(MergeMethod):
    mergekit_method = "multislerp"
    parameters = (WEIGHT,)
    min_parents = 2
    bounds = {WEIGHT: (0.05, 1.0)}  # a weighted sum of zero has no direction
    start = {WEIGHT: 0.5}
    color = "#9467BD"
