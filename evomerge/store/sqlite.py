"""The SQLite backend: one file per run (`<run_dir>/evomerge.db`, WAL, synchronous=FULL); the only module that
speaks SQL. A committed transaction survives `kill -9` and power loss; a killed one leaves nothing.

Schema version 4: a score row is an estimate or not (`estimator`, part of its key: '' for a score computed on the
documents it counts, else the estimator's name) with its standard error (`se`, NULL where the outcomes give it), and
a split's anchor documents are kept (`anchors`). Older versions are migrated in place, each step in one transaction,
when opened.

Version 3 to 4: the scores table is rebuilt with `estimator` ('' for every row written before) in its primary key
and `se` (NULL); the `anchors` table is created, empty.

Version 2 to 3: the scores table gains the `outcomes` column; the scores written before have none (NULL).

Version 1 (the first release) to 2:
- its pickled CMA-ES states are dropped without being unpickled (the search is rebuilt from its candidates);
- `es_iterations` becomes the operator-neutral `mutation_steps` (and the mutation tables, which that release added
  without a version bump, are created where they are missing);
- the candidates' `fitness` column, and the events' `fitness` field, are renamed `score`;
- weights paths inside the run directory become relative to it, so that a moved run still opens.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from evomerge.errors import EvomergeError
from evomerge.records import (
    AnchorSet,
    CandidateRecord,
    CrossoverRecord,
    MemberRecord,
    MemberState,
    MutationRecord,
    MutationStep,
    ScoreRow,
)
from evomerge.store.base import Outcomes, Store, StoreConflict, TransactionGuard, packed_rows, serialised

SCHEMA_VERSION = 4

_SCORES = """
CREATE TABLE scores (
    subject TEXT NOT NULL,             -- member:<id> or candidate:<id>
    task TEXT NOT NULL, split TEXT NOT NULL, metric TEXT NOT NULL,
    lim INTEGER NOT NULL,              -- document limit, -1 for all
    fewshot INTEGER NOT NULL,
    value REAL NOT NULL, docs INTEGER NOT NULL,
    reused_from TEXT,
    created REAL NOT NULL,
    outcomes BLOB,                     -- each document's outcome, packed (evomerge/outcomes.py); NULL if none
    estimator TEXT NOT NULL DEFAULT '', -- '' or the estimator whose estimate of the whole split `value` is
    se REAL,                           -- an estimate's standard error; NULL: from the outcomes
    PRIMARY KEY (subject, task, split, metric, lim, fewshot, estimator)
);
"""
_ANCHORS = """
CREATE TABLE anchors (
    split TEXT NOT NULL, lim INTEGER NOT NULL, fewshot INTEGER NOT NULL, task TEXT NOT NULL,
    docs TEXT NOT NULL,                -- JSON: the anchor documents' indices into the split, increasing
    strata TEXT NOT NULL,              -- JSON: every document's stratum, in split order
    PRIMARY KEY (split, lim, fewshot, task)
);
"""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE members (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    operator TEXT NOT NULL,            -- seed | <merge method> | <mutation operator>
    parents TEXT NOT NULL,             -- JSON list of member ids
    params TEXT NOT NULL,              -- JSON: the operator's parameters
    recipe TEXT NOT NULL,              -- mergekit YAML for merges; JSON otherwise
    state TEXT NOT NULL,               -- MemberState
    weights TEXT,                      -- model directory (relative to the run directory inside it), or NULL
    created REAL NOT NULL
);
""" + _SCORES + _ANCHORS + """
CREATE TABLE crossovers (
    id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL, slot INTEGER NOT NULL,
    parents TEXT NOT NULL,             -- JSON list of member ids
    iteration INTEGER NOT NULL,        -- CMA-ES iterations told (the search is replayed from its candidates)
    child_id INTEGER,
    UNIQUE (generation, slot)
);
CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    crossover_id INTEGER NOT NULL REFERENCES crossovers(id),
    iteration INTEGER NOT NULL, idx INTEGER NOT NULL,
    x TEXT NOT NULL,                   -- JSON: the CMA-ES proposal
    params TEXT NOT NULL,              -- JSON: the merge parameters it maps to
    score REAL,                        -- weighted select score, NULL until evaluated or if it failed
    failure TEXT,                      -- why it could not be scored (non-finite weights or outputs)
    UNIQUE (crossover_id, iteration, idx)
);
CREATE TABLE mutations (
    id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL, slot INTEGER NOT NULL,
    parent_id INTEGER NOT NULL,
    operator TEXT NOT NULL,            -- JSON: the operator's settings
    child_id INTEGER,
    UNIQUE (generation, slot)
);
CREATE TABLE mutation_steps (
    mutation_id INTEGER NOT NULL REFERENCES mutations(id),
    step INTEGER NOT NULL,
    data TEXT NOT NULL,                -- JSON, the operator's own (ES: seeds, coefficients, rewards)
    PRIMARY KEY (mutation_id, step)
);
CREATE TABLE generations (generation INTEGER PRIMARY KEY, survivors TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
"""

_MUTATIONS_V1 = """
CREATE TABLE IF NOT EXISTS mutations (
    id INTEGER PRIMARY KEY, generation INTEGER NOT NULL, slot INTEGER NOT NULL, parent_id INTEGER NOT NULL,
    operator TEXT NOT NULL, child_id INTEGER, UNIQUE (generation, slot));
CREATE TABLE IF NOT EXISTS es_iterations (
    mutation_id INTEGER NOT NULL, iteration INTEGER NOT NULL, seeds TEXT NOT NULL, coefficients TEXT NOT NULL,
    rewards_plus TEXT NOT NULL, rewards_minus TEXT NOT NULL, PRIMARY KEY (mutation_id, iteration));
"""


@serialised
class SqliteStore(Store):
    """A run's SQLite database. `SqliteStore.create` for a new run, `SqliteStore.open` for an existing one."""

    kind = "sqlite"
    FILENAME = "evomerge.db"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._guard = TransactionGuard()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, location: Optional[Path], *, config: dict) -> "SqliteStore":
        if location is None:
            raise ValueError("the sqlite store needs a run directory")
        path = Path(location) / cls.FILENAME
        conn = cls._connect(path)
        with conn:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("config", json.dumps(config)), ("created", str(time.time())),
            ])
        return cls(conn, path)

    @classmethod
    def exists(cls, location: Path) -> bool:
        return (Path(location) / cls.FILENAME).is_file()

    @classmethod
    def open(cls, location: Path) -> "SqliteStore":
        path = Path(location) / cls.FILENAME
        if not path.is_file():
            raise EvomergeError(f"{location} is not an evomerge run directory (no {cls.FILENAME} in it). "
                                "Fix: give the directory that `evomerge run` printed, e.g. runs/demo-20261123-120000")
        try:
            conn = cls._connect(path)
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        except (sqlite3.DatabaseError, TypeError) as e:
            raise EvomergeError(f"{path} is not a readable evomerge database ({e}). Fix: give the directory that "
                                "`evomerge run` printed; a copied run needs its evomerge.db-wal too, or "
                                "`evomerge check` before copying") from None
        if not 1 <= version <= SCHEMA_VERSION:
            conn.close()
            raise EvomergeError(f"{path} has schema version {version}; this evomerge reads versions 1 to "
                                f"{SCHEMA_VERSION}. Fix: use the evomerge release that created the run")
        if version == 1:
            _migrate_v1(conn, Path(location))
        if version <= 2:
            _migrate_v2(conn)
        if version <= 3:
            _migrate_v3(conn)
        return cls(conn, path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)  # the guard's lock
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed step survives power loss, not only kill -9
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        return conn

    def close(self) -> None:
        self._conn.close()

    def check(self) -> list[str]:
        """Fold the write-ahead log into the database file (which can then be copied alone) and verify both the
        file and the links between its records; returns the problems found."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
            problems += [f"{r[0]} row {r[1]} points at a missing {r[2]} row"
                         for r in self._conn.execute("PRAGMA foreign_key_check")]
        except sqlite3.DatabaseError as e:
            problems = [f"{self.path}: {e}"]
        return problems

    def transaction(self):
        return self._guard.around(lambda: self._conn.execute("BEGIN IMMEDIATE"),
                                  lambda: self._conn.execute("COMMIT"), lambda: self._conn.execute("ROLLBACK"))

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        self._guard.check()
        try:
            return self._conn.execute(sql, args)
        except sqlite3.IntegrityError as e:
            raise StoreConflict(f"{e}: {sql.split('(')[0].strip()} {args[:3]}") from None

    def _write_many(self, sql: str, rows: list[tuple]) -> None:
        self._guard.check()
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.IntegrityError as e:
            raise StoreConflict(f"{e}: {sql.split('(')[0].strip()}") from None

    def _one(self, sql: str, args: tuple = ()) -> Optional[sqlite3.Row]:
        return self._conn.execute(sql, args).fetchone()

    def config(self) -> dict:
        return json.loads(self._one("SELECT value FROM meta WHERE key='config'")[0])

    # ------------------------------------------------------------ members

    def add_member(self, *, name: str, generation: int, operator: str, parents: tuple[int, ...], params: dict,
                   recipe: str, weights: Optional[str], state: MemberState = MemberState.ALIVE,
                   id: Optional[int] = None) -> int:
        cur = self._write(
            "INSERT INTO members (id, name, generation, operator, parents, params, recipe, state, weights, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (id, name, generation, operator, json.dumps(list(parents)), json.dumps(params), recipe, state.value,
             weights, time.time()))
        return int(cur.lastrowid)

    def retire(self, member_id: int, *, state: MemberState = MemberState.RETIRED) -> None:
        if state is MemberState.ALIVE:
            raise StoreConflict("a member never returns to ALIVE")
        cur = self._write("UPDATE members SET state=?, weights=NULL WHERE id=? AND state=?",
                          (state.value, member_id, MemberState.ALIVE.value))
        if cur.rowcount != 1:
            raise StoreConflict(f"member {member_id} is not alive")

    def promote(self, member_id: int, weights: str) -> None:
        cur = self._write("UPDATE members SET state=?, weights=? WHERE id=? AND state=?",
                          (MemberState.ALIVE.value, weights, member_id, MemberState.INTERMEDIATE.value))
        if cur.rowcount != 1:
            raise StoreConflict(f"member {member_id} is not an intermediate")

    def set_weights(self, member_id: int, weights: Optional[str]) -> None:
        self._write("UPDATE members SET weights=? WHERE id=?", (weights, member_id))

    def member(self, key: int | str) -> Optional[MemberRecord]:
        col = "id" if isinstance(key, int) else "name"
        row = self._one(f"SELECT * FROM members WHERE {col}=?", (key,))
        return _member(row) if row else None

    def members(self, *, state: Optional[MemberState] = None) -> list[MemberRecord]:
        if state is None:
            rows = self._conn.execute("SELECT * FROM members ORDER BY id")
        else:
            rows = self._conn.execute("SELECT * FROM members WHERE state=? ORDER BY id", (state.value,))
        return [_member(r) for r in rows]

    # ------------------------------------------------------------ scores

    def add_scores(self, subject: str, *, split: str, limit: Optional[int], fewshot: int,
                   results: dict[str, dict[str, float]], docs: dict[str, int],
                   reused_from: Optional[str] = None, outcomes: Optional[Outcomes] = None,
                   estimator: str = "", se: Optional[dict[str, dict[str, float]]] = None) -> None:
        now = time.time()
        packed = packed_rows(results, docs, outcomes)
        self._write_many(
            "INSERT INTO scores (subject, task, split, metric, lim, fewshot, value, docs, reused_from, created, "
            "outcomes, estimator, se) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(subject, task, split, metric, -1 if limit is None else limit, fewshot, float(value), docs[task],
              reused_from, now, packed[task, metric], estimator, _se(se, task, metric))
             for task, metrics in results.items() for metric, value in metrics.items()])

    def scores(self, subject: str, *, split: Optional[str] = None, limit: Optional[int] = None,
               fewshot: Optional[int] = None, any_limit: bool = False, estimator: str = "") -> list[ScoreRow]:
        sql, args = "SELECT * FROM scores WHERE subject=? AND estimator=?", [subject, estimator]
        if split is not None:
            sql, args = sql + " AND split=?", args + [split]
        if not any_limit:
            sql, args = sql + " AND lim=?", args + [-1 if limit is None else limit]
        if fewshot is not None:
            sql, args = sql + " AND fewshot=?", args + [fewshot]
        return [_score(r) for r in self._conn.execute(sql + " ORDER BY task, metric", args)]

    def all_scores(self) -> list[ScoreRow]:
        return [_score(r) for r in self._conn.execute("SELECT * FROM scores ORDER BY subject, task, split, metric, "
                                                      "estimator")]

    def add_anchors(self, *, split: str, limit: Optional[int], fewshot: int, anchors: Sequence[AnchorSet]) -> None:
        lim = -1 if limit is None else limit
        if self._one("SELECT 1 FROM anchors WHERE split=? AND lim=? AND fewshot=?", (split, lim, fewshot)):
            raise StoreConflict(f"the anchors of split {split!r} are chosen already")
        self._write_many("INSERT INTO anchors VALUES (?, ?, ?, ?, ?, ?)",
                         [(split, lim, fewshot, a.task, json.dumps(list(a.docs)), json.dumps(list(a.strata)))
                          for a in anchors])

    def anchors(self, *, split: str, limit: Optional[int], fewshot: int) -> dict[str, AnchorSet]:
        rows = self._conn.execute("SELECT * FROM anchors WHERE split=? AND lim=? AND fewshot=? ORDER BY task",
                                  (split, -1 if limit is None else limit, fewshot))
        return {r["task"]: AnchorSet(task=r["task"], docs=tuple(json.loads(r["docs"])),
                                     strata=tuple(json.loads(r["strata"]))) for r in rows}

    # ------------------------------------------------------------ crossovers and their CMA-ES candidates

    def add_crossover(self, *, generation: int, slot: int, parents: tuple[int, ...], id: Optional[int] = None) -> int:
        cur = self._write("INSERT INTO crossovers (id, generation, slot, parents, iteration) VALUES (?, ?, ?, ?, 0)",
                          (id, generation, slot, json.dumps(list(parents))))
        return int(cur.lastrowid)

    def crossover(self, generation: int, slot: int) -> Optional[CrossoverRecord]:
        row = self._one("SELECT * FROM crossovers WHERE generation=? AND slot=?", (generation, slot))
        return _crossover(row) if row else None

    def crossovers(self) -> list[CrossoverRecord]:
        return [_crossover(r) for r in self._conn.execute("SELECT * FROM crossovers ORDER BY id")]

    def set_crossover_iteration(self, crossover_id: int, iteration: int) -> None:
        cur = self._write("UPDATE crossovers SET iteration=? WHERE id=? AND iteration=?",
                          (iteration, crossover_id, iteration - 1))
        if cur.rowcount != 1:
            raise StoreConflict(f"crossover {crossover_id}: iteration {iteration} does not follow the told ones")

    def set_crossover_child(self, crossover_id: int, child_id: int) -> None:
        self._set_once("crossovers", "child_id", crossover_id, child_id)

    def add_candidates(self, crossover_id: int, iteration: int, proposals: list[tuple[list[float], dict]],
                       ids: Optional[list[int]] = None) -> None:
        ids = ids if ids is not None else [None] * len(proposals)
        self._write_many(
            "INSERT INTO candidates (id, crossover_id, iteration, idx, x, params) VALUES (?, ?, ?, ?, ?, ?)",
            [(cid, crossover_id, iteration, i, json.dumps(list(x)), json.dumps(p))
             for i, (cid, (x, p)) in enumerate(zip(ids, proposals))])

    def set_candidate_score(self, candidate_id: int, score: float) -> None:
        self._set_once("candidates", "score", candidate_id, score, unless="failure")

    def set_candidate_failure(self, candidate_id: int, failure: str) -> None:
        self._set_once("candidates", "failure", candidate_id, failure, unless="score")

    def candidates(self, crossover_id: Optional[int] = None, *, iteration: Optional[int] = None
                   ) -> list[CandidateRecord]:
        sql, args = "SELECT * FROM candidates WHERE 1=1", []
        if crossover_id is not None:
            sql, args = sql + " AND crossover_id=?", args + [crossover_id]
        if iteration is not None:
            sql, args = sql + " AND iteration=?", args + [iteration]
        return [_candidate(r) for r in self._conn.execute(sql + " ORDER BY crossover_id, iteration, idx", args)]

    def _set_once(self, table: str, column: str, row_id: int, value: Any, unless: Optional[str] = None) -> None:
        also = f" AND {unless} IS NULL" if unless else ""
        cur = self._write(f"UPDATE {table} SET {column}=? WHERE id=? AND {column} IS NULL{also}", (value, row_id))
        if cur.rowcount != 1:
            raise StoreConflict(f"{table} {row_id}: {column} is set already (or there is no such row)")

    # ------------------------------------------------------------ mutations and their steps

    def add_mutation(self, *, generation: int, slot: int, parent_id: int, operator: dict,
                     id: Optional[int] = None) -> int:
        cur = self._write("INSERT INTO mutations (id, generation, slot, parent_id, operator) VALUES (?, ?, ?, ?, ?)",
                          (id, generation, slot, parent_id, json.dumps(operator)))
        return int(cur.lastrowid)

    def mutation(self, generation: int, slot: int) -> Optional[MutationRecord]:
        row = self._one("SELECT * FROM mutations WHERE generation=? AND slot=?", (generation, slot))
        return _mutation(row) if row else None

    def mutations(self) -> list[MutationRecord]:
        return [_mutation(r) for r in self._conn.execute("SELECT * FROM mutations ORDER BY id")]

    def set_mutation_child(self, mutation_id: int, child_id: int) -> None:
        self._set_once("mutations", "child_id", mutation_id, child_id)

    def add_mutation_step(self, mutation_id: int, step: int, data: dict) -> None:
        self._write("INSERT INTO mutation_steps VALUES (?, ?, ?)", (mutation_id, step, json.dumps(data)))

    def mutation_steps(self, mutation_id: int) -> list[MutationStep]:
        rows = self._conn.execute("SELECT * FROM mutation_steps WHERE mutation_id=? ORDER BY step", (mutation_id,))
        return [MutationStep(r["mutation_id"], r["step"], json.loads(r["data"])) for r in rows]

    # ------------------------------------------------------------ generations and events

    def set_survivors(self, generation: int, survivors: list[int]) -> None:
        self._write("INSERT INTO generations VALUES (?, ?, ?)", (generation, json.dumps(survivors), time.time()))

    def generations(self) -> dict[int, list[int]]:
        rows = self._conn.execute("SELECT generation, survivors FROM generations ORDER BY generation")
        return {r[0]: json.loads(r[1]) for r in rows}

    def survivors(self, generation: int) -> Optional[list[int]]:
        row = self._one("SELECT survivors FROM generations WHERE generation=?", (generation,))
        return json.loads(row[0]) if row else None

    def add_event(self, kind: str, **data: Any) -> None:
        self._write("INSERT INTO events (time, kind, data) VALUES (?, ?, ?)", (time.time(), kind, json.dumps(data)))

    def events(self, *, kind: Optional[str] = None, last: Optional[int] = None) -> list[tuple[float, str, dict]]:
        sql, args = "SELECT time, kind, data FROM events", []
        if kind is not None:
            sql, args = sql + " WHERE kind=?", [kind]
        sql += " ORDER BY id DESC" if last else " ORDER BY id"
        if last:
            sql += f" LIMIT {int(last)}"
        rows = [(r[0], r[1], json.loads(r[2])) for r in self._conn.execute(sql, args)]
        return rows[::-1] if last else rows


def _member(r: sqlite3.Row) -> MemberRecord:
    return MemberRecord(id=r["id"], name=r["name"], generation=r["generation"], operator=r["operator"],
                        parents=tuple(json.loads(r["parents"])), params=json.loads(r["params"]), recipe=r["recipe"],
                        state=MemberState(r["state"]), weights=r["weights"], created=r["created"])


def _score(r: sqlite3.Row) -> ScoreRow:
    return ScoreRow(subject=r["subject"], task=r["task"], split=r["split"], metric=r["metric"],
                    limit=None if r["lim"] < 0 else r["lim"], fewshot=r["fewshot"], value=r["value"], docs=r["docs"],
                    reused_from=r["reused_from"], packed=r["outcomes"], estimator=r["estimator"], se=r["se"])


def _se(se: Optional[dict], task: str, metric: str) -> Optional[float]:
    value = (se or {}).get(task, {}).get(metric)
    return None if value is None else float(value)


def _crossover(r: sqlite3.Row) -> CrossoverRecord:
    return CrossoverRecord(id=r["id"], generation=r["generation"], slot=r["slot"],
                           parents=tuple(json.loads(r["parents"])), iteration=r["iteration"], child_id=r["child_id"])


def _candidate(r: sqlite3.Row) -> CandidateRecord:
    return CandidateRecord(id=r["id"], crossover_id=r["crossover_id"], iteration=r["iteration"], idx=r["idx"],
                           x=tuple(json.loads(r["x"])), params=json.loads(r["params"]), score=r["score"],
                           failure=r["failure"])


def _mutation(r: sqlite3.Row) -> MutationRecord:
    return MutationRecord(id=r["id"], generation=r["generation"], slot=r["slot"], parent_id=r["parent_id"],
                          operator=json.loads(r["operator"]), child_id=r["child_id"])


# ---------------------------------------------------------------- migration from schema version 1

def _migrate_v1(conn: sqlite3.Connection, run_dir: Path) -> None:
    """Bring a first-release database to version 2 in one transaction (see the module docstring), by SQLite's
    procedure for changing a table: foreign keys off, new table, copy, drop, rename, check, commit."""
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _MUTATIONS_V1.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("CREATE TABLE mutation_steps (mutation_id INTEGER NOT NULL REFERENCES mutations(id), "
                     "step INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (mutation_id, step))")
        for r in conn.execute("SELECT * FROM es_iterations ORDER BY mutation_id, iteration").fetchall():
            data = {k: json.loads(r[k]) for k in ("seeds", "coefficients", "rewards_plus", "rewards_minus")}
            conn.execute("INSERT INTO mutation_steps VALUES (?, ?, ?)",
                         (r["mutation_id"], r["iteration"], json.dumps(data)))
        conn.execute("DROP TABLE es_iterations")
        conn.execute("CREATE TABLE crossovers_v2 (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL, "
                     "slot INTEGER NOT NULL, parents TEXT NOT NULL, iteration INTEGER NOT NULL, child_id INTEGER, "
                     "UNIQUE (generation, slot))")
        conn.execute("INSERT INTO crossovers_v2 SELECT id, generation, slot, parents, iteration, child_id "
                     "FROM crossovers")
        conn.execute("DROP TABLE crossovers")  # and its pickled CMA-ES states, never unpickled
        conn.execute("ALTER TABLE crossovers_v2 RENAME TO crossovers")
        conn.execute("ALTER TABLE candidates RENAME COLUMN fitness TO score")
        conn.execute("ALTER TABLE candidates ADD COLUMN failure TEXT")
        conn.execute("""UPDATE events SET data=replace(data, '"fitness":', '"score":')""")  # the scalar's name
        for r in conn.execute("SELECT id, name, weights FROM members WHERE weights IS NOT NULL").fetchall():
            conn.execute("UPDATE members SET weights=? WHERE id=?",
                         (_relative_weights(r["weights"], r["name"]), r["id"]))
        if conn.execute("PRAGMA foreign_key_check").fetchall():
            raise EvomergeError(f"{run_dir}: the database's records do not reference each other consistently; "
                                "it was not migrated. Fix: open it with the release that created it")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Version 2 to 3 in one transaction: scores gain their outcomes column (NULL: none were kept), and a raced
    run's configuration names the bound it raced with (Wilson's, the default then; `paired` is the default now)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE scores ADD COLUMN outcomes BLOB")
        config = json.loads(conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
        racing = (config.get("crossover") or {}).get("racing")
        if isinstance(racing, dict) and "bound" not in racing:
            racing["bound"] = "wilson"
            conn.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(config),))
        conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """Version 3 to 4 in one transaction: the scores table is rebuilt with `estimator` in its key ('' for every row
    so far: each was computed on the documents it counts) and `se`, and the anchors table is created."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE scores RENAME TO scores_v3")
        for statement in (_SCORES, _ANCHORS):
            conn.execute(statement.strip().rstrip(";"))
        conn.execute("INSERT INTO scores (subject, task, split, metric, lim, fewshot, value, docs, reused_from, "
                     "created, outcomes) SELECT subject, task, split, metric, lim, fewshot, value, docs, reused_from, "
                     "created, outcomes FROM scores_v3")
        conn.execute("DROP TABLE scores_v3")
        conn.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _relative_weights(weights: str, name: str) -> str:
    """A first-release weights path of the run's own members (`<wherever the run was>/members/<name>`) relative to
    the run directory; any other path (a seed's source) as it was."""
    path = Path(weights)
    if path.name == name and path.parent.name == "members":
        return f"members/{name}"
    return weights
