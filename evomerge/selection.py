"""Parent selection (tournament of k, uniform) and survivor selection (elitist), deterministic given a seed."""
from __future__ import annotations

import numpy as np

from evomerge.config import Tournament, Uniform


def rng_for(*keys: int) -> np.random.Generator:
    """A generator that depends only on its keys (run seed, generation, slot...): resumes draw what runs drew."""
    return np.random.default_rng([int(k) for k in keys])


def select_parents(population: list[int], fitness: dict[int, float], *, n: int, how: Tournament | Uniform,
                   rng: np.random.Generator) -> list[int]:
    """n distinct parents from `population` (member ids)."""
    pool = sorted(population)
    chosen: list[int] = []
    for _ in range(n):
        if isinstance(how, Uniform):
            pick = pool[int(rng.integers(len(pool)))]
        else:
            entrants = rng.choice(len(pool), size=min(how.k, len(pool)), replace=False)
            pick = max((pool[i] for i in entrants), key=lambda m: (fitness[m], -m))
        chosen.append(pick)
        pool.remove(pick)
    return chosen


def survivors(candidates: list[int], fitness: dict[int, float], *, size: int) -> list[int]:
    """The best `size` by fitness; ties go to the older member (lower id)."""
    return sorted(candidates, key=lambda m: (-fitness[m], m))[:size]
