"""Breeding one child: a crossover of parents picked from the population (or, without crossover, one parent picked),
then, with probability `mutation.rate`, a mutation by an operator drawn by weight. Every draw depends only on
(run seed, generation, slot)."""
from __future__ import annotations

from typing import Any, Optional

from evomerge.context import RunContext
from evomerge.crossover.search import CrossoverStage
from evomerge.mutation.stage import MutationStage
from evomerge.records import MemberState
from evomerge.registry import PARENT_SELECTORS
from evomerge.streams import rng_for


class Breeding:
    def __init__(self, ctx: RunContext, mutation: MutationStage) -> None:
        self.ctx = ctx
        self.parents = PARENT_SELECTORS.get(ctx.cfg.parent_selection.kind)(ctx.cfg.parent_selection)
        self.crossover = CrossoverStage(ctx, self.parents)
        self.mutation = mutation

    def child(self, generation: int, slot: int, pool: list[int]) -> int:
        """The child of (generation, slot), bred from the member ids `pool`; returns its id."""
        ctx = self.ctx
        operator = self._mutation_operator(generation, slot)
        name = f"g{generation}-c{slot}"
        if ctx.cfg.crossover is not None:
            parent = self.crossover.run(generation, slot, pool, name=name if operator is None else f"{name}-merge",
                                        intermediate=operator is not None)
        else:
            parent = self.parents.select(pool, ctx.board.members(pool), n=1,
                                         rng=rng_for(ctx.cfg.seed, generation, slot))[0]
        if operator is None or ctx.store.member(parent).state is MemberState.FAILED:
            return parent  # a merge that failed is not mutated: it is the (failed) child
        child = self.mutation.run(generation, slot, parent, operator, name=name)
        merge = ctx.store.member(parent)
        if merge.generation == generation and merge.state is MemberState.ALIVE:
            with ctx.store.transaction():  # a first-release run kept the merge's weights until its mutant existed
                ctx.store.retire(merge.id, state=MemberState.INTERMEDIATE)
        return child

    def _mutation_operator(self, generation: int, slot: int) -> Optional[Any]:
        """Whether this child is mutated and by which operator's settings: a draw keyed by (seed, gen, slot)."""
        spec = self.ctx.cfg.mutation
        if spec is None:
            return None
        rng = rng_for(self.ctx.cfg.seed, generation, slot, 1)
        if rng.random() >= spec.rate:
            return None
        weights = [op.weight for op in spec.operators]
        return spec.operators[int(rng.choice(len(weights), p=[w / sum(weights) for w in weights]))]
