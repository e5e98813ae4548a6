"""The store contract (evomerge/store/base.py), one suite run against every registered backend; then what only a
persistent backend promises: it reopens, refuses an unknown schema, and migrates a first-release database."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from evomerge.errors import EvomergeError
from evomerge.records import MemberState, member_subject
from evomerge.registry import STORES
from evomerge.store import NotInTransaction, StoreConflict, create_store, open_store

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(params=STORES.names())
def store(request, tmp_path: Path):
    s = create_store(request.param, tmp_path, config={"pipeline": {"name": "x"}, "population": {}})
    yield s
    s.close()


def _member(store, name: str = "x", **kw) -> int:
    fields = dict(name=name, generation=0, operator="seed", parents=(), params={"p": [1, 2]}, recipe="{}",
                  weights="/w")
    return store.add_member(**{**fields, **kw})


def test_a_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            mid = _member(store)
            store.add_scores(member_subject(mid), split="s", limit=5, fewshot=0, results={"t": {"acc": 1.0}},
                             docs={"t": 5})
            store.add_event("member_added", member=mid)
            raise RuntimeError("killed mid-step")
    assert store.members() == [] and store.all_scores() == [] and store.events() == []
    with store.transaction():
        mid = _member(store)
    assert store.member("x").id == mid == 1 and store.member(mid).state is MemberState.ALIVE
    assert store.config() == {"pipeline": {"name": "x"}, "population": {}}


def test_writes_happen_only_inside_one_transaction(store):
    with pytest.raises(NotInTransaction):
        _member(store)
    with pytest.raises(NotInTransaction):
        store.add_event("x")
    with store.transaction():
        with pytest.raises(NotInTransaction):
            with store.transaction():
                pass
    assert store.members() == []


def test_a_score_is_written_once(store):
    with store.transaction():
        mid = _member(store)
        store.add_scores(member_subject(mid), split="select", limit=50, fewshot=0,
                         results={"t": {"acc": 0.5, "acc_norm": 0.4}}, docs={"t": 50})
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_scores(member_subject(mid), split="select", limit=50, fewshot=0, results={"t": {"acc": 0.9}},
                             docs={"t": 50})
    rows = store.scores(member_subject(mid), split="select", limit=50, fewshot=0)
    assert [(r.metric, r.value, r.docs) for r in rows] == [("acc", 0.5, 50), ("acc_norm", 0.4, 50)]
    # another document limit is another score; None means every document
    assert store.scores(member_subject(mid), split="select", limit=None, fewshot=0) == []
    with store.transaction():
        store.add_scores(member_subject(mid), split="select", limit=None, fewshot=0, results={"t": {"acc": 0.7}},
                         docs={"t": 283}, reused_from="candidate:3")
    every = store.scores(member_subject(mid), split="select", limit=None, fewshot=0)
    assert [(r.limit, r.value, r.reused_from) for r in every] == [(None, 0.7, "candidate:3")]
    assert len(store.scores(member_subject(mid), any_limit=True)) == 3 and len(store.all_scores()) == 3


def test_members_are_immutable_but_for_state_and_weights(store):
    with store.transaction():
        a = _member(store, "a")
        b = _member(store, "b", generation=1, operator="ties", parents=(a,), recipe="merge_method: ties")
    assert (a, b) == (1, 2)
    with pytest.raises(StoreConflict):
        with store.transaction():
            _member(store, "a")
    record = store.member(b)
    record.params["p"].append(3)  # a record is a copy: changing it changes nothing stored
    assert store.member(b).params == {"p": [1, 2]}
    with store.transaction():
        store.retire(b)
    m = store.member("b")
    assert m.state is MemberState.RETIRED and m.weights is None and m.recipe == "merge_method: ties"
    assert m.parents == (a,) and m.generation == 1
    with pytest.raises(StoreConflict):  # never back, and never retired twice
        with store.transaction():
            store.retire(b, state=MemberState.INTERMEDIATE)
    with store.transaction():
        store.set_weights(b, "members/b")  # rebuilt
        store.retire(a, state=MemberState.INTERMEDIATE)
    assert store.member(b).weights == "members/b"
    assert [m.name for m in store.members(state=MemberState.INTERMEDIATE)] == ["a"]
    with pytest.raises(StoreConflict):  # only an intermediate comes back, and only once
        with store.transaction():
            store.promote(b, "members/b")
    with store.transaction():
        store.promote(a, "members/a")  # its mutant was rejected: the merge is the child
    assert store.member(a).state is MemberState.ALIVE and store.member(a).weights == "members/a"
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.promote(a, "members/a")


def test_crossovers_and_their_candidates(store):
    with store.transaction():
        a, b = _member(store, "a"), _member(store, "b")
        x = store.add_crossover(generation=1, slot=0, parents=(b, a))
        y = store.add_crossover(generation=1, slot=1, parents=(a, b))
        store.add_candidates(y, 0, [([0.5], {"a": {"weight": [0.5]}})])
        store.add_candidates(x, 0, [([0.1, 0.2], {"p": 1}), ([0.3, 0.4], {"p": 2})])
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_crossover(generation=1, slot=0, parents=(a, b))
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_candidates(x, 0, [([0.0, 0.0], {})])
    assert store.crossover(1, 0).parents == (b, a) and store.crossover(1, 0).iteration == 0
    cands = store.candidates(x)
    assert [(c.iteration, c.idx, c.x, c.params, c.score) for c in cands] == [
        (0, 0, (0.1, 0.2), {"p": 1}, None), (0, 1, (0.3, 0.4), {"p": 2}, None)]
    assert [c.crossover_id for c in store.candidates()] == [x, x, y]  # by crossover, iteration and index
    with store.transaction():
        store.set_candidate_score(cands[0].id, 0.25)
        store.set_crossover_iteration(x, 1)
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.set_candidate_score(cands[0].id, 0.5)
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.set_crossover_iteration(x, 3)  # iterations are told one at a time
    assert store.candidates(x, iteration=0)[0].score == 0.25 and store.crossover(1, 0).iteration == 1
    with store.transaction():  # a candidate that cannot be scored keeps its reason and no score
        store.set_candidate_failure(cands[1].id, "non-finite weights")
    for write in (lambda: store.set_candidate_score(cands[1].id, 0.5),
                  lambda: store.set_candidate_failure(cands[0].id, "late")):
        with pytest.raises(StoreConflict):
            with store.transaction():
                write()
    failed = store.candidates(x, iteration=0)[1]
    assert (failed.score, failed.failure, failed.done) == (None, "non-finite weights", True)
    with store.transaction():
        store.set_crossover_child(x, b)
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.set_crossover_child(x, a)
    assert [c.child_id for c in store.crossovers()] == [b, None]


def test_mutations_and_their_steps(store):
    with store.transaction():
        a = _member(store, "a")
        mu = store.add_mutation(generation=1, slot=1, parent_id=a, operator={"kind": "es", "sigma": 0.01})
        store.add_mutation_step(mu, 0, {"seeds": [1, 2], "coefficients": [0.5, -0.5]})
        store.add_mutation_step(mu, 1, {"seeds": [3, 4], "coefficients": [0.0, 0.0]})
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_mutation_step(mu, 1, {"seeds": [9]})
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_mutation(generation=1, slot=1, parent_id=a, operator={"kind": "lora"})
    assert store.mutation(1, 1).operator == {"kind": "es", "sigma": 0.01} and store.mutation(1, 0) is None
    assert [(s.step, s.data["seeds"]) for s in store.mutation_steps(mu)] == [(0, [1, 2]), (1, [3, 4])]
    with store.transaction():
        child = _member(store, "c", generation=1, operator="es", parents=(a,))
        store.set_mutation_child(mu, child)
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.set_mutation_child(mu, a)
    assert [m.child_id for m in store.mutations()] == [child]


def test_survivors_and_events(store):
    with store.transaction():
        store.set_survivors(1, [3, 1])
        for i in range(5):
            store.add_event("tick" if i % 2 else "tock", i=i)
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.set_survivors(1, [2])
    assert store.survivors(1) == [3, 1] and store.survivors(2) is None and store.generations() == {1: [3, 1]}
    assert [d["i"] for _, _, d in store.events()] == [0, 1, 2, 3, 4]
    assert [d["i"] for _, _, d in store.events(kind="tick")] == [1, 3]
    assert [d["i"] for _, _, d in store.events(last=2)] == [3, 4]
    times = [t for t, _, _ in store.events()]
    assert times == sorted(times)


# ---------------------------------------------------------------- persistent backends


def test_a_sqlite_store_reopens_with_everything(tmp_path: Path):
    store = create_store("sqlite", tmp_path, config={"pipeline": {}, "population": {}})
    with store.transaction():
        mid = _member(store)
        store.add_event("member_added", member=mid)
    store.close()
    again = open_store(tmp_path)
    assert again.member("x").id == mid and again.events()[0][2] == {"member": mid}


def test_another_schema_version_is_refused(tmp_path: Path):
    create_store("sqlite", tmp_path, config={}).close()
    with sqlite3.connect(tmp_path / "evomerge.db") as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(EvomergeError, match="schema version 99"):
        open_store(tmp_path)
    with pytest.raises(EvomergeError, match="not an evomerge run directory"):
        open_store(tmp_path / "elsewhere")


@pytest.mark.parametrize("fixture", ["v1-linear", "v1-ties"])
def test_a_first_release_database_is_migrated_without_unpickling(tmp_path: Path, fixture: str):
    """tests/data/v1-*/evomerge.db were written by the first release (21fa5e4) and killed: v1-linear between a CMA-ES
    ask and its tell, v1-ties after the first iteration of a noise-ES mutation. Both hold pickled CMA-ES states and
    weights paths of wherever they ran."""
    shutil.copytree(DATA / fixture, tmp_path / "run")
    with sqlite3.connect(tmp_path / "run" / "evomerge.db") as conn:
        crossovers = conn.execute("SELECT generation, slot, iteration FROM crossovers ORDER BY id").fetchall()
        es = conn.execute("SELECT mutation_id, iteration, seeds, coefficients FROM es_iterations").fetchall()
        # a payload that would run on unpickling: the migration must drop it unread
        conn.execute("UPDATE crossovers SET es_state=? WHERE id=1",
                     (b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.",))
    store = open_store(tmp_path / "run")
    assert not (tmp_path / "pwned").exists()
    with sqlite3.connect(tmp_path / "run" / "evomerge.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(crossovers)")}
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == "4" and "es_iterations" not in tables and "anchors" in tables and "es_state" not in columns
    assert [(x.generation, x.slot, x.iteration) for x in store.crossovers()] == crossovers
    steps = [(mu.id, s.step, s.data["seeds"], s.data["coefficients"]) for mu in store.mutations()
             for s in store.mutation_steps(mu.id)]
    assert steps == [(m, i, json.loads(seeds), json.loads(c)) for m, i, seeds, c in es]
    assert (fixture == "v1-ties") == bool(steps)
    inside = [m.weights for m in store.members() if m.generation > 0 and m.weights]
    assert inside and all(w == f"members/{w.split('/')[-1]}" for w in inside)  # relative to the run directory
    assert not any("fitness" in d for _, _, d in store.events())
    open_store(tmp_path / "run")  # a migrated store opens as the current version


def test_outcomes_are_written_once_with_their_score_in_its_transaction(store):
    """Each score row keeps its documents' outcomes (bits for 0/1, float32 otherwise), written in the same
    transaction as the score: a failed transaction leaves neither, outcomes that do not fit refuse the whole write,
    and a row with its outcomes is never written twice."""
    import numpy as np

    acc = [1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1]            # 11 documents: bits that do not fill a byte
    loglik = [-1.25, -0.5, -3.0, -0.125, -2.0, -0.75, -1.0, -0.25, -4.0, -0.375, -0.625]
    with pytest.raises(RuntimeError):
        with store.transaction():
            mid = _member(store)
            store.add_scores(member_subject(mid), split="s", limit=11, fewshot=0, results={"t": {"acc": 7 / 11}},
                             docs={"t": 11}, outcomes={"t": {"acc": acc}})
            raise RuntimeError("killed mid-step")
    assert store.all_scores() == []
    with pytest.raises(ValueError, match="10 outcomes for 11 documents"):
        with store.transaction():
            mid = _member(store)
            store.add_scores(member_subject(mid), split="s", limit=11, fewshot=0, results={"t": {"acc": 7 / 11}},
                             docs={"t": 11}, outcomes={"t": {"acc": acc[:10]}})
    assert store.members() == [] and store.all_scores() == []
    with store.transaction():
        mid = _member(store)
        store.add_scores(member_subject(mid), split="s", limit=11, fewshot=0,
                         results={"t": {"acc": 7 / 11, "loglik": float(np.mean(loglik)), "f1": 0.5}},
                         docs={"t": 11}, outcomes={"t": {"acc": acc, "loglik": loglik}})
    rows = {r.metric: r for r in store.scores(member_subject(mid), split="s", limit=11, fewshot=0)}
    assert rows["acc"].outcomes().tolist() == acc and len(rows["acc"].packed) == 5 + 2  # a header and 11 bits
    assert rows["loglik"].outcomes().tolist() == loglik  # exact in float32
    assert rows["f1"].outcomes() is None  # a metric without per-document values has none
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_scores(member_subject(mid), split="s", limit=11, fewshot=0, results={"t": {"acc": 0.0}},
                             docs={"t": 11}, outcomes={"t": {"acc": [0] * 11}})
    assert store.scores(member_subject(mid), split="s", limit=11, fewshot=0)[0].outcomes().tolist() == acc


def test_an_estimate_is_its_own_score_and_anchors_are_chosen_once(store):
    """An anchor estimate of a split's score is a row of its own beside the score on every document (its key has
    the estimator), with its standard error and the anchors' outcomes; a split's anchors are written once, in the
    run's transaction, and read back as written."""
    from evomerge.records import AnchorSet

    sets = [AnchorSet(task="t", docs=(1, 4), strata=(0, 0, 1, 1, 1)), AnchorSet(task="u", docs=(0, 2), strata=(0, 1, 1))]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_anchors(split="s", limit=None, fewshot=0, anchors=sets)
            raise RuntimeError("killed mid-step")
    assert store.anchors(split="s", limit=None, fewshot=0) == {}
    with store.transaction():
        mid = _member(store)
        store.add_anchors(split="s", limit=None, fewshot=0, anchors=sets)
        store.add_scores(member_subject(mid), split="s", limit=None, fewshot=0, results={"t": {"acc": 0.6}},
                         docs={"t": 5}, outcomes={"t": {"acc": [1, 0, 1, 1, 0]}})
        store.add_scores(member_subject(mid), split="s", limit=None, fewshot=0, results={"t": {"acc": 0.55}},
                         docs={"t": 2}, outcomes={"t": {"acc": [0, 1]}}, estimator="anchors",
                         se={"t": {"acc": 0.125}})
    assert store.anchors(split="s", limit=None, fewshot=0) == {a.task: a for a in sets}
    assert store.anchors(split="s", limit=3, fewshot=0) == {}
    assert sets[0].weights() == (2.0, 3.0) and sum(sets[1].weights()) == 3
    full, = store.scores(member_subject(mid), split="s", limit=None, fewshot=0)
    estimate, = store.scores(member_subject(mid), split="s", limit=None, fewshot=0, estimator="anchors")
    assert (full.value, full.docs, full.estimator, full.se) == (0.6, 5, "", None)
    assert (estimate.value, estimate.docs, estimate.estimator, estimate.se) == (0.55, 2, "anchors", 0.125)
    assert estimate.outcomes().tolist() == [0, 1] and len(store.all_scores()) == 2
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_anchors(split="s", limit=None, fewshot=0, anchors=sets[:1])
    with pytest.raises(StoreConflict):
        with store.transaction():
            store.add_scores(member_subject(mid), split="s", limit=None, fewshot=0, results={"t": {"acc": 0.5}},
                             docs={"t": 2}, estimator="anchors")


def test_a_version_3_database_is_migrated_with_its_scores(tmp_path: Path):
    """tests/data/v2-racing is migrated through version 3 to 4: every score is kept, as computed on its documents
    (estimator ''), with its outcomes; the anchors table exists and is empty."""
    shutil.copytree(DATA / "v2-racing", tmp_path / "run")
    with sqlite3.connect(tmp_path / "run" / "evomerge.db") as conn:
        before = sorted(conn.execute("SELECT subject, task, split, metric, lim, value, docs FROM scores").fetchall())
    store = open_store(tmp_path / "run")
    after = sorted((r.subject, r.task, r.split, r.metric, -1 if r.limit is None else r.limit, r.value, r.docs)
                   for r in store.all_scores())
    assert after == before and before
    assert all(r.estimator == "" and r.se is None for r in store.all_scores())
    assert store.anchors(split="select", limit=40, fewshot=0) == {}
    store.close()
    with sqlite3.connect(tmp_path / "run" / "evomerge.db") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "4"


def test_threads_share_a_store_one_transaction_at_a_time(store):
    """The driver's threads (children bred at once) share one store: a reader waits for a transaction under way
    and then sees all of it, never a part."""
    import threading
    import time

    begun = threading.Event()

    def write() -> None:
        with store.transaction():
            _member(store, "x")
            begun.set()
            time.sleep(0.3)
            _member(store, "y")

    writer = threading.Thread(target=write)
    writer.start()
    begun.wait()
    t0 = time.monotonic()
    names = [m.name for m in store.members()]
    waited = time.monotonic() - t0
    writer.join()
    assert names == ["x", "y"] and waited > 0.2
