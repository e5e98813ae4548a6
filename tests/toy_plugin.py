"""A plugin, as a user would write one: a merge method, a mutation operator and a survivor selector, one class each,
registered by name. Nothing in evomerge/ knows about them. A pipeline loads it with `plugins: [toy_plugin]`."""
from __future__ import annotations

import json

from pydantic import Field

from evomerge.config import KindSettings, OperatorSettings
from evomerge.crossover.methods.base import DENSITY, WEIGHT, TaskVectorMethod
from evomerge.mutation.base import Mutant, MutationOperator
from evomerge.registry import CROSSOVERS, MUTATION_OPERATORS, SURVIVOR_SELECTORS
from evomerge.selection.base import SurvivorSelector


class DellaLinearNarrow(TaskVectorMethod):
    """The built-in della_linear with a search space of one's own: mergekit's `della_linear`, merged by mergekit for
    every candidate (no fast kernel), epsilon left at mergekit's 0.15 and density kept in [0.2, 0.8] so that
    density ± 0.15 stays inside (0, 1)."""

    mergekit_method = "della_linear"
    parameters = (WEIGHT, DENSITY)
    bounds = {WEIGHT: (0.0, 1.0), DENSITY: (0.2, 0.8)}
    start = {WEIGHT: 0.5, DENSITY: 0.5}
    color = "#7F3C8D"


class GaussianNoise(MutationOperator):
    """Adds N(0, scale²) noise to every weight, drawn from a generator keyed by (run seed, generation, slot)."""

    class Settings(OperatorSettings):
        scale: float = Field(0.01, gt=0)

    color = "#11A579"

    @classmethod
    def mutate(cls, bench, model, job, checkpoint) -> Mutant:
        seed = int(job.seed * 1_000_003 + job.generation * 1009 + job.slot)
        _noise(model, seed, job.settings.scale)
        return Mutant(model, {"parent": job.parent_name, "seed": seed, "scale": job.settings.scale})

    @classmethod
    def rebuild(cls, bench, model, member, run_dir):
        recipe = json.loads(member.recipe)
        _noise(model, recipe["seed"], recipe["scale"])
        return model

    @classmethod
    def edge_label(cls, params: dict) -> str:
        return f"{cls.name} scale={params['scale']:g}"


def _noise(model, seed: int, scale: float) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen).to(p.dtype))


class Youngest(SurvivorSelector):
    """Keeps the `size` newest members, whatever their scores (an age-layered population's simplest form)."""

    class Settings(KindSettings):
        """No settings of its own."""

    def select(self, candidates, scores, *, size):
        return sorted(candidates, reverse=True)[:size]


CROSSOVERS.register("della_linear_narrow", DellaLinearNarrow)
MUTATION_OPERATORS.register("gaussian_noise", GaussianNoise)
SURVIVOR_SELECTORS.register("youngest", Youngest)
