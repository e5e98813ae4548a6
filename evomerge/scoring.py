"""Scoring members: each member is scored once per split (select, report), through the executor, and the scores
are committed with the event that says which lm-eval model computed them."""
from __future__ import annotations

from evomerge.context import RunContext
from evomerge.records import MemberRecord, MemberState, member_subject


class Scoring:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def ensure(self, record: MemberRecord, which: str) -> None:
        """Score `record` on the select or report split unless the store holds that score already. A member whose
        weights or log-likelihoods are not finite fails instead: it keeps no score and is never selected."""
        ctx = self.ctx
        subject = member_subject(record.id)
        record = ctx.store.member(record.id)
        if record.state is MemberState.FAILED or ctx.board.has(subject, which):
            return
        path = ctx.artifacts.materialise(record)
        bar = ctx.reporter.step(f"scoring {record.name} on the {which} split", total=1)
        scored = ctx.executor.score(path, which)
        if scored.failure is not None:
            fail(ctx, record, scored.failure)
            return
        key = ctx.board.key(which)
        weighted = ctx.cfg.fitness.weighted(scored.results)
        with ctx.store.transaction():
            ctx.store.add_scores(subject, **key, results=scored.results, docs=scored.docs, outcomes=scored.outcomes)
            ctx.store.add_event("scored", subject=subject, split=key["split"], score=weighted, lm=scored.lm)
        ctx.reporter.advance(bar)
        ctx.reporter.log(f"{record.name:>16} {which:>6}: {format_results(scored.results)}  weighted {weighted:.4f}")


def fail(ctx: RunContext, record: MemberRecord, reason: str) -> None:
    """Mark a member failed, with the reason in its event: it stays in the lineage and never competes."""
    with ctx.store.transaction():
        ctx.store.retire(record.id, state=MemberState.FAILED)
        ctx.store.add_event("member_failed", member=record.id, name=record.name, reason=reason)
    ctx.reporter.log(f"{record.name}: FAILED, {reason}; it is left out of selection")


def format_results(results: dict) -> str:
    return "  ".join(f"{task} {m.get('acc', next(iter(m.values()))):.3f}" for task, m in results.items())
