"""Every score knows its documents: standard errors over documents, exact ties ("ties: the older member"), and
paired comparisons (`evomerge compare`, the leaderboard's "beats every seed") checked against a direct computation
from the stored outcomes."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import evomerge
from evomerge.config import FitnessSpec
from evomerge.records import member_subject
from evomerge.scores import ScoreBoard
from evomerge.store import create_store

FITNESS = FitnessSpec.model_validate({"tasks": [{"task": "arith"}, {"task": "arc", "weight": 3.0}],
                                      "select": {"split": "select", "limit": 40}})


def _outcomes(p: float, n: int, rng) -> list[int]:
    """n documents of which round(p·n) are solved, in a random order."""
    k = round(p * n)
    return rng.permutation([1] * k + [0] * (n - k)).tolist()


def _store_with(members: dict[str, dict[str, list[float]]], *, generation: int = 0):
    """A memory store whose members (in the order given: older first) have these select outcomes per task."""
    store = create_store("memory", None, config={})
    ids = {}
    with store.transaction():
        for name, tasks in members.items():
            ids[name] = store.add_member(name=name, generation=generation, operator="seed", parents=(), params={},
                                         recipe="{}", weights=None)
            store.add_scores(member_subject(ids[name]), split="select", limit=40, fewshot=0,
                             results={t: {"acc": sum(v) / len(v)} for t, v in tasks.items()},
                             docs={t: len(v) for t, v in tasks.items()}, outcomes={t: {"acc": v} for t, v in tasks.items()})
    return store, ids


def test_a_task_se_is_that_of_a_proportion_and_the_weighted_se_that_of_the_weighted_mean():
    rng = np.random.default_rng(1)
    store, ids = _store_with({"m": {"arith": _outcomes(0.725, 40, rng), "arc": _outcomes(0.575, 40, rng)}})
    s = ScoreBoard(store, FITNESS).member(ids["m"])
    assert s.tasks == {"arith": 0.725, "arc": 0.575}
    assert s.se["arith"] == pytest.approx(math.sqrt(0.725 * 0.275 / 40), rel=1e-12)
    assert s.se["arc"] == pytest.approx(math.sqrt(0.575 * 0.425 / 40), rel=1e-12)
    assert s.weighted == 0.6125 != (0.725 + 3 * 0.575) / 4  # exactly (29/40 + 3·23/40)/4 = 49/80
    assert s.weighted_se == pytest.approx(math.sqrt(s.se["arith"] ** 2 + 9 * s.se["arc"] ** 2) / 4, rel=1e-12)
    # a score stored without outcomes (an older run's) still has the SE of a proportion
    with store.transaction():
        old = store.add_member(name="old", generation=0, operator="seed", parents=(), params={}, recipe="{}",
                               weights=None)
        store.add_scores(member_subject(old), split="select", limit=40, fewshot=0,
                         results={"arith": {"acc": 0.725}, "arc": {"acc": 0.575}}, docs={"arith": 40, "arc": 40})
    o = ScoreBoard(store, FITNESS).member(old)
    assert o.se == pytest.approx(s.se) and o.weighted_se == pytest.approx(s.weighted_se) and not o.paired


def test_equal_weighted_scores_tie_exactly_and_the_older_member_ranks_first(tiny_pipeline: Path):
    """The demo's case: (0.8 + 0.625)/2 and (0.825 + 0.6)/2 differ in floating point (0.7125 vs
    0.7124999999999999); compared as the fractions they are, they tie, and every ranking puts the older first."""
    from evomerge.config import load_pipeline
    from evomerge.leaderboard import rows
    from evomerge.registry import PARENT_SELECTORS, SURVIVOR_SELECTORS

    assert (0.8 + 0.625) / 2 != (0.825 + 0.6) / 2
    rng = np.random.default_rng(2)
    # the older member has the lower float sum: it lost every tie-break before
    store, ids = _store_with({"older": {"evomerge_arith": _outcomes(0.825, 40, rng),
                                        "evomerge_arc_easy": _outcomes(0.6, 40, rng)},
                              "younger": {"evomerge_arith": _outcomes(0.8, 40, rng),
                                          "evomerge_arc_easy": _outcomes(0.625, 40, rng)}})
    pipeline = load_pipeline(tiny_pipeline).pipeline
    pipeline = pipeline.model_copy(update={"fitness": pipeline.fitness.model_copy(
        update={"select": pipeline.fitness.select.model_copy(update={"limit": 40})})})
    board = ScoreBoard(store, pipeline.fitness)
    scores = board.members(list(ids.values()))
    assert scores[ids["older"]].weighted == scores[ids["younger"]].weighted == 0.7125
    assert [r.member for r in rows(store, pipeline)] == ["older", "younger"]
    elitist = SURVIVOR_SELECTORS.get("elitist")(SURVIVOR_SELECTORS.get("elitist").Settings(kind="elitist"))
    assert elitist.select([ids["younger"], ids["older"]], scores, size=1) == [ids["older"]]
    tournament = PARENT_SELECTORS.get("tournament")
    picks = tournament(tournament.Settings(kind="tournament", k=2)).select(list(ids.values()), scores, n=1,
                                                          rng=np.random.default_rng(0))
    assert picks == [ids["older"]]


def test_paired_comparisons_of_identical_and_of_different_members():
    rng = np.random.default_rng(3)
    a = {"arith": _outcomes(0.7, 40, rng), "arc": _outcomes(0.55, 40, rng)}
    b = {"arith": list(a["arith"]), "arc": list(a["arc"])}
    c = {"arith": [0] * 40, "arc": [0] * 40}
    store, ids = _store_with({"a": a, "b": b, "c": c})
    board = ScoreBoard(store, FITNESS)
    sa, sb, sc = (board.member(ids[n]) for n in "abc")
    per, whole = board.compare(sa, sb)
    assert (whole.diff, whole.low, whole.high, whole.ties) == (0.0, 0.0, 0.0, 1.0) and whole.verdict == "within noise"
    per, whole = board.compare(sa, sc)
    assert whole.low > 0 and whole.verdict == "A better" and whole.b_wins == 0
    assert per["arith"].diff == pytest.approx(0.7) and whole.diff == pytest.approx((0.7 + 3 * 0.55) / 4)


def _stored_outcomes(db: Path, member: str, task: str) -> np.ndarray:
    """A member's report outcomes read straight from the database: the header, then the bits."""
    with sqlite3.connect(db) as conn:
        blob, docs = conn.execute(
            "SELECT s.outcomes, s.docs FROM scores s JOIN members m ON s.subject = 'member:' || m.id "
            "WHERE m.name=? AND s.task=? AND s.split='report' AND s.metric='acc'", (member, task)).fetchone()
    assert blob[:1] == b"B" and int.from_bytes(blob[1:5], "little") == docs
    bits = [(byte >> (7 - i)) & 1 for byte in blob[5:] for i in range(8)][:docs]
    return np.array(bits, dtype=float)


def test_compare_on_a_tiny_run_matches_a_direct_bootstrap_of_the_stored_outcomes(tiny_pipeline: Path,
                                                                                tmp_path: Path):
    run_dir = tmp_path / "run"
    text = tiny_pipeline.read_text().replace("generations: 2", "generations: 1")
    tiny_pipeline.write_text(text.replace("report: {split: report, limit: 6}", "report: {split: report, limit: 30}"))
    assert evomerge("run", str(tiny_pipeline), "--run-dir", str(run_dir), "--quiet").returncode == 0
    out = evomerge("compare", str(run_dir), "g1-c0", "a", "--format", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["paired"] and [r["task"] for r in got["rows"]] == ["evomerge_arith", "evomerge_arc_easy", "weighted"]
    # the documented procedure, written out: per task, 2000 resamples of the documents with seed 0, in task order
    rng = np.random.default_rng(0)
    boots, diffs = [], []
    for task in ("evomerge_arith", "evomerge_arc_easy"):
        d = _stored_outcomes(run_dir / "evomerge.db", "g1-c0", task) - _stored_outcomes(run_dir / "evomerge.db",
                                                                                       "a", task)
        idx = rng.integers(0, 30, size=(2000, 30))
        boots.append(np.array([d[row].mean() for row in idx]))
        diffs.append(d)
    weighted = (boots[0] + boots[1]) / 2
    for row, boot, d in zip(got["rows"], [*boots, weighted], [*diffs, np.concatenate(diffs)]):
        lo, hi = np.quantile(boot, [0.025, 0.975])
        assert (row["low"], row["high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert row["a_wins"] == (d > 0).mean() and row["b_wins"] == (d < 0).mean() and row["ties"] == (d == 0).mean()
    assert got["rows"][2]["diff"] == pytest.approx((diffs[0].mean() + diffs[1].mean()) / 2)
    same = json.loads(evomerge("compare", str(run_dir), "g1-c0", "g1-c0", "--format", "json").stdout)
    assert all((r["diff"], r["low"], r["high"], r["ties"]) == (0, 0, 0, 1) for r in same["rows"])
    text = evomerge("compare", str(run_dir), "g1-c0", "a").stdout
    assert "95% interval" in text and "paired bootstrap" in text and ("within noise" in text or "beyond noise" in text)
    board = json.loads(evomerge("leaderboard", str(run_dir), "--split", "report", "--format", "json").stdout)
    assert all(r["se"] is not None and r["tasks_se"]["evomerge_arith"] is not None for r in board)
    assert {r["member"]: r["beats_seeds"] for r in board if r["generation"] == 0} == {"base": None, "a": None,
                                                                                      "b": None}
    assert all(isinstance(r["beats_seeds"], bool) for r in board if r["generation"] > 0)
    table = evomerge("leaderboard", str(run_dir)).stdout
    assert "±" in table and "paired interval" in table
    bad = evomerge("compare", str(run_dir), "g1-c0", "nobody")
    assert bad.returncode == 2 and "no member named 'nobody'" in bad.stderr
