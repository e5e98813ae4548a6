"""M2N2's resource competition (`shared`) and attraction (`attraction`) on hand-made per-document outcomes, and on a
tiny run that is killed and resumed."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import PIPELINE, POPULATION, evomerge, killed_and_resumed
from evomerge.config import KindSettings
from evomerge.registry import PARENT_SELECTORS, SURVIVOR_SELECTORS
from evomerge.scores import Scores
from evomerge.selection.shared import shared_fitness
from evomerge.store import open_store


def scores(rows: dict[int, dict[str, list[float]]], weights: dict[str, float] | None = None) -> dict[int, Scores]:
    """Scores as the score board gives them, from each member's per-document outcomes per task."""
    out = {}
    for m, tasks in rows.items():
        w = weights or {t: 1.0 for t in tasks}
        means = {t: float(np.mean(v)) for t, v in tasks.items()}
        out[m] = Scores(tasks=means, weighted=sum(w[t] * means[t] for t in tasks) / sum(w.values()),
                        docs={t: len(v) for t, v in tasks.items()},
                        outcomes={t: np.asarray(v, dtype=float) for t, v in tasks.items()}, weights=w)
    return out


def solves(*docs: int, n: int = 10) -> list[float]:
    return [1.0 if d in docs else 0.0 for d in range(n)]


def survivors(kind: str, board: dict[int, Scores], size: int) -> list[int]:
    selector = SURVIVOR_SELECTORS.get(kind)(SURVIVOR_SELECTORS.get(kind).Settings(kind=kind))
    return selector.select(sorted(board), board, size=size)


def test_shared_keeps_the_member_that_alone_solves_some_documents_where_elitist_drops_it():
    # three near-copies solve documents 0-5; member 4 alone solves 6-9 and has the lowest score of all
    board = scores({1: {"t": solves(0, 1, 2, 3, 4, 5)}, 2: {"t": solves(0, 1, 2, 3, 4, 5)},
                    3: {"t": solves(0, 1, 2, 3, 4, 5)}, 4: {"t": solves(6, 7, 8, 9)}})
    assert survivors("elitist", board, 3) == [1, 2, 3]
    kept = survivors("shared", board, 3)
    assert sorted(kept) == [1, 2, 4]  # one copy goes (the newest of the tied), the lone solver stays
    assert kept[0] == 4  # best shared fitness first: 0.4 against 0.3 for each remaining copy


def test_shared_fitness_is_the_weighted_score_for_a_lone_member_and_splits_a_document_among_its_solvers():
    weights = {"a": 1.0, "b": 3.0}
    board = scores({1: {"a": solves(0, 1, n=4), "b": solves(0, 1, 2, 3, 4, 5, n=8)},
                    2: {"a": solves(0, n=4), "b": solves(7, n=8)}}, weights)
    alone = shared_fitness([1], board)
    assert alone[1] == pytest.approx(board[1].weighted)
    both = shared_fitness([1, 2], board)
    # a: doc 0 shared (1/2 each), doc 1 member 1's; b: docs 0-5 member 1's, doc 7 member 2's
    assert both[1] == pytest.approx((1 * (0.5 + 1) / 4 + 3 * 6 / 8) / 4)
    assert both[2] == pytest.approx((1 * 0.5 / 4 + 3 * 1 / 8) / 4)


def test_shared_without_outcomes_falls_back_to_the_weighted_score_with_a_warning(caplog):
    board = scores({1: {"t": solves(0, 1, 2)}, 2: {"t": solves(0, 1, 2)}, 3: {"t": solves(9)}})
    board[2] = Scores(tasks=board[2].tasks, weighted=board[2].weighted, docs=board[2].docs,
                      outcomes={"t": None}, weights=board[2].weights)  # scored before outcomes were kept
    with caplog.at_level(logging.WARNING):
        assert survivors("shared", board, 2) == [1, 2]
    assert "no per-document outcomes" in caplog.text


def attraction(k: int) -> object:
    cls = PARENT_SELECTORS.get("attraction")
    return cls(cls.Settings(kind="attraction", k=k))


def test_attraction_picks_the_parent_that_complements_the_first():
    # member 1 is the fittest; 2 solves a subset of what 1 solves; 3 solves what 1 does not; 4 is weaker than 3
    # on 3's documents
    board = scores({1: {"t": solves(0, 1, 2, 3, 4, 5)}, 2: {"t": solves(0, 1, 2, 3, 4)},
                    3: {"t": solves(7, 8, 9)}, 4: {"t": solves(0, 9)}})
    selector = attraction(k=4)  # the whole population enters the first tournament: member 1 wins it
    picks = {tuple(selector.select([1, 2, 3, 4], board, n=2, rng=np.random.default_rng(seed))) for seed in range(40)}
    assert {p[0] for p in picks} == {1}
    assert {p[1] for p in picks} <= {3, 4} and 3 in {p[1] for p in picks}
    assert 2 not in {p[1] for p in picks}  # adds nothing to member 1: never drawn
    # drawn in proportion to attraction: 3 adds 3 lone documents, 4 adds half of document 9
    seconds = [selector.select([1, 2, 3, 4], board, n=2, rng=np.random.default_rng(s))[1] for s in range(400)]
    assert seconds.count(3) / len(seconds) == pytest.approx(3 / 3.5 / (3 / 3.5 + 0.5 / 3.5), abs=0.06)
    # a third parent: neither 2 nor 4 adds anything to 1 and 3 (4's documents 0 and 9 are theirs too), so the
    # tournament on shared fitness decides
    trio = selector.select([1, 2, 3, 4], board, n=3, rng=np.random.default_rng(0))
    assert trio[:2] == [1, 3] and trio[2] in (2, 4)


def test_attraction_is_the_same_for_the_same_key_and_needs_no_outcomes():
    board = scores({1: {"t": solves(0, 1)}, 2: {"t": solves(2, 3)}, 3: {"t": solves(4)}, 4: {"t": solves(5, 6, 7)}})
    selector = attraction(k=2)
    runs = [selector.select([4, 3, 2, 1], board, n=2, rng=np.random.default_rng(7)) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    for m in board:
        board[m] = Scores(tasks=board[m].tasks, weighted=board[m].weighted, docs=board[m].docs)
    plain = selector.select([1, 2, 3, 4], board, n=2, rng=np.random.default_rng(7))
    assert len(set(plain)) == 2  # tournament on the weighted score


def test_both_are_registered_with_settings():
    for registry, kind in ((PARENT_SELECTORS, "attraction"), (SURVIVOR_SELECTORS, "shared")):
        cls = registry.get(kind)
        assert issubclass(cls.Settings, KindSettings) and cls.shows_shared_fitness


def _pipeline(tmp_path: Path, models: Path) -> Path:
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(models)))
    text = PIPELINE.replace("parent_selection: {kind: tournament, k: 2}",
                            "parent_selection: {kind: attraction, k: 2}\nsurvivor_selection: {kind: shared}")
    assert "attraction" in text
    (tmp_path / "pipeline.yaml").write_text(text)
    return tmp_path / "pipeline.yaml"


def test_shared_and_attraction_are_the_same_after_kill_9_and_resume(tiny_models: Path, tmp_path: Path):
    reference, _ = killed_and_resumed(_pipeline(tmp_path, tiny_models / "models"), tmp_path)
    board = json.loads(evomerge("leaderboard", str(reference), "--format", "json").stdout)
    alive = [r for r in board if r["state"] == "alive"]
    assert len(alive) == 3 and all(r["shared"] is not None for r in alive)
    assert all(r["shared"] is None for r in board if r["state"] != "alive")
    # each document is shared out whole among its solvers, so the shares add up to the (weighted) share of documents
    # that at least one alive member solves: no less than the best one's score, no more than 1
    assert max(r["score"] for r in alive) - 1e-9 <= sum(r["shared"] for r in alive) <= 1 + 1e-9
    text = evomerge("leaderboard", str(reference)).stdout
    assert "shared" in text
    # the report shows it too, per split, for the alive members
    from evomerge.evolution import open_config
    from evomerge.report.data import collect

    store = open_store(reference)
    data = collect(store, open_config(store).pipeline, run_dir=reference)
    assert data["run"]["shared_fitness"]
    shown = {m["name"]: m["shared"] for m in data["members"] if m["shared"] is not None}
    assert shown.keys() == {r["member"] for r in alive}
    assert all(shown[r["member"]]["select"] == pytest.approx(r["shared"]) for r in alive)
