"""Model Stock (Jang et al., arXiv 2403.19522; mergekit `model_stock`): the parents' average pulled toward the base
by a ratio computed per tensor from the angle between their task vectors. Nothing to search: one merge per
crossover, by mergekit. Needs the population's base and at least two parents other than the base."""
from __future__ import annotations

from evomerge.crossover.methods.base import FixedMerge


class ModelStock(FixedMerge):
    mergekit_method = "model_stock"
    uses_base = True
    base_apart = True   # mergekit needs the base and two other models: the base is never drawn as a parent
    min_parents = 2
    color = "#8C564B"
