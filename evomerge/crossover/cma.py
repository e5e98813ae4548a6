"""CMA-ES over merge parameters (pycma, Hansen's (μ/μ_w, λ)-CMA-ES), as an object with `ask` and `tell`.

    search = CmaSearch(genome, spec.cma, seed=run_seed, generation=g, slot=s)
    search.replay(told)           # the iterations the store holds: (proposals, scores) each
    xs = search.ask()             # the next iteration's proposals
    search.tell(xs, scores)       # higher is better

Its random numbers come from a private generator seeded by (run seed, generation, slot), never numpy's global one,
so a search does not depend on what else ran in the process, or in which order. Its state lives in the store as
the told candidates: `replay` repeats their asks and tells in this process, which gives pycma's exact state (its
archive of proposals is keyed by hashes that change between processes, so a pickled strategy resumed elsewhere
would update differently), and nothing is ever unpickled. A genome with nothing to search (model_stock, karcher)
has one proposal, the empty vector, and no strategy.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from evomerge.config import CmaSpec
from evomerge.crossover.genome import Genome
from evomerge.errors import EvomergeError


class _Randn:
    """pycma's `randn` option: standard normals from a private RandomState (the stream of numpy's legacy
    `np.random.seed(s); np.random.randn(...)`, which is what the first release drew)."""

    def __init__(self, seed: int) -> None:
        self._state = np.random.RandomState(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self._state.randn(*shape)


def stream_seed(seed: int, generation: int, slot: int) -> int:
    """The seed of one crossover's CMA-ES stream (the first release's formula, reduced to numpy's seed range)."""
    return (seed * 100_003 + generation * 1009 + slot + 1) % 2**32


class CmaSearch:
    def __init__(self, genome: Genome, spec: CmaSpec, *, seed: int, generation: int, slot: int) -> None:
        import cma

        lower, upper = genome.bounds()
        self.spec = spec
        self.iteration = 0  # tells done
        self._strategy = None if genome.dim() == 0 else cma.CMAEvolutionStrategy(genome.x0(), spec.sigma0, {
            "bounds": [lower, upper], "popsize": spec.popsize, "randn": _Randn(stream_seed(seed, generation, slot)),
            "verbose": -9, "verb_log": 0, "verb_disp": 0, "CMA_diagonal": False,
        })
        self._asked: Optional[list[list[float]]] = None

    @property
    def popsize(self) -> int:
        """Proposals per iteration (one where there is nothing to search)."""
        return self.spec.popsize if self._strategy is not None else 1

    @property
    def iterations(self) -> int:
        """Iterations in the whole search: the budget in whole iterations of popsize proposals."""
        return max(1, self.spec.budget // self.spec.popsize) if self._strategy is not None else 1

    @property
    def done(self) -> bool:
        return self.iteration >= self.iterations

    @property
    def sigma(self) -> Optional[float]:
        return float(self._strategy.sigma) if self._strategy is not None else None

    def ask(self) -> list[list[float]]:
        """The proposals of the next iteration (asking again before a tell returns the same ones)."""
        if self._asked is None:
            self._asked = [list(map(float, x)) for x in self._strategy.ask()] if self._strategy is not None else [[]]
        return [list(x) for x in self._asked]

    def tell(self, xs: list[list[float]], scores: list[Optional[float]]) -> None:
        """The asked proposals' scores, higher is better (pycma minimises: it is told the negation). A proposal
        that could not be scored (None, or not finite) is told the worst score there is."""
        if self._asked is None or [list(map(float, x)) for x in xs] != self._asked:
            raise ValueError("tell() takes the proposals of the last ask(), in order")
        told = [math.inf if s is None or not math.isfinite(s) else -float(s) for s in scores]
        if self._strategy is not None:
            self._strategy.tell([np.asarray(x) for x in self._asked], told)
        self._asked = None
        self.iteration += 1

    def replay(self, told: list[tuple[list[list[float]], list[Optional[float]]]]) -> None:
        """Bring a fresh search to the state after the stored iterations: each stored (proposals, scores)."""
        for xs, scores in told:
            asked = self.ask()
            if asked != [list(map(float, x)) for x in xs]:
                raise EvomergeError(f"CMA-ES iteration {self.iteration}: the stored proposals are not what this "
                                    "pycma asks when it replays the run. Fix: resume with the pycma (and evomerge) "
                                    "release that started the run")
            self.tell(asked, scores)
