"""The generational loop on tiny models: kill -9 and resume ends where an uninterrupted run ends; the store keeps
every score once; survivors keep weights, the rest keep recipes; lineage and leaderboard read the store."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from conftest import events_count, evomerge, run_and_kill, snapshot
from evomerge.store import MemberState, Store


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_pipeline: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    assert evomerge("run", str(tiny_pipeline), "--run-dir", str(reference), "--quiet").returncode == 0
    total = events_count(reference / "evomerge.db")

    killed = tmp_path / "killed"
    db = killed / "evomerge.db"
    # kill points spread over the run: during seeding, inside CMA-ES iterations, around survivor selection
    points = [2, total // 4, total // 2, (3 * total) // 4, total - 3]
    assert run_and_kill(["run", str(tiny_pipeline), "--run-dir", str(killed), "--quiet"], db, points[0])
    kills = 1
    for at in points[1:]:
        if events_count(db) >= at:
            continue
        kills += run_and_kill(["resume", str(killed), "--quiet"], db, at)
        status = evomerge("status", str(killed))  # what another terminal sees of a stopped run
        assert status.returncode == 0 and "in progress or stopped" in status.stdout
        assert "now " in status.stdout and "last scores:" in status.stdout
    assert kills >= 4, "the run finished before it could be killed often enough"
    result = evomerge("resume", str(killed), "--quiet")
    assert result.returncode == 0, result.stderr

    assert snapshot(killed) == snapshot(reference)

    store = Store.open(killed)
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
    store = Store.open(run_dir)
    alive = store.members(state=MemberState.ALIVE)
    assert [m.id for m in alive] == sorted(store.survivors(2))
    assert len(alive) == 3
    for m in store.members():
        if m.state is MemberState.ALIVE:
            assert (Path(m.weights) / "config.json").is_file()
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
    path = Path(run.materialise(retired[0]))
    assert (path / "config.json").is_file()
    assert "mergekit_config.yml" in os.listdir(path)


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
    fitness = [r["fitness"] for r in rows]
    assert fitness == sorted(fitness, reverse=True)
    csv_lines = evomerge("leaderboard", str(run_dir), "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("rank,member,gen,operator,state,select (weighted)")
    assert [line.split(",")[1] for line in csv_lines[1:]] == [r["member"] for r in rows]
    report = json.loads(evomerge("leaderboard", str(run_dir), "--split", "report", "--format", "json").stdout)
    assert all(r["fitness"] is not None for r in report)  # every member is scored on the held-out split
    md = evomerge("leaderboard", str(run_dir), "--format", "md").stdout
    assert md.splitlines()[1].startswith("|---")
    status = evomerge("status", str(run_dir))
    assert status.returncode == 0 and "finished" in status.stdout and "generations done 2/2" in status.stdout
