"""Record ids as functions of what the records are, not of when they were written: a member is (generation, slot,
stage), a crossover or a mutation (generation, slot), a candidate (generation, slot, iteration, index). So a run
whose work finishes in another order (several workers, children bred at once) writes the same ids, and an id's
order is the order of birth (older members first), which is what selection breaks ties with.

Seeds are 1..S in population order and every child has two member ids (its crossover's product, then its mutant;
a child without one of them leaves a gap). Crossover and candidate ids are the ones one process breeding child
after child writes, as the first release did, so resumed first-release runs keep theirs.
"""
from __future__ import annotations

from evomerge.config import Loaded

CROSSOVER, MUTANT = 0, 1  # the stages of a child: its crossover's product, then the mutant of that product


def _ordinal(loaded: Loaded, generation: int, slot: int) -> int:
    """0 for the first child of generation 1, counting children generation by generation."""
    return (generation - 1) * loaded.pipeline.children_per_generation + slot


def seed(index: int) -> int:
    """The member id of the population file's `index`-th member."""
    return index + 1


def member(loaded: Loaded, generation: int, slot: int, stage: int) -> int:
    """The member id of child `slot` of `generation` at `stage` (CROSSOVER or MUTANT); some ids stay unused."""
    return len(loaded.population.members) + 2 * _ordinal(loaded, generation, slot) + stage + 1


def child(loaded: Loaded, generation: int, slot: int) -> int:
    """The id of the crossover record, and of the mutation record, of child `slot` of `generation`."""
    return _ordinal(loaded, generation, slot) + 1


def candidates(loaded: Loaded, generation: int, slot: int, iteration: int) -> list[int]:
    """The ids of one CMA-ES iteration's proposals, in index order."""
    cma = loaded.pipeline.crossover.cma
    first = (_ordinal(loaded, generation, slot) * max(1, cma.budget // cma.popsize) + iteration) * cma.popsize + 1
    return list(range(first, first + cma.popsize))
