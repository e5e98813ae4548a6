"""NuSLERP (mergekit `nuslerp`): spherical interpolation of two parents, row by row or flattened, at
t = w₂ / (w₁ + w₂) from one weight per parent (so layer groups may lean either way). Exactly two parents, no base.
No fast kernel: mergekit merges every candidate."""
from __future__ import annotations

from evomerge.crossover.methods.base import WEIGHT, MergeMethod


class NuSlerp(MergeMethod):
    mergekit_method = "nuslerp"
    parameters = (WEIGHT,)
    min_parents = max_parents = 2
    bounds = {WEIGHT: (0.0, 1.0)}
    start = {WEIGHT: 0.5}
    color = "#D55E00"
