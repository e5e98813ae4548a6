"""Results do not change by accident: the golden runs (tests/golden/record.py: every merge method, LoRA and ES with
each reward, intermediates, a mutation-only run) end with the recorded lineage, parameters and every score; so do
the same runs on the in-memory store, and runs of the first release resumed by this one."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import evomerge

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
from record import PIPELINES, write_pipelines  # noqa: E402
from snapshot import run_snapshot  # noqa: E402

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden" / "lineage.json").read_text())
# what the first release's runs ended on, as it recorded them (commit efa150d): runs it made must still end there
FIRST_RELEASE = json.loads((Path(__file__).resolve().parent / "golden" / "first-release.json").read_text())
DATA = Path(__file__).resolve().parent / "data"


def _rounded(value):
    """Every float of a snapshot to 12 significant digits: what a change in the last bits of a sum leaves alike."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _copied(fixture: Path, run_dir: Path, was: str, models: Path) -> Path:
    """A stored run copied to `run_dir`, its seeds' paths (`was`) pointed at this test's tiny models."""
    shutil.copytree(fixture, run_dir)
    with sqlite3.connect(run_dir / "evomerge.db") as conn:
        conn.execute("UPDATE meta SET value=replace(value, ?, ?)", (was, str(models)))
        for column in ("weights", "recipe", "params"):
            conn.execute(f"UPDATE members SET {column}=replace({column}, ?, ?)", (was, str(models)))
    return run_dir


def _snapshot(store, models: Path) -> dict:
    return json.loads(json.dumps(run_snapshot(store)).replace(str(models), "<models>"))


@pytest.fixture(scope="module")
def golden_runs(tiny_models: Path, tmp_path_factory) -> dict[str, Path]:
    """Every golden pipeline, run once in this process."""
    from evomerge.evolution import Run

    root = tmp_path_factory.mktemp("golden")
    pipelines = write_pipelines(root, tiny_models / "models")
    for name, pipeline in pipelines.items():
        run = Run.start(pipeline, run_dir=root / name)
        run.run()
        run.store.close()
    return {name: root / name for name in pipelines}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_a_run_reproduces_the_golden_lineage_and_scores(golden_runs: dict[str, Path], tiny_models: Path, name: str):
    from evomerge.store import open_store

    assert _snapshot(open_store(golden_runs[name]), tiny_models / "models") == GOLDEN[name]


# every kind of member, retired ones (rebuilt from their recipes) where the golden runs have them
EXPORTS = [("linear", "base"), ("linear", "g1-c1"), ("linear", "g2-c1"), ("linear", "g2-c0-merge"),
           ("ties", "g1-c1"), ("ties", "g2-c1"), ("dare_ties", "g1-c0"), ("dare_ties", "g2-c0"),
           ("task_arithmetic", "g1-c0"), ("slerp", "g1-c1"), ("slerp", "g2-c1"), ("mutation_only", "g1-c1")]


@pytest.mark.parametrize("name,member", EXPORTS)
def test_every_kind_of_member_exports_and_rebuilds_without_the_run_directory(golden_runs: dict[str, Path],
                                                                             tmp_path: Path, name: str, member: str):
    """Export a member (seed, merge of every method, LoRA, ES with every reward, intermediate, retired ones rebuilt
    from their recipes), move the run directory away, rebuild the member from the export alone and compare: within
    1e-6 in float32, bit-exact for ES. A merge's mergekit_config.yml rebuilds it from another working directory."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from evomerge.cli import main
    from evomerge.records import MemberState
    from evomerge.registry import CROSSOVERS
    from evomerge.store import open_store

    run_dir = golden_runs[name]
    store = open_store(run_dir)
    record = store.member(member)
    alive = sorted(m.name for m in store.members(state=MemberState.ALIVE) if m.operator != "seed")
    store.close()
    out = tmp_path / "out"
    assert main(["export", str(run_dir), member, str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4
    # rebuilt ancestors do not stay: members/ holds the alive members' weights only
    assert sorted(p.name for p in (run_dir / "members").iterdir()) == alive
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir() if p.is_file())  # readable by others too
    recipe = json.loads((out / "evomerge_recipe.json").read_text())
    assert recipe["member"] == member and member in [m["name"] for m in recipe["members"]]

    moved = run_dir.with_name(run_dir.name + "-moved")
    run_dir.rename(moved)  # the export alone
    try:
        assert main(["rebuild", str(out), str(tmp_path / "again")]) == 0
    finally:
        moved.rename(run_dir)
    ours, again = load_file(out / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert ours.keys() == again.keys()
    if record.operator == "es":
        assert all(torch.equal(ours[k], again[k]) for k in ours)
    else:
        assert max(float((ours[k] - again[k]).abs().max()) for k in ours) <= 1e-6
    if record.operator in CROSSOVERS:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        subprocess.run([str(Path(sys.executable).parent / "mergekit-yaml"), str(out / "mergekit_config.yml"),
                        "rebuilt", "--random-seed", str(record.params["seed"])], check=True, capture_output=True,
                       cwd=elsewhere)
        theirs = load_file(elsewhere / "rebuilt" / "model.safetensors")
        assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 1e-6


def test_the_in_memory_store_gives_the_same_run(tiny_models: Path, tmp_path: Path):
    from evomerge.evolution import Run

    pipelines = write_pipelines(tmp_path, tiny_models / "models")
    run = Run.start(pipelines["ties"], run_dir=tmp_path / "run", store="memory")
    run.run()
    assert not (tmp_path / "run" / "evomerge.db").exists()
    assert _snapshot(run.store, tiny_models / "models") == GOLDEN["ties"]


@pytest.mark.parametrize("fixture,golden", [("v1-linear", "linear"), ("v1-ties", "ties")])
def test_a_first_release_run_resumes_to_the_golden_end_and_reports(tiny_models: Path, tmp_path: Path, fixture: str,
                                                                   golden: str):
    """Runs made and killed by the first release (21fa5e4), stored without their members' weights: v1-linear was
    killed between a CMA-ES ask and its tell, v1-ties in the middle of a noise-ES mutation. Their models were at
    /tmp/v1fix/models; here they are elsewhere, so the paths are pointed at this test's copies first."""
    run_dir = _copied(DATA / fixture, tmp_path / "run", "/tmp/v1fix/models", tiny_models / "models")
    result = evomerge("resume", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    from evomerge.store import open_store

    # settings added since have the values that keep such a run doing what it did (noise ES evaluated in place)
    added = {"evaluation": "in_place", "pairs_per_forward": 1}
    snapshot = _snapshot(open_store(run_dir), tiny_models / "models")
    for operator in [m["operator"] for m in snapshot["mutations"]] + [m["params"] for m in snapshot["members"]]:
        if operator.get("kind") == "es":
            assert {k: operator.pop(k) for k in added if k in operator} in ({}, added)
    # the first release summed weighted scores in floating point (0.20000000000000004); they are exact now (0.2)
    assert _rounded(snapshot) == _rounded(FIRST_RELEASE[golden])
    report = evomerge("report", str(run_dir), "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report.html").stat().st_size > 10_000
    board = json.loads(evomerge("leaderboard", str(run_dir), "--format", "json").stdout)
    assert board and all(r["score"] is not None for r in board)


def test_a_crash_between_a_cma_es_ask_and_its_tell_resumes_exactly(tiny_models: Path, tmp_path: Path,
                                                                    monkeypatch):
    """The run dies after the first candidate of a CMA-ES iteration (its proposals are asked and stored, the tell is
    not); another process resumes it and must tell what the uninterrupted run told."""
    from evomerge.evolution import Run
    from evomerge.executor.serial import SerialExecutor

    evaluate, done = SerialExecutor.evaluate, []

    def dies_after_four(self, job, candidates):
        for item in evaluate(self, job, candidates):
            if len(done) == 4:
                raise KeyboardInterrupt("killed between an ask and its tell")
            done.append(item)
            yield item

    monkeypatch.setattr(SerialExecutor, "evaluate", dies_after_four)
    pipelines = write_pipelines(tmp_path, tiny_models / "models")
    with pytest.raises(KeyboardInterrupt):
        Run.start(pipelines["ties"], run_dir=tmp_path / "run").run()
    from evomerge.store import open_store

    store = open_store(tmp_path / "run")
    x = store.crossovers()[0]
    assert x.iteration == 1 and [c.score is None for c in store.candidates(x.id, iteration=1)] == [False, True, True]
    result = evomerge("resume", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _snapshot(open_store(tmp_path / "run"), tiny_models / "models") == GOLDEN["ties"]


def test_a_v2_run_opens_resumes_reports_and_says_its_old_scores_have_no_outcomes(tiny_models: Path, tmp_path: Path):
    """tests/data/v2-racing/evomerge.db was written by the release before per-document outcomes (f120ffe, schema 2):
    a raced TIES run of the tiny models (then at /tmp/v2fix/models; racing with the default bound of then, Wilson's)
    killed in generation 2's first crossover, stored without its children's weights. That release, left to finish
    the same run, kept g1-c0, g2-c1, g1-c1 after generation 2, g2-c1 from candidate 21: resumed here, the run ends
    there too, its new scores have outcomes and its old ones say that they have none."""
    run_dir = _copied(DATA / "v2-racing", tmp_path / "run", "/tmp/v2fix/models", tiny_models / "models")
    result = evomerge("resume", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    from evomerge.evolution import open_config
    from evomerge.store import open_store

    store = open_store(run_dir)
    assert open_config(store).pipeline.crossover.racing.bound == "wilson"  # what it raced with, kept by the migration
    names = {m.id: m.name for m in store.members()}
    assert {g: [names[i] for i in s] for g, s in store.generations().items()} == {
        1: ["g1-c0", "g1-c1", "base"], 2: ["g1-c0", "g2-c1", "g1-c1"]}
    assert store.member("g2-c1").params["candidate"] == 21
    report_rows = {names[int(r.subject.split(":")[1])]: r for r in store.all_scores()
                   if r.subject.startswith("member") and r.split == "report" and r.metric == "acc"}
    assert report_rows["g1-c0"].packed is None and report_rows["g2-c1"].packed is not None
    old = evomerge("compare", str(run_dir), "g1-c0", "base")
    assert old.returncode == 0 and "have no per-document outcomes" in old.stdout and "independent" in old.stdout
    assert "no paired" in old.stdout
    board = evomerge("leaderboard", str(run_dir), "--split", "report")
    assert board.returncode == 0 and "±" in board.stdout and "no per-document outcomes to pair" in board.stdout
    report = evomerge("report", str(run_dir), "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    assert evomerge("lineage", str(run_dir), "g2-c1").stdout.count("±") >= 3
