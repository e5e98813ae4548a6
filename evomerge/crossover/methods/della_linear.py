"""DELLA without sign consensus (mergekit `della_linear`): DELLA's magnitude-ranked drop and rescale, then the
weighted task vectors added to the base. No fast kernel: mergekit merges every candidate."""
from __future__ import annotations

from evomerge.crossover.methods.della import Della


class DellaLinear(Della):
    mergekit_method = "della_linear"
    color = "#66CDAA"
