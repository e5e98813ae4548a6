"""The lineage store: one SQLite file per run (`<run_dir>/evomerge.db`, WAL), the only module that speaks SQL.

Contract: every step of a run (a member added, a CMA-ES ask or tell, a candidate scored, a generation's survivors)
is one transaction, so `kill -9` at any moment leaves the last committed step and nothing half-written.
A score row is written once and never modified: (subject, task, split, metric, limit, fewshot) is its key.
"""
from __future__ import annotations

import enum
import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from evomerge.errors import EvomergeError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE members (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    operator TEXT NOT NULL,            -- seed | lora | <merge method>
    parents TEXT NOT NULL,             -- JSON list of member ids
    params TEXT NOT NULL,              -- JSON: the operator's parameters (merge weights, LoRA settings)
    recipe TEXT NOT NULL,              -- mergekit YAML for merges; JSON for seeds and LoRA fine-tunes
    state TEXT NOT NULL,               -- MemberState
    weights TEXT,                      -- HF model directory, NULL once the member has left the population
    created REAL NOT NULL
);
CREATE TABLE scores (
    subject TEXT NOT NULL,             -- member:<id> or candidate:<id>
    task TEXT NOT NULL, split TEXT NOT NULL, metric TEXT NOT NULL,
    lim INTEGER NOT NULL,              -- document limit, -1 for all
    fewshot INTEGER NOT NULL,
    value REAL NOT NULL, docs INTEGER NOT NULL,
    reused_from TEXT,                  -- a child's select scores are its best candidate's: not computed again
    created REAL NOT NULL,
    PRIMARY KEY (subject, task, split, metric, lim, fewshot)
);
CREATE TABLE crossovers (
    id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL, slot INTEGER NOT NULL,
    parents TEXT NOT NULL,             -- JSON list of member ids
    iteration INTEGER NOT NULL,        -- CMA-ES tells done
    es_state BLOB NOT NULL,            -- pickled cma.CMAEvolutionStrategy
    child_id INTEGER,
    UNIQUE (generation, slot)
);
CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    crossover_id INTEGER NOT NULL REFERENCES crossovers(id),
    iteration INTEGER NOT NULL, idx INTEGER NOT NULL,
    x TEXT NOT NULL,                   -- JSON: the CMA-ES proposal
    params TEXT NOT NULL,              -- JSON: the merge parameters it maps to
    fitness REAL,                      -- weighted select score, NULL until evaluated
    UNIQUE (crossover_id, iteration, idx)
);
CREATE TABLE mutations (
    id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL, slot INTEGER NOT NULL,
    parent_id INTEGER NOT NULL,
    operator TEXT NOT NULL,            -- JSON: the operator's configuration
    child_id INTEGER,
    UNIQUE (generation, slot)
);
CREATE TABLE es_iterations (
    mutation_id INTEGER NOT NULL REFERENCES mutations(id),
    iteration INTEGER NOT NULL,
    seeds TEXT NOT NULL, coefficients TEXT NOT NULL,          -- JSON lists, one entry per antithetic pair
    rewards_plus TEXT NOT NULL, rewards_minus TEXT NOT NULL,
    PRIMARY KEY (mutation_id, iteration)
);
CREATE TABLE generations (generation INTEGER PRIMARY KEY, survivors TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
"""


class MemberState(str, enum.Enum):
    ALIVE = "alive"      # in the current population, weights on disk
    RETIRED = "retired"  # left the population: recipe and scores kept, weights deleted
    INTERMEDIATE = "intermediate"  # a merge that was mutated at once: a step of breeding, never in the population


@dataclass(frozen=True)
class MemberRecord:
    id: int
    name: str
    generation: int
    operator: str
    parents: tuple[int, ...]
    params: dict
    recipe: str
    state: MemberState
    weights: Optional[str]
    created: float


@dataclass(frozen=True)
class CrossoverRecord:
    id: int
    generation: int
    slot: int
    parents: tuple[int, ...]
    iteration: int
    es_state: bytes
    child_id: Optional[int]


@dataclass(frozen=True)
class CandidateRecord:
    id: int
    crossover_id: int
    iteration: int
    idx: int
    x: tuple[float, ...]
    params: dict
    fitness: Optional[float]


@dataclass(frozen=True)
class MutationRecord:
    id: int
    generation: int
    slot: int
    parent_id: int
    operator: dict
    child_id: Optional[int]


@dataclass(frozen=True)
class ScoreRow:
    subject: str
    task: str
    split: str
    metric: str
    limit: Optional[int]
    fewshot: int
    value: float
    docs: int
    reused_from: Optional[str]


def by_task(rows: list[ScoreRow]) -> dict[str, dict[str, float]]:
    """Score rows as task -> metric -> value."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        out.setdefault(r.task, {})[r.metric] = r.value
    return out


def member_subject(member_id: int) -> str:
    return f"member:{member_id}"


def candidate_subject(candidate_id: int) -> str:
    return f"candidate:{candidate_id}"


class Store:
    """A run's SQLite database. Use `Store.create` for a new run and `Store.open` for an existing one."""

    FILENAME = "evomerge.db"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, run_dir: Path, *, config: dict) -> "Store":
        path = Path(run_dir) / cls.FILENAME
        conn = cls._connect(path)
        with conn:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("config", json.dumps(config)), ("created", str(time.time())),
            ])
        return cls(conn, path)

    @classmethod
    def open(cls, run_dir: Path) -> "Store":
        path = Path(run_dir) / cls.FILENAME
        if not path.is_file():
            raise EvomergeError(f"{run_dir} is not an evomerge run directory (no {cls.FILENAME} in it). "
                                "Fix: give the directory that `evomerge run` printed, e.g. runs/demo-20261123-120000")
        conn = cls._connect(path)
        version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise EvomergeError(f"{path} has schema version {version}; this evomerge reads version {SCHEMA_VERSION}. "
                                "Fix: use the evomerge version that created the run")
        return cls(conn, path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed step survives power loss, not only kill -9
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        return conn

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One step of a run: everything inside commits together or not at all."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def config(self) -> dict:
        return json.loads(self._conn.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])

    # ------------------------------------------------------------ members

    def add_member(self, *, name: str, generation: int, operator: str, parents: tuple[int, ...], params: dict,
                   recipe: str, weights: Optional[str]) -> int:
        cur = self._conn.execute(
            "INSERT INTO members (name, generation, operator, parents, params, recipe, state, weights, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, generation, operator, json.dumps(list(parents)), json.dumps(params), recipe,
             MemberState.ALIVE.value, weights, time.time()))
        return int(cur.lastrowid)

    def retire(self, member_id: int, *, state: MemberState = MemberState.RETIRED) -> None:
        """Drop a member's weights (its recipe and scores stay): it left the population, or was an intermediate."""
        self._conn.execute("UPDATE members SET state=?, weights=NULL WHERE id=?", (state.value, member_id))

    def set_weights(self, member_id: int, weights: Optional[str]) -> None:
        self._conn.execute("UPDATE members SET weights=? WHERE id=?", (weights, member_id))

    def member(self, key: int | str) -> Optional[MemberRecord]:
        col = "id" if isinstance(key, int) else "name"
        row = self._conn.execute(f"SELECT * FROM members WHERE {col}=?", (key,)).fetchone()
        return _member(row) if row else None

    def members(self, *, state: Optional[MemberState] = None) -> list[MemberRecord]:
        if state is None:
            rows = self._conn.execute("SELECT * FROM members ORDER BY id").fetchall()
        else:
            rows = self._conn.execute("SELECT * FROM members WHERE state=? ORDER BY id", (state.value,)).fetchall()
        return [_member(r) for r in rows]

    # ------------------------------------------------------------ scores

    def add_scores(self, subject: str, *, split: str, limit: Optional[int], fewshot: int,
                   results: dict[str, dict[str, float]], docs: dict[str, int],
                   reused_from: Optional[str] = None) -> None:
        """results: task -> metric -> value. Raises sqlite3.IntegrityError if a score already exists."""
        now = time.time()
        self._conn.executemany(
            "INSERT INTO scores (subject, task, split, metric, lim, fewshot, value, docs, reused_from, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(subject, task, split, metric, -1 if limit is None else limit, fewshot, float(value), docs[task],
              reused_from, now)
             for task, metrics in results.items() for metric, value in metrics.items()])

    def scores(self, subject: str, *, split: Optional[str] = None, limit: Optional[int] = None,
               fewshot: Optional[int] = None, any_limit: bool = False) -> list[ScoreRow]:
        sql, args = "SELECT * FROM scores WHERE subject=?", [subject]
        if split is not None:
            sql, args = sql + " AND split=?", args + [split]
        if not any_limit:
            sql, args = sql + " AND lim=?", args + [-1 if limit is None else limit]
        if fewshot is not None:
            sql, args = sql + " AND fewshot=?", args + [fewshot]
        return [_score(r) for r in self._conn.execute(sql + " ORDER BY task, metric", args)]

    def all_scores(self) -> list[ScoreRow]:
        return [_score(r) for r in self._conn.execute("SELECT * FROM scores ORDER BY subject, task, split, metric")]

    # ------------------------------------------------------------ crossovers and their CMA-ES candidates

    def add_crossover(self, *, generation: int, slot: int, parents: tuple[int, ...], es_state: bytes) -> int:
        cur = self._conn.execute(
            "INSERT INTO crossovers (generation, slot, parents, iteration, es_state) VALUES (?, ?, ?, 0, ?)",
            (generation, slot, json.dumps(list(parents)), es_state))
        return int(cur.lastrowid)

    def crossover(self, generation: int, slot: int) -> Optional[CrossoverRecord]:
        row = self._conn.execute("SELECT * FROM crossovers WHERE generation=? AND slot=?", (generation, slot)).fetchone()
        return _crossover(row) if row else None

    def crossovers(self) -> list[CrossoverRecord]:
        return [_crossover(r) for r in self._conn.execute("SELECT * FROM crossovers ORDER BY id")]

    def update_crossover(self, crossover_id: int, *, iteration: Optional[int] = None, es_state: Optional[bytes] = None,
                         child_id: Optional[int] = None) -> None:
        for col, value in (("iteration", iteration), ("es_state", es_state), ("child_id", child_id)):
            if value is not None:
                self._conn.execute(f"UPDATE crossovers SET {col}=? WHERE id=?", (value, crossover_id))

    def add_candidates(self, crossover_id: int, iteration: int, proposals: list[tuple[list[float], dict]]) -> None:
        self._conn.executemany(
            "INSERT INTO candidates (crossover_id, iteration, idx, x, params) VALUES (?, ?, ?, ?, ?)",
            [(crossover_id, iteration, i, json.dumps(x), json.dumps(p)) for i, (x, p) in enumerate(proposals)])

    def set_candidate_fitness(self, candidate_id: int, fitness: float) -> None:
        self._conn.execute("UPDATE candidates SET fitness=? WHERE id=?", (fitness, candidate_id))

    def candidates(self, crossover_id: int, *, iteration: Optional[int] = None) -> list[CandidateRecord]:
        sql, args = "SELECT * FROM candidates WHERE crossover_id=?", [crossover_id]
        if iteration is not None:
            sql, args = sql + " AND iteration=?", args + [iteration]
        return [_candidate(r) for r in self._conn.execute(sql + " ORDER BY iteration, idx", args)]

    # ------------------------------------------------------------ mutations and their ES iterations

    def add_mutation(self, *, generation: int, slot: int, parent_id: int, operator: dict) -> int:
        cur = self._conn.execute("INSERT INTO mutations (generation, slot, parent_id, operator) VALUES (?, ?, ?, ?)",
                                 (generation, slot, parent_id, json.dumps(operator)))
        return int(cur.lastrowid)

    def mutation(self, generation: int, slot: int) -> Optional[MutationRecord]:
        r = self._conn.execute("SELECT * FROM mutations WHERE generation=? AND slot=?", (generation, slot)).fetchone()
        if r is None:
            return None
        return MutationRecord(id=r["id"], generation=r["generation"], slot=r["slot"], parent_id=r["parent_id"],
                              operator=json.loads(r["operator"]), child_id=r["child_id"])

    def set_mutation_child(self, mutation_id: int, child_id: int) -> None:
        self._conn.execute("UPDATE mutations SET child_id=? WHERE id=?", (child_id, mutation_id))

    def add_es_iteration(self, mutation_id: int, iteration: int, *, seeds, coefficients, rewards_plus,
                         rewards_minus) -> None:
        self._conn.execute("INSERT INTO es_iterations VALUES (?, ?, ?, ?, ?, ?)",
                           (mutation_id, iteration, json.dumps(list(seeds)), json.dumps(list(coefficients)),
                            json.dumps(list(rewards_plus)), json.dumps(list(rewards_minus))))

    def es_iterations(self, mutation_id: int) -> list[dict]:
        rows = self._conn.execute("SELECT * FROM es_iterations WHERE mutation_id=? ORDER BY iteration", (mutation_id,))
        return [{"iteration": r["iteration"], "seeds": json.loads(r["seeds"]),
                 "coefficients": json.loads(r["coefficients"]), "rewards_plus": json.loads(r["rewards_plus"]),
                 "rewards_minus": json.loads(r["rewards_minus"])} for r in rows]

    # ------------------------------------------------------------ generations and events

    def set_survivors(self, generation: int, survivors: list[int]) -> None:
        self._conn.execute("INSERT INTO generations VALUES (?, ?, ?)", (generation, json.dumps(survivors), time.time()))

    def survivors(self, generation: int) -> Optional[list[int]]:
        row = self._conn.execute("SELECT survivors FROM generations WHERE generation=?", (generation,)).fetchone()
        return json.loads(row[0]) if row else None

    def add_event(self, kind: str, **data: Any) -> None:
        self._conn.execute("INSERT INTO events (time, kind, data) VALUES (?, ?, ?)", (time.time(), kind, json.dumps(data)))

    def events(self, *, kind: Optional[str] = None, last: Optional[int] = None) -> list[tuple[float, str, dict]]:
        sql, args = "SELECT time, kind, data FROM events", []
        if kind is not None:
            sql, args = sql + " WHERE kind=?", [kind]
        sql += " ORDER BY id DESC" if last else " ORDER BY id"
        if last:
            sql += f" LIMIT {int(last)}"
        rows = [(r[0], r[1], json.loads(r[2])) for r in self._conn.execute(sql, args)]
        return rows[::-1] if last else rows

    # ------------------------------------------------------------ whole-run reads (reports)

    def all_candidates(self) -> list[CandidateRecord]:
        """Every CMA-ES candidate of the run, by crossover, iteration and index."""
        return [_candidate(r) for r in
                self._conn.execute("SELECT * FROM candidates ORDER BY crossover_id, iteration, idx")]

    def mutations(self) -> list[MutationRecord]:
        """Every mutation of the run; none in a run made before mutation existed (its file has no such table)."""
        if not self._has_table("mutations"):
            return []
        return [MutationRecord(id=r["id"], generation=r["generation"], slot=r["slot"], parent_id=r["parent_id"],
                               operator=json.loads(r["operator"]), child_id=r["child_id"])
                for r in self._conn.execute("SELECT * FROM mutations ORDER BY id")]

    def generations(self) -> dict[int, list[int]]:
        """generation -> its survivors (member ids), for every finished generation."""
        rows = self._conn.execute("SELECT generation, survivors FROM generations ORDER BY generation")
        return {r[0]: json.loads(r[1]) for r in rows}

    def _has_table(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None


def _member(r: sqlite3.Row) -> MemberRecord:
    return MemberRecord(id=r["id"], name=r["name"], generation=r["generation"], operator=r["operator"],
                        parents=tuple(json.loads(r["parents"])), params=json.loads(r["params"]), recipe=r["recipe"],
                        state=MemberState(r["state"]), weights=r["weights"], created=r["created"])


def _score(r: sqlite3.Row) -> ScoreRow:
    return ScoreRow(subject=r["subject"], task=r["task"], split=r["split"], metric=r["metric"],
                    limit=None if r["lim"] < 0 else r["lim"], fewshot=r["fewshot"], value=r["value"], docs=r["docs"],
                    reused_from=r["reused_from"])


def _crossover(r: sqlite3.Row) -> CrossoverRecord:
    return CrossoverRecord(id=r["id"], generation=r["generation"], slot=r["slot"],
                           parents=tuple(json.loads(r["parents"])), iteration=r["iteration"],
                           es_state=bytes(r["es_state"]), child_id=r["child_id"])


def _candidate(r: sqlite3.Row) -> CandidateRecord:
    return CandidateRecord(id=r["id"], crossover_id=r["crossover_id"], iteration=r["iteration"], idx=r["idx"],
                           x=tuple(json.loads(r["x"])), params=json.loads(r["params"]), fitness=r["fitness"])
