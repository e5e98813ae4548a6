"""The generational loop on tiny models: kill -9 and resume ends where an uninterrupted run ends; the store keeps
every score once; survivors keep weights, the rest keep recipes; lineage and leaderboard read the store."""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from conftest import events_count, evomerge, run_and_kill, snapshot
from evomerge.records import MemberState
from evomerge.store import open_store


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_pipeline: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    assert evomerge("run", str(tiny_pipeline), "--run-dir", str(reference), "--quiet").returncode == 0
    total = events_count(reference / "evomerge.db")

    killed = tmp_path / "killed"
    db = killed / "evomerge.db"
    # kill points spread over the run (during seeding, inside CMA-ES iterations, around survivor selection), and one
    # on purpose between a CMA-ES ask and its tell: one candidate of a second iteration scored, the others not
    asks = [i for i, (_, kind, d) in enumerate(open_store(reference).events(), start=1)
            if kind == "cma_ask" and d["iteration"] == 1]
    points = sorted({2, total // 4, asks[1] + 1, total // 2, (3 * total) // 4, total - 3})
    assert run_and_kill(["run", str(tiny_pipeline), "--run-dir", str(killed), "--quiet"], db, points[0])
    kills = 1
    for at in points[1:]:
        if events_count(db) >= at:
            continue
        kills += run_and_kill(["resume", str(killed), "--quiet"], db, at)
        status = evomerge("status", str(killed))  # what another terminal sees of a stopped run
        assert status.returncode == 0 and "in progress or stopped" in status.stdout
        assert "now " in status.stdout and "last scores:" in status.stdout
    assert kills >= 5, "the run finished before it could be killed often enough"
    # the last resume: after the directory was moved, from another working directory, with an alive member's
    # weights deleted (rebuilt from its recipe)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(killed, moved)
    killed = moved
    alive = [m for m in open_store(killed).members(state=MemberState.ALIVE) if m.generation > 0]
    if alive:
        shutil.rmtree(killed / alive[0].weights)
    result = evomerge("resume", str(killed), "--quiet", cwd=tmp_path / "elsewhere")
    assert result.returncode == 0, result.stderr

    assert snapshot(killed) == snapshot(reference)

    store = open_store(killed)
    scored = Counter((d["subject"], d["split"]) for _, _, d in store.events(kind="scored"))
    assert scored and max(scored.values()) == 1, "a score was computed twice"
    assert len(store.events(kind="run_finished")) == 1
    assert not any(p.name.startswith(".tmp-") for p in (killed / "members").iterdir())


@pytest.fixture(scope="module")
def finished_run(tiny_models: Path, tmp_path_factory) -> Path:
    """One finished run of the tiny pipeline, shared by the tests that only read it."""
    from conftest import PIPELINE, POPULATION

    root = tmp_path_factory.mktemp("finished")
    (root / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    (root / "pipeline.yaml").write_text(PIPELINE)
    result = evomerge("run", str(root / "pipeline.yaml"), "--run-dir", str(root / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_survivors_keep_weights_and_the_others_only_their_recipe(finished_run: Path):
    run_dir = finished_run
    store = open_store(run_dir)
    alive = store.members(state=MemberState.ALIVE)
    assert [m.id for m in alive] == sorted(store.survivors(2))
    assert len(alive) == 3
    for m in store.members():
        if m.state is MemberState.ALIVE:
            assert (run_dir / m.weights / "config.json").is_file()  # relative to the run directory
        else:
            assert m.weights is None
            assert not (run_dir / "members" / m.name).exists()
            assert m.recipe  # can be rebuilt
    children = [m for m in store.members() if m.generation > 0]
    assert len(children) == 4
    for child in children:
        assert "merge_method: ties" in child.recipe
        # its select score is its best CMA-ES candidate's, reused, not recomputed
        rows = store.scores(f"member:{child.id}", split="select", limit=6, fewshot=0)
        assert rows and all(r.reused_from == f"candidate:{child.params['candidate']}" for r in rows)


def test_a_retired_member_is_rebuilt_from_its_recipe(finished_run: Path, tmp_path: Path):
    import shutil

    from evomerge.evolution import Run

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    run = Run.resume(run_dir)
    retired = [m for m in run.store.members(state=MemberState.RETIRED) if m.generation > 0]
    if not retired:
        pytest.skip("every child survived with this seed")
    path = Path(run.artifacts.materialise(retired[0]))
    assert (path / "config.json").is_file()
    assert "mergekit_config.yml" in os.listdir(path)
    run.artifacts.discard_rebuilt()  # a rebuilt member outside the population does not stay
    assert not path.exists()


def test_lineage_shows_the_tree_to_the_seeds_with_operator_and_parameters(finished_run: Path):
    run_dir = finished_run
    text = evomerge("lineage", str(run_dir))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "select" in lines[0]
    assert any("[ties weight=" in line and "density=" in line for line in lines)
    assert any(line.rstrip().endswith(tuple("0123456789")) and "source=" in line for line in lines)  # a seed leaf
    dot = evomerge("lineage", str(run_dir), "g2-c0", "--format", "dot")
    assert dot.stdout.startswith("digraph lineage {") and "->" in dot.stdout and 'label="ties weight=' in dot.stdout
    unknown = evomerge("lineage", str(run_dir), "nobody")
    assert unknown.returncode == 2 and "no member named 'nobody'" in unknown.stderr


def test_leaderboard_formats_agree(finished_run: Path):
    run_dir = finished_run
    rows = json.loads(evomerge("leaderboard", str(run_dir), "--format", "json").stdout)
    assert len(rows) == 7  # 3 seeds + 2 generations x 2 children
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    csv_lines = evomerge("leaderboard", str(run_dir), "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("rank,member,gen,operator,state,select (weighted)")
    assert [line.split(",")[1] for line in csv_lines[1:]] == [r["member"] for r in rows]
    report = json.loads(evomerge("leaderboard", str(run_dir), "--split", "report", "--format", "json").stdout)
    assert all(r["score"] is not None for r in report)  # every member is scored on the held-out split
    md = evomerge("leaderboard", str(run_dir), "--format", "md").stdout
    assert md.splitlines()[1].startswith("|---")
    status = evomerge("status", str(run_dir))
    assert status.returncode == 0 and "finished" in status.stdout and "generations done 2/2" in status.stdout


@pytest.mark.parametrize("engine,lm", [("reference", "HFLM"), ("fast", "FastLM")])
def test_the_engine_setting_picks_the_scorer_of_a_new_and_of_a_resumed_run(tiny_pipeline: Path, tmp_path: Path,
                                                                         engine: str, lm: str):
    from evomerge.evolution import Run

    text = tiny_pipeline.read_text().replace("generations: 2", "generations: 1").replace(
        "children_per_generation: 2", "children_per_generation: 1").replace("budget: 6", "budget: 3")
    tiny_pipeline.write_text(text + f"engine: {engine}\n")
    fresh = Run.start(tiny_pipeline, run_dir=tmp_path / "fresh")
    fresh.run()
    Run.start(tiny_pipeline, run_dir=tmp_path / "resumed")  # created, then every step done by a resumed Run
    resumed = Run.resume(tmp_path / "resumed")
    resumed.run()
    for run in (fresh, resumed):
        scored = [d for _, _, d in run.store.events(kind="scored")]
        assert len(scored) == 3 * 2 + 3 + 1  # seeds on both splits, 3 candidates, the child's report
        assert {d["lm"] for d in scored} == {lm}


def test_a_second_process_is_kept_out_of_a_running_run(tiny_pipeline: Path, tmp_path: Path):
    """While `evomerge run` works in a directory, `evomerge resume` of it is refused at once and touches nothing;
    the first process finishes as if alone."""
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "run", str(tiny_pipeline), "--run-dir",
                              str(run_dir), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while events_count(run_dir / "evomerge.db") < 12 and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the run finished before a second process could try"
    second = evomerge("resume", str(run_dir), "--quiet")
    assert second.returncode == 2 and "is being run by evomerge pid" in second.stderr, second.stderr
    assert "\n" not in second.stderr.strip()
    for command in ("status", "leaderboard", "lineage", "check"):  # reading needs no lock
        assert evomerge(command, str(run_dir)).returncode == 0, command
    assert first.wait(timeout=600) == 0, first.stderr.read()
    store = open_store(run_dir)
    assert len(store.events(kind="run_finished")) == 1
    scored = Counter((d["subject"], d["split"]) for _, _, d in store.events(kind="scored"))
    assert max(scored.values()) == 1


def test_the_largest_seed_runs(tiny_pipeline: Path, tmp_path: Path):
    """The first release crashed at the first crossover from seed 42949 on (its CMA-ES seed passed 2**32)."""
    text = tiny_pipeline.read_text().replace("generations: 2", "generations: 1").replace(
        "children_per_generation: 2", "children_per_generation: 1").replace("budget: 6", "budget: 3").replace(
        "method: ties", "method: dare_ties").replace("seed: 3", "seed: 4294967295")
    tiny_pipeline.write_text(text)
    result = evomerge("run", str(tiny_pipeline), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert open_store(tmp_path / "run").member("g1-c0").params["seed"] == 4294967295


def test_check_makes_a_killed_run_copyable_and_finds_what_cannot_be_rebuilt(tiny_pipeline: Path, tmp_path: Path):
    import shutil

    population = tiny_pipeline.parent / "population.yaml"
    population.write_text(population.read_text() + "  - {name: c, lora: {parent: a, task: evomerge_arith, steps: 2, "
                                                   "batch_size: 2, r: 2, alpha: 4}}\n")
    run_dir = tmp_path / "run"
    assert run_and_kill(["run", str(tiny_pipeline), "--run-dir", str(run_dir), "--quiet"], run_dir / "evomerge.db", 30)
    events = events_count(run_dir / "evomerge.db")
    check = evomerge("check", str(run_dir))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "database   ok" in check.stdout
    alone = tmp_path / "copy"
    alone.mkdir()
    shutil.copy(run_dir / "evomerge.db", alone / "evomerge.db")  # the database file alone, no -wal
    assert events_count(alone / "evomerge.db") == events
    shutil.rmtree(run_dir / "adapters" / "c")
    broken = evomerge("check", str(run_dir))
    assert broken.returncode == 2 and "problem    c: " in broken.stdout and "cannot be rebuilt" in broken.stdout


def test_a_damaged_or_foreign_database_is_a_clear_error(tmp_path: Path):
    import sqlite3

    damaged, foreign = tmp_path / "damaged", tmp_path / "foreign"
    damaged.mkdir(), foreign.mkdir()
    (damaged / "evomerge.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    with sqlite3.connect(foreign / "evomerge.db") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    for run_dir in (damaged, foreign):
        for command in (["status"], ["leaderboard"], ["lineage"], ["report"], ["check"], ["resume", "--quiet"]):
            result = evomerge(command[0], str(run_dir), *command[1:])
            assert result.returncode == 2, (command, result.stderr)
            assert "Traceback" not in result.stderr and str(run_dir / "evomerge.db") in result.stderr
