"""DELLA (Deep et al., arXiv 2406.11617; mergekit `della`): drop task-vector entries with a probability that falls
with their magnitude's rank, from 1 − (density − epsilon) for the smallest to 1 − (density + epsilon) for the
largest, rescale the survivors, then TIES's sign consensus. mergekit requires density ± epsilon inside (0, 1), so
the genome keeps density below 1 and a candidate's epsilon is cut to fit its density (the recipe holds the value
merged). No fast kernel: mergekit merges every candidate."""
from __future__ import annotations

from evomerge.crossover.methods.base import DENSITY, WEIGHT, TaskVectorMethod

EPSILON = "epsilon"
MARGIN = 0.005  # how far inside (0, 1) density ± epsilon is kept


class Della(TaskVectorMethod):
    mergekit_method = "della"
    parameters = (WEIGHT, DENSITY, EPSILON)
    bounds = {**TaskVectorMethod.bounds, DENSITY: (0.05, 0.95), EPSILON: (0.0, 0.3)}
    start = {**TaskVectorMethod.start, EPSILON: 0.15}  # mergekit's default
    color = "#2E8B57"

    @classmethod
    def check_search(cls, search: tuple[str, ...]) -> None:
        super().check_search(search)
        if not {DENSITY, EPSILON} <= set(search):
            raise ValueError(f"{cls.name} needs `density` and `epsilon` in `search` (mergekit's defaults, density 1 and "
                             f"epsilon 0.15, leave density ± epsilon outside (0, 1)): search: [weight, density, epsilon]")

    @classmethod
    def feasible(cls, params: dict) -> dict:
        for values in params.values():  # check_search makes density and epsilon searched
            values[EPSILON] = [round(min(e, min(d, 1 - d) - MARGIN), 6) for e, d in zip(values[EPSILON], values[DENSITY])]
        return params
