"""CMA-ES over merge parameters (pycma, ask/tell), with state that survives a crash.

Each `ask` draws from numpy's generator seeded from (run seed, crossover, iteration), so a resumed crossover asks
exactly what an uninterrupted one would; the strategy is pickled after every ask and every tell.
"""
from __future__ import annotations

import pickle

import numpy as np

from evomerge.crossover.genome import Genome


def new_strategy(genome: Genome, *, sigma0: float, popsize: int, seed: int) -> bytes:
    import cma

    lower, upper = genome.bounds()
    es = cma.CMAEvolutionStrategy(genome.x0(), sigma0, {
        "bounds": [lower, upper], "popsize": popsize, "seed": seed + 1,  # pycma treats seed 0 as "random"
        "verbose": -9, "verb_log": 0, "verb_disp": 0, "CMA_diagonal": False,
    })
    return pickle.dumps(es)


def ask(state: bytes, *, seed: int) -> tuple[list[list[float]], bytes]:
    """Proposals for one iteration, and the strategy's state after the ask."""
    es = pickle.loads(state)
    rng_state = np.random.get_state()
    np.random.seed(seed % 2**32)  # pycma samples with numpy's global generator
    try:
        xs = [list(map(float, x)) for x in es.ask()]
    finally:
        np.random.set_state(rng_state)
    return xs, pickle.dumps(es)


def tell(state: bytes, xs: list[list[float]], fitness: list[float]) -> bytes:
    """Update with the proposals' fitness (higher is better; pycma minimises, so it is told the negation)."""
    es = pickle.loads(state)
    es.tell([np.asarray(x) for x in xs], [-f for f in fitness])
    return pickle.dumps(es)


def sigma(state: bytes) -> float:
    return float(pickle.loads(state).sigma)
