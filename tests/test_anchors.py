"""Anchor documents (fitness.select.estimator: {kind: anchors, n}): chosen once and deterministically from the seeds'
per-document outcomes; a model scored on them has the outcomes it has there on the whole split; the estimate is
within its standard error; a killed run resumes to the same anchors and estimates; a run whose seeds kept no
outcomes is refused before anything is computed."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import evomerge, killed_and_resumed
from evomerge.fitness.anchors import Anchors, stratified
from evomerge.records import AnchorSet, by_task
from evomerge.store import open_store

DATA = Path(__file__).resolve().parent / "data"


def _features(rng: np.random.Generator, size: int = 200) -> np.ndarray:
    """Documents of four kinds (which of three seeds solve them), each seed on two metrics."""
    kind = rng.integers(0, 4, size)
    solved = np.stack([kind >= 1, kind >= 2, kind == 3], axis=1).astype(float)
    return np.concatenate([solved, solved], axis=1)


def test_anchors_are_chosen_deterministically_and_stratified_by_how_the_seeds_did():
    features = _features(np.random.default_rng(0))
    anchors = Anchors(Anchors.Settings(kind="anchors", n=24))
    first = anchors.choose("t", features, seed=0)
    assert anchors.choose("t", features, seed=0) == first  # the same seed and outcomes: the same anchors
    assert anchors.choose("t", features, seed=1).docs != first.docs
    assert anchors.choose("u", features, seed=0).docs != first.docs  # each task draws its own
    assert len(first.docs) == 24 == len(set(first.docs)) and list(first.docs) == sorted(first.docs)
    assert len(first.strata) == 200 and 0 <= min(first.docs) and max(first.docs) < 200
    strata = np.asarray(first.strata)
    # documents the seeds did alike on share a stratum; every stratum has anchors in proportion to its size
    for row in np.unique(features, axis=0):
        assert len(set(strata[(features == row).all(axis=1)])) == 1
    drawn = np.bincount(strata[list(first.docs)], minlength=strata.max() + 1)
    sizes = np.bincount(strata)
    assert (drawn >= np.minimum(2, sizes)).all() and np.abs(drawn - 24 * sizes / 200).max() <= 2
    assert sum(first.weights()) == pytest.approx(200)
    whole = Anchors(Anchors.Settings(kind="anchors", n=200)).choose("t", features, seed=0)
    y = features[:, 0]
    assert stratified(whole, y) == (pytest.approx(y.mean()), 0.0)  # every document an anchor: exact, no error


def _draws(anchors: Anchors, features: np.ndarray, y: np.ndarray, draws: int = 200) -> tuple[np.ndarray, float]:
    """The estimate's errors over `draws` draws of anchors (seeds 0, 1, ...) and how often its 95% interval held."""
    errors, covered = [], []
    for seed in range(draws):
        a = anchors.choose("t", features, seed=seed)
        value, se = stratified(a, y[list(a.docs)])
        errors.append(value - y.mean())
        covered.append(abs(value - y.mean()) <= 1.96 * se)
    errors = np.asarray(errors)
    assert abs(errors.mean()) < 3 * errors.std() / np.sqrt(draws)  # unbiased
    return errors, float(np.mean(covered))


def test_the_stratified_estimate_is_unbiased_and_its_standard_error_honest():
    """Over many draws of anchors, a model that behaves like one seed on most documents: the estimates centre on
    its whole-split score and 95% intervals cover it at least as often as they claim to."""
    rng = np.random.default_rng(1)
    features = _features(rng, 300)
    y = np.where(rng.random(300) < 0.85, features[:, 1], 1 - features[:, 1])  # agrees with seed 2 on 85%
    errors, covered = _draws(Anchors(Anchors.Settings(kind="anchors", n=30)), features, y)
    assert covered >= 0.93
    assert np.abs(errors).mean() < np.sqrt(y.var() / 30) * 0.8  # better than 30 documents drawn at random


def test_neyman_allocation_spends_the_anchors_where_the_seeds_disagree_and_estimates_a_merge_better():
    """A merge gets right what every seed gets right and is a coin flip where they disagree: Neyman allocation
    gives the strata the seeds agree on their floor only, and its estimate stays unbiased, honest and closer."""
    rng = np.random.default_rng(2)
    features = _features(rng, 300)
    agree = (features.min(axis=1) == features.max(axis=1))
    y = np.where(agree, features[:, 0], rng.random(300) < 0.5 + 0.2 * features[:, 0]).astype(float)
    neyman = Anchors(Anchors.Settings(kind="anchors", n=30, allocation="neyman"))
    a = neyman.choose("t", features, seed=0)
    strata, drawn = np.asarray(a.strata), np.bincount(np.asarray(a.strata)[list(a.docs)])
    for h in range(strata.max() + 1):
        if agree[strata == h].all():
            assert drawn[h] == min(2, (strata == h).sum())
    assert len(a.docs) == 30 and a == neyman.choose("t", features, seed=0)
    errors, covered = _draws(neyman, features, y)
    by_size, covered_by_size = _draws(Anchors(Anchors.Settings(kind="anchors", n=30)), features, y)
    assert np.abs(errors).mean() < 0.85 * np.abs(by_size).mean()
    assert covered >= 0.9 and covered >= covered_by_size


def test_a_model_scored_on_its_anchors_has_the_outcomes_it_has_there_on_the_whole_split(tiny_models: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.config import FitnessSpec
    from evomerge.fitness.lm_eval import Scorer

    spec = FitnessSpec.model_validate({"tasks": [{"task": "evomerge_arith"}, {"task": "evomerge_arc_easy"}],
                                       "select": {"split": "select", "limit": 30,
                                                  "estimator": {"kind": "anchors", "n": 7}}})
    scorer = Scorer(spec)
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "models" / "a")
    tok = AutoTokenizer.from_pretrained(tiny_models / "models" / "a")
    whole = scorer.evaluate(model, tok, "select")
    docs = {"evomerge_arith": (0, 4, 5, 11, 17, 22, 29), "evomerge_arc_easy": (1, 2, 3, 10, 20, 27, 28)}
    part = scorer.evaluate(model, tok, "select", docs=docs)
    assert part.docs == {"evomerge_arith": 7, "evomerge_arc_easy": 7}
    for task, picked in docs.items():
        for metric in ("acc", "acc_norm"):
            assert part.outcomes[task][metric] == [whole.outcomes[task][metric][d] for d in picked]
    with pytest.raises(ValueError, match="not for every task"):
        scorer.evaluate(model, tok, "select", docs={"evomerge_arith": (0, 1)})


@pytest.fixture
def anchored(tiny_pipeline: Path) -> Path:
    text = tiny_pipeline.read_text().replace("select: {split: select, limit: 6}",
                                             "select: {split: select, limit: 30, estimator: {kind: anchors, n: 8}}")
    text = text.replace("cma: {sigma0: 0.3, popsize: 3, budget: 6}", "cma: {sigma0: 0.3, popsize: 3, budget: 3}")
    tiny_pipeline.write_text(text.replace("generations: 2", "generations: 1"))
    return tiny_pipeline


def test_an_anchored_run_estimates_within_its_standard_error_and_resumes_after_kill_9(anchored: Path,
                                                                                     tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.evolution import open_config
    from evomerge.fitness.lm_eval import Scorer
    from evomerge.scores import ScoreBoard

    reference, killed = killed_and_resumed(anchored, tmp_path)  # the same members, scores and candidates
    stores = [open_store(r) for r in (reference, killed)]
    key = {"split": "select", "limit": 30, "fewshot": 0}
    anchors = stores[0].anchors(**key)
    assert anchors == stores[1].anchors(**key) and set(anchors) == {"evomerge_arith", "evomerge_arc_easy"}
    assert all(len(a.docs) == 8 and len(a.strata) == 30 for a in anchors.values())
    store = stores[0]
    fitness = open_config(store).pipeline.fitness
    board = ScoreBoard(store, fitness)
    for m in store.members():
        rows = store.scores(f"member:{m.id}", **key, estimator="anchors")
        if m.generation == 0:  # seeds: on every document, never estimated
            assert not rows and {r.docs for r in store.scores(f"member:{m.id}", **key)} == {30}
        else:
            assert rows and {r.docs for r in rows} == {8} and all(r.se is not None for r in rows)
    for x in store.crossovers():
        for c in store.candidates(x.id):
            rows = store.scores(f"candidate:{c.id}", **key, estimator="anchors")
            assert c.score == fitness.weighted(by_task(rows)) and {r.docs for r in rows} == {8}
    # the alive children, scored on every document now: their estimates are within their standard errors
    scorer = Scorer(fitness.model_copy(update={"select": fitness.select.model_copy(update={"estimator": None})}))
    z = []
    for m in store.members():
        if m.generation > 0 and m.state.value == "alive":
            model = AutoModelForCausalLM.from_pretrained(reference / m.weights)
            tok = AutoTokenizer.from_pretrained(reference / m.weights)
            full = fitness.weighted(scorer.evaluate(model, tok, "select").results)
            estimate = board.member(m.id)
            assert estimate.estimator == "anchors"
            z.append((estimate.weighted - full) / estimate.weighted_se)
    assert z and all(abs(v) < 2.58 for v in z), z
    board_out = evomerge("leaderboard", str(reference))
    assert board_out.returncode == 0 and "≈" in board_out.stdout and "8 of 30 anchor documents" in board_out.stdout
    child = next(m.name for m in store.members() if m.generation == 1 and m.state.value == "alive")
    refused = evomerge("compare", str(reference), child, "a", "--split", "select")
    assert refused.returncode == 2 and "Fix: compare on the report split" in refused.stderr
    assert evomerge("compare", str(reference), child, "a").returncode == 0  # the report split: every document


def test_anchors_with_seeds_that_kept_no_outcomes_are_refused_before_any_compute(tiny_models: Path, tmp_path: Path):
    """A run of the release before per-document outcomes (tests/data/v2-racing), given anchors: its seeds have no
    outcomes to pick anchors from, so `resume` stops with a Fix and writes nothing."""
    run_dir = tmp_path / "run"
    shutil.copytree(DATA / "v2-racing", run_dir)
    with sqlite3.connect(run_dir / "evomerge.db") as conn:
        conn.execute("UPDATE meta SET value=replace(value, '/tmp/v2fix/models', ?)", (str(tiny_models / "models"),))
        for column in ("weights", "recipe", "params"):
            conn.execute(f"UPDATE members SET {column}=replace({column}, '/tmp/v2fix/models', ?)",
                         (str(tiny_models / "models"),))
        config = json.loads(conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
        config["pipeline"]["crossover"]["racing"] = None
        config["pipeline"]["fitness"]["select"]["estimator"] = {"kind": "anchors", "n": 4}
        conn.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(config),))
    before = len(open_store(run_dir).events())
    result = evomerge("resume", str(run_dir), "--quiet")
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip()
    assert "per-document outcomes" in message and "Fix:" in message and "Traceback" not in message
    store = open_store(run_dir)
    assert store.anchors(split="select", limit=8, fewshot=0) == {} and len(store.events()) == before
    assert all(r.estimator == "" for r in store.all_scores())


def test_shared_fitness_weighs_each_anchor_by_the_documents_it_stands_for():
    from evomerge.scores import Scores
    from evomerge.selection.shared import shared_fitness

    a = AnchorSet(task="t", docs=(0, 3, 4), strata=(0, 0, 0, 1, 1, 1, 1, 1, 1, 1))  # anchors stand for 3, 3.5, 3.5
    weights = np.asarray(a.weights())
    outcomes = np.asarray([1.0, 0.0, 1.0])
    one = Scores(tasks={"t": 0.5}, weighted=0.5, docs={"t": 3}, outcomes={"t": outcomes}, weights={"t": 1.0},
                 estimator="anchors", doc_weights={"t": weights})
    alone = shared_fitness([1], {1: one})[1]
    assert weights.tolist() == [3.0, 3.5, 3.5]
    assert alone == pytest.approx((3 * 1 + 3.5 * 1) / 10)  # a lone member: the anchors' design-weighted mean


def test_the_anchors_benchmark_counts_clear_picks_and_the_ceiling_a_fresh_split_sets():
    """benchmarks/anchors.py: a crossover whose child wins on 80 more documents is a clear pick that every bootstrap
    of the documents repeats; one whose two candidates differ on three documents is not; scoring every document
    "at random" gives the full scores' picks and no error."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from anchors import clear_picks, resampled

    from evomerge.config import FitnessSpec

    fitness = FitnessSpec.model_validate({"tasks": [{"task": "a"}, {"task": "b", "weight": 3.0}]})
    rng = np.random.default_rng(0)
    base = {t: (rng.random(400) < 0.5).astype(float) for t in ("a", "b")}

    def model(task: str | None = None, docs=(), value: float = 1.0) -> dict:
        out = {t: y.copy() for t, y in base.items()}
        if task:
            out[task][list(docs)] = value
        return {t: {"acc": y} for t, y in out.items()}

    wrong = {t: np.flatnonzero(base[t] == 0) for t in base}
    right = {t: np.flatnonzero(base[t] == 1) for t in base}
    others = {"weak": model(), "strong": model("a", wrong["a"][:80]),
              "one up": model("b", wrong["b"][:2]), "one down": model("b", right["b"][:1], 0.0)}
    crossovers = [["weak", "strong"], ["one down", "one up"]]
    assert clear_picks(fitness, others, crossovers) == {0}
    assert resampled(fitness, others, crossovers[:1], draws=200)[0] == 1.0  # the clear pick survives every bootstrap
    assert 0.0 < resampled(fitness, others, crossovers[1:], draws=200)[0] < 1.0  # the close one does not
    same, error = resampled(fitness, others, crossovers, n=400, draws=5)
    assert same == 2.0 and error == pytest.approx(0.0, abs=1e-12)
