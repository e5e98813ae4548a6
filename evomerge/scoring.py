"""Scoring members: each member is scored once per split (select, report), through the executor, and the scores
are committed with the event that says which lm-eval model computed them. Where the select split is estimated
(fitness.select.estimator), `Estimates` chooses the anchors once the seeds are scored and turns a model's scores on
them into the estimate that is stored: seeds are scored on every select document, every later member and CMA-ES
candidate on the anchors only."""
from __future__ import annotations

from typing import Optional

import numpy as np

from evomerge.context import RunContext
from evomerge.errors import EvomergeError
from evomerge.records import MemberRecord, MemberState, by_task, member_subject


class Estimates:
    """The select split's estimator on the driver's side (evomerge/fitness/anchors.py computes)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        spec = ctx.cfg.fitness.select.estimator
        self.kind = "" if spec is None else spec.kind
        self._estimator = None
        if spec is not None:
            from evomerge.registry import ESTIMATORS

            self._estimator = ESTIMATORS.get(spec.kind)(spec)
        self._seeds: dict[str, np.ndarray] = {}  # task -> the seeds' features (documents x features)

    @property
    def active(self) -> bool:
        """Whether later scores on the select split are estimated (the anchors are chosen)."""
        return bool(self.kind) and bool(self.ctx.board.anchors())

    def prepare(self) -> None:
        """Choose the anchors from the seeds' per-document select outcomes, once (one transaction), unless stored."""
        ctx = self.ctx
        if not self.kind or ctx.board.anchors():
            return
        seeds = [m for m in ctx.store.members() if m.generation == 0 and m.state is not MemberState.FAILED]
        key = ctx.board.key("select")
        sets = []
        for t in ctx.cfg.fitness.tasks:
            rows = [{r.metric: r.outcomes() for r in ctx.store.scores(member_subject(m.id), **key) if r.task == t.task}
                    for m in seeds]
            missing = [m.name for m, row in zip(seeds, rows) if row.get(t.metric) is None]
            if missing:
                raise EvomergeError(
                    f"fitness.select.estimator: anchors are picked from the seeds' per-document outcomes, and "
                    f"{', '.join(missing)} have none for {t.task} {t.metric} on the select split (a run scored "
                    "before evomerge kept them, or a metric without a per-document value). Fix: start a new run, or "
                    "drop fitness.select.estimator")
            size = len(rows[0][t.metric])
            from evomerge.fitness.anchors import features

            sets.append(self._estimator.choose(t.task, features(rows, size), seed=ctx.cfg.seed))
        with ctx.store.transaction():
            ctx.store.add_anchors(**key, anchors=sets)
            ctx.store.add_event("anchors_chosen", split=key["split"], estimator=self.kind,
                                anchors={a.task: len(a.docs) for a in sets},
                                documents={a.task: len(a.strata) for a in sets},
                                strata={a.task: len(set(a.strata)) for a in sets})
        ctx.reporter.log("anchors: " + ", ".join(f"{a.task} {len(a.docs)} of {len(a.strata)} documents "
                                                 f"({len(set(a.strata))} strata)" for a in sets))

    def docs(self) -> Optional[dict[str, tuple[int, ...]]]:
        """The documents a later model is scored on (task -> the anchors), None where it is scored on all."""
        if not self.active:
            return None
        return {task: a.docs for task, a in self.ctx.board.anchors().items()}

    def estimate(self, scored) -> tuple[dict, dict]:
        """(results, se): each metric's estimate of the whole split from a model's scores on the anchors, and its
        standard error; metrics without per-document outcomes are left out (they cannot be estimated)."""
        results, se = {}, {}
        for task, a in self.ctx.board.anchors().items():
            for metric, values in scored.outcomes.get(task, {}).items():
                value, error = self._estimator.estimate(a, np.asarray(values, dtype=np.float64))
                results.setdefault(task, {})[metric] = value
                se.setdefault(task, {})[metric] = error
        return results, se

    def add(self, subject: str, scored, *, reused_from: Optional[str] = None) -> Optional[float]:
        """Store a model's scores on the select split: the estimate where anchors are active (its outcomes are the
        anchors'), else the scores as they are. Inside the caller's transaction; returns the weighted score."""
        ctx = self.ctx
        key = ctx.board.key("select")
        if not self.active:
            ctx.store.add_scores(subject, **key, results=scored.results, docs=scored.docs, outcomes=scored.outcomes,
                                 reused_from=reused_from)
            return ctx.cfg.fitness.weighted(scored.results)
        results, se = self.estimate(scored)
        outcomes = {task: {m: scored.outcomes[task][m] for m in metrics} for task, metrics in results.items()}
        ctx.store.add_scores(subject, **key, results=results, docs=scored.docs, outcomes=outcomes, estimator=self.kind,
                             se=se, reused_from=reused_from)
        return ctx.cfg.fitness.weighted(results)


    def reuse(self, source: str, subject: str) -> None:
        """Give `subject` the select scores of `source` (a crossover child its best candidate's: the estimate where
        it was estimated, with its outcomes and standard errors). Inside the caller's transaction."""
        ctx = self.ctx
        key = ctx.board.key("select")
        rows = (ctx.store.scores(source, **key, estimator=self.kind) if self.kind else []) or ctx.store.scores(source,
                                                                                                              **key)
        if not rows:
            return
        outcomes: dict = {}
        for r in rows:
            if r.packed is not None:
                outcomes.setdefault(r.task, {})[r.metric] = r.outcomes()
        se = {r.task: {} for r in rows}
        for r in rows:
            if r.se is not None:
                se[r.task][r.metric] = r.se
        ctx.store.add_scores(subject, **key, results=by_task(rows), docs={r.task: r.docs for r in rows},
                             outcomes=outcomes, reused_from=source, estimator=rows[0].estimator, se=se)


class Scoring:
    def __init__(self, ctx: RunContext, estimates: Optional[Estimates] = None) -> None:
        self.ctx = ctx
        self.estimates = estimates or Estimates(ctx)

    def ensure(self, record: MemberRecord, which: str) -> None:
        """Score `record` on the select or report split unless the store holds that score already (a later member's
        select score is an estimate from the anchors, where they are chosen). A member whose weights or
        log-likelihoods are not finite fails instead: it keeps no score and is never selected."""
        ctx = self.ctx
        subject = member_subject(record.id)
        record = ctx.store.member(record.id)
        if record.state is MemberState.FAILED or ctx.board.has(subject, which):
            return
        docs = self.estimates.docs() if which == "select" and record.generation > 0 else None
        path = ctx.artifacts.materialise(record)
        what = "its anchors" if docs else f"the {which} split"
        bar = ctx.reporter.step(f"scoring {record.name} on {what}", total=1)
        scored = ctx.executor.score(path, which, docs=docs)
        if scored.failure is not None:
            fail(ctx, record, scored.failure)
            return
        with ctx.store.transaction():
            if which == "select" and docs:
                weighted = self.estimates.add(subject, scored)
            else:
                ctx.store.add_scores(subject, **ctx.board.key(which), results=scored.results, docs=scored.docs,
                                     outcomes=scored.outcomes)
                weighted = ctx.cfg.fitness.weighted(scored.results)
            ctx.store.add_event("scored", subject=subject, split=ctx.board.key(which)["split"], score=weighted,
                                lm=scored.lm, **({"estimator": self.estimates.kind} if docs else {}))
        ctx.reporter.advance(bar)
        if not docs:
            ctx.reporter.log(f"{record.name:>16} {which:>6}: {format_results(scored.results)}  weighted {weighted:.4f}")
            return
        shown = ctx.board.member(record.id, which)
        ctx.reporter.log(f"{record.name:>16} {which:>6}: "
                         + "  ".join(f"{task} {value:.3f}" for task, value in shown.tasks.items())
                         + f"  weighted {weighted:.4f} ±{shown.weighted_se:.4f} (estimated from "
                           f"{sum(scored.docs.values())} anchor documents)")


def fail(ctx: RunContext, record: MemberRecord, reason: str) -> None:
    """Mark a member failed, with the reason in its event: it stays in the lineage and never competes."""
    with ctx.store.transaction():
        ctx.store.retire(record.id, state=MemberState.FAILED)
        ctx.store.add_event("member_failed", member=record.id, name=record.name, reason=reason)
    ctx.reporter.log(f"{record.name}: FAILED, {reason}; it is left out of selection")


def format_results(results: dict) -> str:
    return "  ".join(f"{task} {m.get('acc', next(iter(m.values()))):.3f}" for task, m in results.items())
