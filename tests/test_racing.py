"""Racing CMA-ES candidates: slices of documents add up to scoring them at once, candidates that cannot win stop
early and CMA-ES is told their estimate, the child is always scored on every document, and a killed race resumes
to the same decisions."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import evomerge, run_and_kill, snapshot
from evomerge.config import FitnessSpec, RacingSpec
from evomerge.crossover.racing import (
    Estimate,
    Rung,
    _bounds,
    beaten,
    chosen_outcomes,
    combine,
    estimate,
    paired_high,
    rung_limits,
    window,
)
from evomerge.records import by_task, candidate_subject
from evomerge.store import open_store

RACING = "  racing: {schedule: [0.25, 0.5, 1.0], confidence: 0.55}\n"


def test_rungs_and_bounds():
    spec = RacingSpec()
    assert rung_limits(spec, 40) == [10, 20, 40] and rung_limits(spec, 3) == [1, 2, 3]
    assert rung_limits(RacingSpec(schedule=(0.5, 1.0)), 1) == [1]
    for bound in ("wilson", "hoeffding"):
        wide, narrow = (_bounds(0.6, n, RacingSpec(bound=bound)) for n in (10, 1000))
        assert wide[0] < narrow[0] < 0.6 < narrow[1] < wide[1]
        assert _bounds(0.6, 100, RacingSpec(bound=bound, confidence=0.99))[0] < _bounds(0.6, 100, RacingSpec(bound=bound))[0]
    assert beaten(Estimate(0.2, 0.1, 0.3), Estimate(0.6, 0.4, 0.8)) and not beaten(Estimate(0.3, 0.1, 0.5),
                                                                                Estimate(0.6, 0.4, 0.8))
    with pytest.raises(ValueError, match="increasing shares"):
        RacingSpec(schedule=(0.5, 0.25, 1.0))


def test_slices_of_documents_add_up_to_scoring_them_at_once(tiny_models: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.fitness.lm_eval import Scorer

    spec = FitnessSpec.model_validate({"tasks": [{"task": "evomerge_arith"}, {"task": "evomerge_arc_easy"}],
                                       "select": {"split": "select", "limit": 23}})
    scorer = Scorer(spec)
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "models" / "a")
    tok = AutoTokenizer.from_pretrained(tiny_models / "models" / "a")
    whole = scorer.evaluate(model, tok, "select")
    rung = None
    for start, stop in ((0, 6), (6, 11), (11, 23)):
        part = scorer.evaluate(model, tok, "select", docs=window(spec, start, stop))
        assert part.docs == {"evomerge_arith": stop - start, "evomerge_arc_easy": stop - start}
        results, docs, outcomes = combine(rung, part.results, part.docs, part.outcomes)
        rung = Rung(results, docs, stop, outcomes)
    assert rung.results == whole.results and rung.docs == whole.docs  # exactly: whole counts over the whole number
    assert rung.outcomes == whole.outcomes  # each document's outcome, in split order
    for task, metrics in whole.outcomes.items():
        assert set(metrics) == {"acc", "acc_norm"}
        assert all(sum(v) / len(v) == whole.results[task][m] and set(v) <= {0.0, 1.0} for m, v in metrics.items())


def test_the_paired_bound_stops_only_what_is_worse_beyond_noise():
    import numpy as np

    fitness = FitnessSpec.model_validate({"tasks": [{"task": "a"}, {"task": "b", "weight": 3.0}]})
    spec = RacingSpec(confidence=0.95)
    rng = np.random.default_rng(0)
    ref = {t: np.tile(rng.integers(0, 2, 40), 5).astype(float) for t in "ab"}  # the first 40 are like all 200
    same = {t: v[:40].copy() for t, v in ref.items()}
    assert paired_high(same, ref, fitness, spec) == (0.0, 0.0)  # identical outcomes: no difference, no stop
    worse = {t: v[:40].copy() for t, v in ref.items()}
    for t in worse:
        worse[t][np.flatnonzero(worse[t])[:3]] = 0  # loses 3 documents the reference solves, on each task
    diff, high = paired_high(worse, ref, fitness, spec)
    d = {t: worse[t] - ref[t][:40] for t in ref}
    expect = (d["a"].mean() + 3 * d["b"].mean()) / 4
    se = np.sqrt((d["a"].var(ddof=1) + 9 * d["b"].var(ddof=1)) / 40) / 4
    assert diff == pytest.approx(expect) and high == pytest.approx(expect + 1.6448536269514722 * se) and high < 0
    # the same accuracies, unpaired, overlap: Wilson's bounds would not stop it
    assert not beaten(estimate({t: {"acc": worse[t].mean()} for t in ref}, {"a": 40, "b": 40}, fitness, spec),
                      estimate({t: {"acc": ref[t].mean()} for t in ref}, {"a": 200, "b": 200}, fitness, spec))
    assert paired_high(None, ref, fitness, spec) == (None, None)  # no outcomes: never stops
    assert chosen_outcomes({"a": {"acc": [1.0]}}, fitness) is None


@pytest.fixture
def racing_pipeline(tiny_pipeline: Path) -> Path:
    text = tiny_pipeline.read_text().replace("limit: 6}\n  report", "limit: 24}\n  report")
    text = text.replace("cma: {sigma0: 0.3, popsize: 3, budget: 6}}",
                        "cma: {sigma0: 0.6, popsize: 4, budget: 12}, racing: {confidence: 0.55}}")
    tiny_pipeline.write_text(text.replace("generations: 2", "generations: 1"))
    return tiny_pipeline


@pytest.mark.parametrize("bound", ["paired", "wilson"])
def test_a_race_stops_candidates_that_cannot_win_and_the_child_is_fully_scored(racing_pipeline: Path, tmp_path: Path,
                                                                             bound: str):
    run_dir = tmp_path / "run"
    racing_pipeline.write_text(racing_pipeline.read_text().replace("racing: {confidence: 0.55}",
                                                                   f"racing: {{confidence: 0.55, bound: {bound}}}"))
    result = evomerge("run", str(racing_pipeline), "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(run_dir)
    from evomerge.evolution import open_config

    cfg = open_config(store).pipeline
    spec, fitness = cfg.crossover.racing, cfg.fitness
    stopped = {d["subject"]: d for _, kind, d in store.events() if kind == "candidate_stopped"}
    assert stopped, "no candidate was stopped: the test run does not race"
    key = {"split": "select", "fewshot": 0}
    documents = {"raced": 0, "all": 0}
    for x in store.crossovers():
        cands = store.candidates(x.id)
        full = {}
        for c in cands:
            subject = candidate_subject(c.id)
            rungs = {n: store.scores(subject, **key, limit=n) for n in rung_limits(spec, 24)}
            # the slices add up to the last rung's documents (one row per task and metric: count each task once)
            documents["raced"] += max(sum({r.task: r.docs for r in rows}.values()) for rows in rungs.values() if rows)
            documents["all"] += 24 * len(fitness.tasks)
            if subject in stopped:
                n = stopped[subject]["stopped"]
                assert not rungs[24] and rungs[n]  # stopped there: never scored on every document
                rows = rungs[n]
                est = estimate(by_task(rows), {r.task: r.docs for r in rows}, fitness, spec)
                assert c.score == est.value  # CMA-ES was told the estimate
                if bound == "wilson":
                    assert est.high == stopped[subject]["high"] < stopped[subject]["reference"]
                else:  # the upper bound of the paired difference to the best fully scored candidate before it
                    before = [o for o in cands if (o.iteration, o.idx) < (c.iteration, c.idx) and o.id in full]
                    best = max(before, key=lambda o: (o.score, -o.iteration, -o.idx))
                    mine, theirs = ({r.task: r.outcomes() for r in store.scores(candidate_subject(k), **key, limit=m)
                                     if r.metric == "acc"} for k, m in ((c.id, n), (best.id, 24)))
                    diff, high = paired_high(mine, theirs, fitness, spec)
                    assert (diff, high) == (stopped[subject]["diff"], stopped[subject]["high"]) and high < 0
            else:
                assert rungs[24] and c.score == fitness.weighted(by_task(rungs[24]))
                full[c.id] = c.score
        child = store.member(x.child_id)
        assert child.params["candidate"] in full and full[child.params["candidate"]] == max(full.values())
        assert store.scores(f"member:{child.id}", **key, limit=24)  # the child's select score: every document
    assert documents["raced"] < documents["all"]


def test_a_killed_race_resumes_to_the_same_decisions(racing_pipeline: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    assert evomerge("run", str(racing_pipeline), "--run-dir", str(reference), "--quiet").returncode == 0
    events = [kind for _, kind, _ in open_store(reference).events()]
    at = events.index("candidate_stopped")  # kill in the middle of a race, around a stop
    killed = tmp_path / "killed"
    assert run_and_kill(["run", str(racing_pipeline), "--run-dir", str(killed), "--quiet"], killed / "evomerge.db", at)
    assert evomerge("resume", str(killed), "--quiet").returncode == 0
    assert snapshot(killed) == snapshot(reference)
    stops = [[d for _, k, d in open_store(r).events() if k == "candidate_stopped"] for r in (killed, reference)]
    assert stops[0] == stops[1]
