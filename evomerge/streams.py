"""Random streams keyed by ids: (run seed, generation, slot, purpose, iteration, ...), never by the order in which
work is done or results arrive, so that a resumed run, or a run on more workers, draws what a run drew."""
from __future__ import annotations

import numpy as np


def rng_for(*keys: int) -> np.random.Generator:
    """A generator that depends only on its keys."""
    return np.random.default_rng([int(k) for k in keys])
