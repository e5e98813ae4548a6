"""Karcher mean (mergekit `karcher`): the Riemannian barycentre of the parents' tensors on the sphere, found by
mergekit's fixed-point iteration. Nothing to search: one merge per crossover, by mergekit. No base; at least two
parents."""
from __future__ import annotations

from evomerge.crossover.methods.base import FixedMerge


class Karcher(FixedMerge):
    mergekit_method = "karcher"
    min_parents = 2
    color = "#7F7F7F"
