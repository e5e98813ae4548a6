"""DARE, linear (Yu et al., arXiv 2311.03099; mergekit `dare_linear`): drop each task-vector entry with probability
1 − density, rescale the survivors to the task vector's L1 norm, and add the weighted task vectors to the base,
without TIES's sign consensus. No fast kernel: mergekit merges every candidate (its masks, from the run's seed)."""
from __future__ import annotations

from evomerge.crossover.methods.base import DENSITY, WEIGHT, TaskVectorMethod


class DareLinear(TaskVectorMethod):
    mergekit_method = "dare_linear"
    parameters = (WEIGHT, DENSITY)
    color = "#B5A642"
