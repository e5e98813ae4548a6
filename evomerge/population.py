"""Seeding: the population file's members become the run's first members, each scored on both splits. A model
seed is read in place; a LoRA seed is a fine-tune of a member listed before it (through the executor)."""
from __future__ import annotations

import json
from pathlib import Path

from evomerge import ids
from evomerge.config import SPLITS, SeedMember
from evomerge.context import RunContext
from evomerge.models import resolve_model
from evomerge.mutation.stage import MutationStage
from evomerge.scoring import Scoring


class Seeding:
    def __init__(self, ctx: RunContext, scoring: Scoring, mutation: MutationStage) -> None:
        self.ctx = ctx
        self.scoring = scoring
        self.mutation = mutation

    def seed(self, index: int, member: SeedMember) -> None:
        """The population file's `index`-th member, added and scored unless the store has it already."""
        store = self.ctx.store
        if store.member(member.name) is None:
            if member.model is not None:
                self._model_seed(index, member)
            else:
                self.mutation.make(name=member.name, kind="lora", settings=member.lora,
                                   parent=store.member(member.lora.parent), generation=0, slot=index,
                                   data_root=Path(self.ctx.loaded.population_file).parent, member_id=ids.seed(index))
        record = store.member(member.name)
        for which in SPLITS:
            self.scoring.ensure(record, which)

    def _model_seed(self, index: int, member: SeedMember) -> None:
        source = self.ctx.loaded.model_source(member)
        path = resolve_model(source)  # converts a built-in model once
        with self.ctx.store.transaction():
            mid = self.ctx.store.add_member(name=member.name, generation=0, operator="seed", parents=(),
                                            params={"source": source}, recipe=json.dumps({"source": source}),
                                            weights=path, id=ids.seed(index))
            self.ctx.store.add_event("member_added", member=mid, name=member.name, operator="seed")

    def population(self, generation: int) -> list[int]:
        """Member ids of the population that breeds generation `generation` + 1."""
        if generation == 0:
            return [self.ctx.store.member(m.name).id for m in self.ctx.loaded.population.members]
        ids = self.ctx.store.survivors(generation)
        if ids is None:
            raise RuntimeError(f"generation {generation} has no survivors yet")
        return ids
