"""Racing CMA-ES candidates: slices of documents add up to scoring them at once, candidates that cannot win stop
early and CMA-ES is told their estimate, the child is always scored on every document, and a killed race resumes
to the same decisions."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import evomerge, run_and_kill, snapshot
from evomerge.config import FitnessSpec, RacingSpec
from evomerge.crossover.racing import Estimate, _bounds, beaten, combine, estimate, rung_limits
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
        part = scorer.evaluate(model, tok, "select", docs=(start, stop))
        assert part.docs == {"evomerge_arith": stop - start, "evomerge_arc_easy": stop - start}
        rung = (*combine(rung, part.results, part.docs), stop)
    assert rung[0] == whole.results and rung[1] == whole.docs  # exactly: whole counts over the whole number


@pytest.fixture
def racing_pipeline(tiny_pipeline: Path) -> Path:
    text = tiny_pipeline.read_text().replace("limit: 6}\n  report", "limit: 24}\n  report")
    text = text.replace("cma: {sigma0: 0.3, popsize: 3, budget: 6}}",
                        "cma: {sigma0: 0.6, popsize: 4, budget: 12}, racing: {confidence: 0.55}}")
    tiny_pipeline.write_text(text.replace("generations: 2", "generations: 1"))
    return tiny_pipeline


def test_a_race_stops_candidates_that_cannot_win_and_the_child_is_fully_scored(racing_pipeline: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
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
                assert c.score == est.value and est.high == stopped[subject]["high"]  # CMA-ES was told the estimate
                assert est.high < stopped[subject]["reference"]
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
