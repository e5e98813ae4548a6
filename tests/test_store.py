"""The store's contract: a step commits whole or not at all; a score is written once; the schema is versioned."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evomerge.errors import EvomergeError
from evomerge.store import MemberState, Store, member_subject


def _store(tmp_path: Path) -> Store:
    return Store.create(tmp_path, config={"pipeline": {}, "population": {}})


def test_a_failed_step_leaves_nothing(tmp_path: Path):
    store = _store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_member(name="x", generation=0, operator="seed", parents=(), params={}, recipe="{}", weights="/w")
            raise RuntimeError("killed mid-step")
    assert store.members() == []
    with store.transaction():
        mid = store.add_member(name="x", generation=0, operator="seed", parents=(), params={}, recipe="{}",
                               weights="/w")
    reopened = Store.open(tmp_path)
    assert reopened.member("x").id == mid and reopened.member(mid).state is MemberState.ALIVE


def test_a_score_is_written_once(tmp_path: Path):
    store = _store(tmp_path)
    with store.transaction():
        mid = store.add_member(name="x", generation=0, operator="seed", parents=(), params={}, recipe="{}", weights="/w")
        store.add_scores(member_subject(mid), split="select", limit=50, fewshot=0,
                         results={"t": {"acc": 0.5, "acc_norm": 0.4}}, docs={"t": 50})
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction():
            store.add_scores(member_subject(mid), split="select", limit=50, fewshot=0,
                             results={"t": {"acc": 0.9}}, docs={"t": 50})
    rows = store.scores(member_subject(mid), split="select", limit=50, fewshot=0)
    assert [(r.metric, r.value) for r in rows] == [("acc", 0.5), ("acc_norm", 0.4)]
    # another document limit is another score
    assert store.scores(member_subject(mid), split="select", limit=None, fewshot=0) == []


def test_retiring_keeps_the_recipe_and_drops_the_weights(tmp_path: Path):
    store = _store(tmp_path)
    with store.transaction():
        mid = store.add_member(name="x", generation=1, operator="ties", parents=(), params={"merge": {}},
                               recipe="merge_method: ties", weights="/w")
        store.retire(mid)
    m = store.member(mid)
    assert m.state is MemberState.RETIRED and m.weights is None and m.recipe == "merge_method: ties"


def test_another_schema_version_is_refused(tmp_path: Path):
    store = _store(tmp_path)
    store._conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(EvomergeError, match="schema version 99"):
        Store.open(tmp_path)
