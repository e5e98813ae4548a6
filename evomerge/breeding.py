"""Breeding one child: a crossover of parents picked from the population (or, without crossover, one parent picked),
then, with probability `mutation.rate`, a mutation by an operator drawn by weight. Every draw depends only on
(run seed, generation, slot). With `mutation.keep: better` (the default) a crossover child's mutant replaces its
merge only if its select score is not lower; otherwise the merge, written to disk then, is the child and the
mutant stays in the lineage, retired."""
from __future__ import annotations

from typing import Any, Optional

from evomerge.context import RunContext
from evomerge.crossover.search import CrossoverStage
from evomerge.mutation.stage import MutationStage
from evomerge.records import MemberRecord, MemberState
from evomerge.scoring import Scoring
from evomerge.registry import PARENT_SELECTORS
from evomerge.streams import rng_for


class Breeding:
    def __init__(self, ctx: RunContext, mutation: MutationStage, scoring: Scoring) -> None:
        self.ctx = ctx
        self.scoring = scoring
        self.parents = PARENT_SELECTORS.get(ctx.cfg.parent_selection.kind)(ctx.cfg.parent_selection)
        self.crossover = CrossoverStage(ctx, self.parents, scoring.estimates)
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
        if any(d["merge"] == merge.id for _, _, d in ctx.store.events(kind="mutant_rejected")):
            return merge.id  # decided before a resume
        if merge.generation == generation and merge.state is MemberState.ALIVE:
            with ctx.store.transaction():  # a first-release run kept the merge's weights until its mutant existed
                ctx.store.retire(merge.id, state=MemberState.INTERMEDIATE)
        if ctx.cfg.crossover is not None and ctx.cfg.mutation.keep == "better" and self._worse(child, merge):
            return self._keep_merge(ctx.store.member(merge.id), child)
        return child

    def _worse(self, mutant_id: int, merge: MemberRecord) -> bool:
        """Whether the mutant scores lower than the merge it was made from on the select split (a failed mutant
        does; a merge without a score does not lose to anything)."""
        ctx = self.ctx
        mutant = ctx.store.member(mutant_id)
        if mutant.state is MemberState.FAILED:
            return True
        self.scoring.ensure(mutant, "select")
        ours, theirs = ctx.board.member(mutant_id).weighted, ctx.board.member(merge.id).weighted
        return ours is not None and theirs is not None and ours < theirs

    def _keep_merge(self, merge: MemberRecord, mutant_id: int) -> int:
        """The merge becomes the child: written to disk by mergekit, ALIVE; the mutant is retired."""
        ctx = self.ctx
        out = ctx.artifacts.members_dir / merge.name
        if not out.exists():
            ctx.artifacts.build(merge, out)
        mutant = ctx.store.member(mutant_id)
        scores = {"merge_score": ctx.board.member(merge.id).weighted,
                  "mutant_score": ctx.board.member(mutant_id).weighted}
        with ctx.store.transaction():
            ctx.store.promote(merge.id, ctx.artifacts.ref(out))
            if mutant.state is MemberState.ALIVE:
                ctx.store.retire(mutant_id)
            ctx.store.add_event("mutant_rejected", merge=merge.id, mutant=mutant_id, **scores)
        ctx.reporter.log(f"{mutant.name}: its select score {_fmt(scores['mutant_score'])} is below its merge's "
                         f"{_fmt(scores['merge_score'])}: {merge.name} is the child (mutation.keep: better)")
        return merge.id

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


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4f}"
