"""The driver's side of a mutation: its record (one per generation and slot), the steps the operator reports,
committed one transaction each, and the mutant as a member. The computing happens in the executor."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Optional

from evomerge import ids
from evomerge.context import RunContext
from evomerge.executor.base import MutationJob
from evomerge.records import MemberRecord, MemberState, MutationRecord
from evomerge.registry import MUTATION_OPERATORS


class MutationStage:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def run(self, generation: int, slot: int, parent_id: int, settings: Any, *, name: str) -> int:
        """Mutate member `parent_id` into the child `name` of (generation, slot); returns the child's id."""
        store = self.ctx.store
        rec = store.mutation(generation, slot)
        if rec is None:
            with store.transaction():
                store.add_mutation(generation=generation, slot=slot, parent_id=parent_id,
                                   operator=settings.model_dump(mode="json"),
                                   id=ids.child(self.ctx.loaded, generation, slot))
                store.add_event("mutation_started", generation=generation, slot=slot, parent=parent_id,
                                operator=settings.kind)
            rec = store.mutation(generation, slot)
        if rec.child_id is not None:
            return rec.child_id
        return self.make(name=name, kind=settings.kind, settings=settings, parent=store.member(rec.parent_id),
                         generation=generation, slot=slot, data_root=Path(self.ctx.loaded.pipeline_file).parent,
                         mutation=rec, member_id=ids.member(self.ctx.loaded, generation, slot, ids.MUTANT))

    def make(self, *, name: str, kind: str, settings: Any, parent: MemberRecord, generation: int, slot: int,
             data_root: Path, member_id: int, mutation: Optional[MutationRecord] = None) -> int:
        """Run operator `kind` on `parent` through the executor and add the mutant; a LoRA seed has no mutation."""
        ctx = self.ctx
        steps = [s.data for s in ctx.store.mutation_steps(mutation.id)] if mutation is not None else []
        job = MutationJob(name=name, kind=kind, settings=settings, parent=ctx.artifacts.source(parent),
                          parent_name=parent.name, seed=ctx.cfg.seed, generation=generation, slot=slot,
                          out_dir=ctx.artifacts.members_dir / name, files_dir=ctx.artifacts.adapters_dir / name,
                          files_ref=f"adapters/{name}", data_root=data_root, steps_done=steps)
        mutated = ctx.executor.mutate(job, partial(self._checkpoint, mutation, kind))
        failed = mutated.failure is not None
        with ctx.store.transaction():
            mid = ctx.store.add_member(name=name, generation=generation, operator=kind, parents=(parent.id,),
                                       params=settings.model_dump(mode="json"), recipe=json.dumps(mutated.recipe),
                                       weights=None if failed else ctx.artifacts.ref(job.out_dir),
                                       state=MemberState.FAILED if failed else MemberState.ALIVE, id=member_id)
            if mutation is not None:  # same transaction: a resume never finds the member without its mutation
                ctx.store.set_mutation_child(mutation.id, mid)
            ctx.store.add_event("member_added", member=mid, name=name, operator=kind)
            if failed:
                ctx.store.add_event("member_failed", member=mid, name=name, reason=mutated.failure)
        if failed:
            ctx.reporter.log(f"{name}: FAILED, {mutated.failure}; it is left out of selection")
        return mid

    def _checkpoint(self, mutation: Optional[MutationRecord], kind: str, step: Optional[int], data: dict,
                    **event: Any) -> None:
        """Commit a step the operator reports, with its event; step None: only a progress event (a fine-tune's
        steps done and ETA, for `evomerge status`)."""
        if step is None:
            with self.ctx.store.transaction():
                self.ctx.store.add_event("mutation_progress", **event)
            return
        if mutation is None:
            raise RuntimeError(f"{kind}: a seed's fine-tune has no steps to commit")
        with self.ctx.store.transaction():
            self.ctx.store.add_mutation_step(mutation.id, step, data)
            self.ctx.store.add_event(MUTATION_OPERATORS.get(kind).step_event, mutation=mutation.id, iteration=step,
                                     **event)
