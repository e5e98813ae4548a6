"""The driver's side of a crossover: pick the parents, run CMA-ES over their merges (ask, evaluate through the
executor, tell), and keep the best merge as the child. Every ask, every candidate's score and every tell is one
transaction; a resumed crossover replays its told iterations into a fresh CMA-ES and goes on. With
`crossover.racing`, candidates are scored on growing shares of the select documents and stopped once they cannot
win (evomerge/crossover/racing.py): every rung's scores are stored, so a resumed race makes the same decisions.
"""
from __future__ import annotations

from typing import Optional

from evomerge import ids
from evomerge.context import RunContext
from evomerge.crossover.cma import CmaSearch
from evomerge.crossover.racing import (
    Rung,
    beaten,
    chosen_outcomes,
    combine,
    estimate,
    paired_high,
    rung_limits,
    window,
)
from evomerge.errors import EvomergeError
from evomerge.executor.base import Candidate, CrossoverJob
from evomerge.records import CrossoverRecord, MemberState, by_task, candidate_subject, member_subject
from evomerge.scoring import Estimates
from evomerge.selection.base import ParentSelector
from evomerge.streams import rng_for


class CrossoverStage:
    def __init__(self, ctx: RunContext, parents: ParentSelector, estimates: Estimates) -> None:
        self.ctx = ctx
        self.parents = parents
        self.estimates = estimates  # where the select split is estimated: candidates are scored on the anchors

    def run(self, generation: int, slot: int, pool: list[int], *, name: str, intermediate: bool) -> int:
        """Breed the child `name` of (generation, slot) from `pool`; returns its member id. An `intermediate` child
        is about to be mutated: it gets no weights on disk (the mutation builds it in memory)."""
        ctx = self.ctx
        rec = ctx.store.crossover(generation, slot) or self._start(generation, slot, pool)
        if rec.child_id is not None:
            return rec.child_id
        genome = ctx.artifacts.genome(rec.parents, self._method(rec))
        search = CmaSearch(genome, ctx.cfg.crossover.cma, seed=ctx.cfg.seed, generation=generation, slot=slot)
        search.replay(self._told(rec))
        job = CrossoverJob(generation=generation, slot=slot, genome=genome, paths=ctx.artifacts.paths(rec.parents),
                           base_path=ctx.artifacts.base_path(), resident_from=ctx.artifacts.base_path(),
                           seed=ctx.cfg.seed, dtype=ctx.cfg.dtype)
        names = " × ".join(genome.parents)
        bar = ctx.reporter.step(f"gen {generation} child {slot + 1}/{ctx.cfg.children_per_generation}: "
                                f"{genome.method.name} {names}", total=search.iterations * search.popsize,
                                completed=sum(c.score is not None for c in ctx.store.candidates(rec.id)))
        while not search.done:
            self._iteration(rec, search, job, bar)
        ctx.executor.end_crossover(job)
        return self._finish(rec, job, name=name, intermediate=intermediate)

    def _start(self, generation: int, slot: int, pool: list[int]) -> CrossoverRecord:
        ctx = self.ctx
        method = self._operator(generation, slot)
        pool = self._breedable(pool, method, generation)
        parents = self.parents.select(pool, ctx.board.members(pool), n=ctx.cfg.parents_per_child,
                                      rng=rng_for(ctx.cfg.seed, generation, slot))
        with ctx.store.transaction():
            cid = ctx.store.add_crossover(generation=generation, slot=slot, parents=tuple(parents),
                                          id=ids.child(ctx.loaded, generation, slot))
            ctx.store.add_event("crossover_started", crossover=cid, generation=generation, slot=slot, parents=parents,
                                method=method)
        return ctx.store.crossover(generation, slot)

    def _operator(self, generation: int, slot: int) -> str:
        """The crossover kind of the child (generation, slot): the only one, or one drawn by weight from a stream
        keyed by (seed, generation, slot, 2)."""
        choices = self.ctx.cfg.crossover.choices()
        if len(choices) == 1:
            return choices[0].method
        weights = [op.weight for op in choices]
        rng = rng_for(self.ctx.cfg.seed, generation, slot, 2)
        return choices[int(rng.choice(len(weights), p=[w / sum(weights) for w in weights]))].method

    def _method(self, rec: CrossoverRecord) -> str:
        """The crossover kind a started crossover was drawn (a run from before operators: the only one)."""
        for _, _, data in self.ctx.store.events(kind="crossover_started"):
            if data.get("crossover") == rec.id and "method" in data:
                return data["method"]
        return self.ctx.cfg.crossover.choices()[0].method

    def _breedable(self, pool: list[int], method: str, generation: int) -> list[int]:
        """The members a crossover of kind `method` may take as parents. A merge method mixes tensors by name, so
        where layer paths have made members of other depths, it takes only members of the base's depth; a kind that
        merges the base apart from its parents (model_stock) does not take the base as a parent."""
        ctx = self.ctx
        from evomerge.registry import CROSSOVERS

        kind = CROSSOVERS.get(method)
        mixed = not all(CROSSOVERS.get(op.method).same_depth for op in ctx.cfg.crossover.choices())
        out, why = list(pool), []
        if kind.base_apart:
            base = ctx.store.member(ctx.loaded.population.base_model).id
            out = [m for m in out if m != base]
            why.append("other than the base")
        if kind.same_depth and mixed:
            depth = ctx.artifacts.num_layers()
            out = [m for m in out if ctx.artifacts.depth(m) == depth]
            why.append(f"of the base's depth ({depth} layers)")
        if len(out) < ctx.cfg.parents_per_child:
            others = ", ".join(ctx.store.member(m).name + (f" ({ctx.artifacts.depth(m)} layers)" if mixed else "")
                               for m in pool if m not in out)
            raise EvomergeError(f"generation {generation}: {method} merges members {' and '.join(why)}, and only "
                                f"{len(out)} of the population are (the others: {others}). Fix: raise "
                                "population_size, or lower the layer_path operator's weight, and start a new run")
        return out

    def _told(self, rec: CrossoverRecord) -> list[tuple[list[list[float]], list[Optional[float]]]]:
        """The told iterations, from the store: the search's state (a failed candidate's score is None)."""
        cands = self.ctx.store.candidates(rec.id)
        return [([list(c.x) for c in cands if c.iteration == it], [c.score for c in cands if c.iteration == it])
                for it in range(rec.iteration)]

    def _iteration(self, rec: CrossoverRecord, search: CmaSearch, job: CrossoverJob, bar) -> None:
        ctx, it = self.ctx, search.iteration
        xs = search.ask()
        cands = ctx.store.candidates(rec.id, iteration=it)
        if not cands:
            with ctx.store.transaction():
                ctx.store.add_candidates(rec.id, it, [(x, job.genome.params(x)) for x in xs],
                                         ids=ids.candidates(ctx.loaded, rec.generation, rec.slot, it))
                ctx.store.add_event("cma_ask", crossover=rec.id, iteration=it, proposals=len(xs))
            cands = ctx.store.candidates(rec.id, iteration=it)
        elif [list(c.x) for c in cands] != xs:
            raise EvomergeError(f"crossover {rec.id} iteration {it}: the stored proposals are not what CMA-ES asks "
                                "when it replays the run. Fix: resume with the release that started the run")
        scores = {c.id: c.score for c in cands}
        if ctx.cfg.crossover.racing is not None:
            self._race(rec, job, cands, scores, bar)
        else:
            docs = self.estimates.docs()
            pending = [Candidate(key=c.id, params=c.params, docs=docs) for c in cands if not c.done]
            earlier = _best(c.score for c in ctx.store.candidates(rec.id) if c.iteration < it)
            for cand, scored in ctx.executor.evaluate(job, pending):
                scores[cand.key] = self._record(cand, scored, job.genome.method,
                                                idx=next(c.idx for c in cands if c.id == cand.key), iteration=it,
                                                best=_best([earlier, *scores.values()]))
                ctx.reporter.advance(bar)
        search.tell(xs, [scores[c.id] for c in cands])
        with ctx.store.transaction():
            ctx.store.set_crossover_iteration(rec.id, it + 1)
            ctx.store.add_event("cma_tell", crossover=rec.id, iteration=it, sigma=search.sigma,
                                best=_best(scores.values()))

    def _record(self, cand: Candidate, scored, kind, *, iteration: int, idx: int, best: Optional[float]
                ) -> Optional[float]:
        """Commit one candidate's score, or its failure (CMA-ES is then told the worst score there is)."""
        ctx = self.ctx
        subject = candidate_subject(cand.key)
        if scored.failure is not None:
            self._failed(cand.key, scored.failure, f"{iteration}.{idx}", kind.describe(cand.params))
            return None
        key = ctx.board.key("select")
        estimated = self.estimates.active
        with ctx.store.transaction():
            value = self.estimates.add(subject, scored)
            ctx.store.set_candidate_score(cand.key, value)
            ctx.store.add_event("scored", subject=subject, split=key["split"], score=value, lm=scored.lm,
                                **({"estimator": self.estimates.kind} if estimated else {}))
        se = f" ±{ctx.board.of(subject).weighted_se:.4f}" if estimated else ""
        ctx.reporter.log(f"  candidate {iteration}.{idx}: select {value:.4f}{se} (best so far "
                         f"{max(value, best if best is not None else value):.4f}) {kind.describe(cand.params)}")
        return value

    def _failed(self, candidate_id: int, failure: str, label: str, shown: str) -> None:
        """Commit a candidate's failure (CMA-ES is then told the worst score there is)."""
        ctx = self.ctx
        with ctx.store.transaction():
            ctx.store.set_candidate_failure(candidate_id, failure)
            ctx.store.add_event("candidate_failed", subject=candidate_subject(candidate_id), reason=failure)
        ctx.reporter.log(f"  candidate {label}: FAILED, {failure} {shown}")

    # ------------------------------------------------------------ racing

    def _race(self, rec: CrossoverRecord, job: CrossoverJob, cands: list, scores: dict, bar) -> None:
        """Race an iteration's candidates: every pending one's first rung at once (workers score them side by side),
        then each in turn, rung by rung, against the best candidate scored on every document before it."""
        ctx = self.ctx
        limits = rung_limits(ctx.cfg.crossover.racing, ctx.cfg.fitness.select.limit)
        pending = [c for c in cands if not c.done]
        first = [Candidate(key=c.id, params=c.params, docs=window(ctx.cfg.fitness, 0, limits[0])) for c in pending
                 if not self._rung(c.id, limits[0])]
        failed = set()
        for cand, scored in ctx.executor.evaluate(job, first):
            if self._store_rung(cand.key, job.genome.method.describe(cand.params), scored, limits[0],
                               previous=None) is None:
                failed.add(cand.key)
        for c in pending:
            if c.id not in failed:
                scores[c.id] = self._race_one(rec, job, c, limits)
            ctx.reporter.advance(bar)

    def _race_one(self, rec: CrossoverRecord, job: CrossoverJob, cand, limits: list[int]) -> Optional[float]:
        """One candidate's later rungs: its told score (the full score, or its estimate where it stopped)."""
        ctx = self.ctx
        spec, fitness = ctx.cfg.crossover.racing, ctx.cfg.fitness
        reference = self._reference(rec, before=(cand.iteration, cand.idx))
        previous = None
        for n in limits:
            rung = self._rung(cand.id, n)
            if rung is None:
                start = previous.n if previous else 0
                scored = next(iter(ctx.executor.evaluate(job, [Candidate(key=cand.id, params=cand.params,
                                                                          docs=window(fitness, start, n))])))[1]
                rung = self._store_rung(cand.id, job.genome.method.describe(cand.params), scored, n, previous=previous)
                if rung is None:
                    return None
            est = estimate(rung.results, rung.docs, fitness, spec)
            if n == limits[-1]:
                self._tell(cand, job.genome.method, est.value, f"select {est.value:.4f}")
                return est.value
            stop = f"stopped after {n} of {limits[-1]} documents per task: select {est.value:.4f}"
            if spec.bound == "paired" and reference is not None:
                diff, high = paired_high(chosen_outcomes(rung.outcomes, fitness),
                                         chosen_outcomes(reference.outcomes, fitness), fitness, spec)
                if high is not None and high < 0:
                    self._tell(cand, job.genome.method, est.value, f"{stop}, paired difference to the best {diff:+.4f} (upper bound "
                                                f"{high:+.4f} < 0)", stopped=n, diff=diff, high=high)
                    return est.value
            elif spec.bound != "paired" and reference is not None:
                bounds = estimate(reference.results, reference.docs, fitness, spec)
                if beaten(est, bounds):
                    self._tell(cand, job.genome.method, est.value, f"{stop} <= {est.high:.4f} < {bounds.low:.4f}, the best's lower "
                                                "bound", stopped=n, high=est.high, reference=bounds.low)
                    return est.value
            previous = rung
        raise AssertionError("unreachable: the last rung is the select limit")

    def _rung(self, candidate_id: int, n: int) -> Optional[Rung]:
        """A stored rung: the candidate's scores (and outcomes) on its first n documents."""
        key = {**self.ctx.board.key("select"), "limit": n}
        return _as_rung(self.ctx.store.scores(candidate_subject(candidate_id), **key), n)

    def _store_rung(self, candidate_id: int, shown: str, scored, n: int, *, previous: Optional[Rung]
                    ) -> Optional[Rung]:
        """Commit the scores of a candidate on its first n documents (a slice's scores added to the previous
        rung's), or its failure; None if it failed. The rung is read back as stored, so that a resumed race decides
        on exactly what this one does."""
        ctx = self.ctx
        subject = candidate_subject(candidate_id)
        if scored.failure is not None:
            self._failed(candidate_id, scored.failure, str(candidate_id), shown)
            return None
        results, docs, outcomes = combine(previous, scored.results, scored.docs, scored.outcomes)
        key = {**ctx.board.key("select"), "limit": n}
        with ctx.store.transaction():
            ctx.store.add_scores(subject, **key, results=results, docs=docs, outcomes=outcomes)
            ctx.store.add_event("scored", subject=subject, split=key["split"], limit=n,
                                documents=sum(scored.docs.values()), score=ctx.cfg.fitness.weighted(results),
                                lm=scored.lm)
        return self._rung(candidate_id, n)

    def _reference(self, rec: CrossoverRecord, *, before: tuple[int, int]) -> Optional[Rung]:
        """The best candidate of the crossover scored on every document, among those before `before` (iteration,
        index), with its scores and outcomes: what a later candidate must be able to beat (ties: the first)."""
        ctx = self.ctx
        best, rows_of_best = None, None
        for c in ctx.store.candidates(rec.id):
            if (c.iteration, c.idx) >= before or c.score is None:
                continue
            rows = ctx.store.scores(candidate_subject(c.id), **ctx.board.key("select"))
            if rows and (best is None or c.score > best.score):
                best, rows_of_best = c, rows
        return None if best is None else _as_rung(rows_of_best, ctx.cfg.fitness.select.limit)

    def _tell(self, cand, kind, value: float, text: str, **stopped) -> None:
        """Commit the score CMA-ES is told for a raced candidate."""
        ctx = self.ctx
        with ctx.store.transaction():
            ctx.store.set_candidate_score(cand.id, value)
            if stopped:
                ctx.store.add_event("candidate_stopped", subject=candidate_subject(cand.id), **stopped)
        ctx.reporter.log(f"  candidate {cand.iteration}.{cand.idx}: {text} {kind.describe(cand.params)}")

    # ------------------------------------------------------------ the child

    def _finish(self, rec: CrossoverRecord, job: CrossoverJob, *, name: str, intermediate: bool) -> int:
        """The best candidate scored on every select document becomes the child (ties: the first); if every
        candidate failed, a failed child."""
        ctx = self.ctx
        full = ctx.board.key("select")
        scored = [c for c in ctx.store.candidates(rec.id) if c.score is not None
                  and (ctx.cfg.crossover.racing is None or ctx.store.scores(candidate_subject(c.id), **full))]
        best = max(scored, key=lambda c: (c.score, -c.iteration, -c.idx)) if scored else ctx.store.candidates(rec.id)[0]
        config = job.merge_config(best.params)
        state = MemberState.FAILED if not scored else MemberState.INTERMEDIATE if intermediate else MemberState.ALIVE
        out = ctx.artifacts.members_dir / name
        if state is MemberState.ALIVE and not out.exists():
            from evomerge.crossover.merge import merge_to_disk
            from evomerge.devices import resolve

            out.parent.mkdir(parents=True, exist_ok=True)
            merge_to_disk(config, out, seed=ctx.cfg.seed, device=resolve(ctx.cfg.device))
        method = job.genome.method.name
        with ctx.store.transaction():
            child = ctx.store.add_member(
                name=name, generation=rec.generation, operator=method, parents=rec.parents,
                params={"merge": best.params, "candidate": best.id, "seed": ctx.cfg.seed}, recipe=config.to_yaml(),
                weights=ctx.artifacts.ref(out) if state is MemberState.ALIVE else None, state=state,
                id=ids.member(ctx.loaded, rec.generation, rec.slot, ids.CROSSOVER))
            if scored:  # the best candidate's select scores (or estimates) and outcomes, reused
                self.estimates.reuse(candidate_subject(best.id), member_subject(child))
            ctx.store.set_crossover_child(rec.id, child)
            ctx.store.add_event("member_added", member=child, name=name, operator=method, score=best.score,
                                intermediate=intermediate)
            if state is MemberState.FAILED:
                ctx.store.add_event("member_failed", member=child, name=name, reason="every CMA-ES candidate failed")
        ctx.reporter.log(f"child {name}: {method} of {', '.join(job.genome.parents)}, "
                         + (f"select {best.score:.4f}" if scored else "FAILED: every candidate failed"))
        return child


def _as_rung(rows: list, n: int) -> Optional[Rung]:
    """Score rows (of one subject and key) as a Rung, None if there are none."""
    if not rows:
        return None
    outcomes: dict = {}
    for r in rows:
        if r.packed is not None:
            outcomes.setdefault(r.task, {})[r.metric] = r.outcomes()
    return Rung(results=by_task(rows), docs={r.task: r.docs for r in rows}, n=n, outcomes=outcomes)


def _best(scores) -> Optional[float]:
    return max((s for s in scores if s is not None), default=None)
