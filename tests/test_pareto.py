"""Selection over several tasks: NSGA-II's fronts and crowding distance, a run whose two tasks conflict (nsga2 keeps
a member no one dominates that elitist drops, and its fronts survive kill -9 and resume), `leaderboard --pareto`,
and Python fitness functions (their scores stored and never computed twice)."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from conftest import POPULATION, evomerge, killed_and_resumed
from evomerge.selection.pareto import crowding, dominates, fronts, rank
from evomerge.store import open_store


def _brute_force_fronts(points: dict) -> list[list[int]]:
    """Fronts by the definition: the members no remaining member dominates, peeled off one front at a time."""
    left, out = {m for m, p in points.items() if p is not None}, []
    while left:
        front = sorted(m for m in left if not any(dominates(points[o], points[m]) for o in left if o != m))
        out.append(front)
        left -= set(front)
    missing = sorted(m for m, p in points.items() if p is None)
    return out + ([missing] if missing else [])


def test_fronts_are_the_non_dominated_layers_and_crowding_favours_the_ends():
    rng = random.Random(0)
    for trial in range(200):
        k = rng.choice([1, 2, 3])
        points = {m: tuple(float(rng.randint(0, 4)) for _ in range(k)) for m in range(rng.randint(1, 12))}
        if trial % 7 == 0:
            points[99] = None  # a member without a score on every task
        assert fronts(points) == _brute_force_fronts(points)
    points = {1: (0.0, 1.0), 2: (0.5, 0.5), 3: (1.0, 0.0), 4: (0.25, 0.8), 5: (0.1, 0.1)}
    assert fronts(points) == [[1, 2, 3, 4], [5]]
    d = crowding(points, [1, 2, 3, 4])
    assert d[1] == d[3] == math.inf and 0 < d[2] < math.inf and 0 < d[4] < math.inf
    assert rank(points)[5] == (1, math.inf)  # alone on its front: an end of every objective


CONFLICT = """\
name: conflict
population: population.yaml
generations: 2
population_size: 3
children_per_generation: 2
parents_per_child: 2
parent_selection: {kind: PARENTS, k: 2}
survivor_selection: {kind: SURVIVORS}
crossover: {method: linear, cma: {sigma0: 0.3, popsize: 2, budget: 4}}
fitness:
  tasks:
    - {python: "toy_fitness:closeness", task: near_a, metric: closeness, args: {reference: MODELS/a}}
    - {python: "toy_fitness:closeness", task: near_b, metric: closeness, args: {reference: MODELS/b}}
seed: 1
"""


def _conflict(tmp_path: Path, models: Path, selection: str) -> Path:
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(models)))
    (tmp_path / "toy_fitness.py").write_text((Path(__file__).parent / "toy_fitness.py").read_text())
    parents = "nsga2" if selection == "nsga2" else "tournament"
    text = CONFLICT.replace("PARENTS", parents).replace("SURVIVORS", selection).replace("MODELS", str(models))
    (tmp_path / f"{selection}.yaml").write_text(text)
    return tmp_path / f"{selection}.yaml"


def _survivors(run_dir: Path) -> list[str]:
    store = open_store(run_dir)
    names = {m.id: m.name for m in store.members()}
    return [names[i] for i in store.survivors(max(store.generations()))]


def test_nsga2_keeps_a_member_no_one_dominates_that_elitist_drops(tiny_models: Path, tmp_path: Path):
    """Closeness to model a and closeness to model b conflict: merges of a and b sit between them, with the best
    weighted sum, so elitist keeps merges and drops a seed; seed a is the only member with the best closeness to a,
    so no member dominates it, and NSGA-II keeps it (an end of the front, infinite crowding distance)."""
    runs = {}
    for selection in ("elitist", "nsga2"):
        pipeline = _conflict(tmp_path, tiny_models / "models", selection)
        runs[selection] = tmp_path / f"run-{selection}"
        result = evomerge("run", str(pipeline), "--run-dir", str(runs[selection]), "--quiet")
        assert result.returncode == 0, result.stderr[-3000:]
    board = json.loads(evomerge("leaderboard", str(runs["nsga2"]), "--pareto", "--format", "json").stdout)
    front = {r["member"] for r in board if r["front"] == 1}
    kept = set(_survivors(runs["nsga2"]))
    dropped_by_elitist = {"a", "b"} - set(_survivors(runs["elitist"]))
    assert dropped_by_elitist, "elitist kept both seeds: the tasks do not conflict in this run"
    assert dropped_by_elitist & kept & front, (kept, front, dropped_by_elitist)
    assert kept <= front  # three survivors, all on the first front
    text = " ".join(evomerge("leaderboard", str(runs["nsga2"]), "--pareto").stdout.split())
    assert "front" in text and "front 1: no member is at least as good on every task" in text


def test_nsga2_fronts_are_the_same_after_kill_9_and_resume(tiny_models: Path, tmp_path: Path):
    reference, killed = killed_and_resumed(_conflict(tmp_path, tiny_models / "models", "nsga2"), tmp_path)
    boards = [json.loads(evomerge("leaderboard", str(d), "--pareto", "--format", "json").stdout)
              for d in (killed, reference)]
    assert [(r["member"], r["front"]) for r in boards[0]] == [(r["member"], r["front"]) for r in boards[1]]


def test_a_python_fitness_function_is_scored_once_per_member_and_split(tiny_pipeline: Path, tmp_path: Path):
    """The shipped held-out log-likelihood beside an lm-eval task, through a wrapper that logs every call: each
    (member or candidate, split) is computed once, and a resume of the finished run computes nothing."""
    log = tmp_path / "calls.jsonl"
    (tiny_pipeline.parent / "toy_fitness.py").write_text((Path(__file__).parent / "toy_fitness.py").read_text())
    text = tiny_pipeline.read_text().replace(
        "tasks: [{task: evomerge_arith, metric: acc}, {task: evomerge_arc_easy, metric: acc}]",
        "tasks: [{task: evomerge_arith, metric: acc}, {python: \"toy_fitness:counted_loglik\", task: text, "
        f"metric: loglik, weight: 0.5, args: {{log: {log}}}}}]").replace("generations: 2", "generations: 1")
    tiny_pipeline.write_text(text)
    run_dir = tmp_path / "run"
    result = evomerge("run", str(tiny_pipeline), "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(run_dir)
    rows = [r for r in store.all_scores() if r.task == "text"]
    assert rows and {r.metric for r in rows} == {"loglik", "perplexity"}
    assert all(r.value < 0 and r.docs == 6 for r in rows if r.metric == "loglik")
    computed = {(r.subject, r.split, r.limit) for r in rows if r.reused_from is None}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == len(computed)  # one call per score computed, none twice
    board = json.loads(evomerge("leaderboard", str(run_dir), "--format", "json").stdout)
    assert all(r["tasks"]["text"] is not None for r in board)
    assert evomerge("resume", str(run_dir), "--quiet").returncode == 0
    assert len(log.read_text().splitlines()) == len(calls)


@pytest.mark.parametrize("python,problem", [("no_such_module:f", "cannot import 'no_such_module:f'"),
                                            ("json:loads_nothing", "cannot import 'json:loads_nothing'"),
                                            ("json", "String should match pattern")])
def test_a_bad_python_fitness_function_is_refused_before_anything_runs(tiny_pipeline: Path, tmp_path: Path,
                                                                        python, problem):
    tiny_pipeline.write_text(tiny_pipeline.read_text().replace(
        "{task: evomerge_arc_easy, metric: acc}", f'{{python: "{python}", task: f, metric: m}}'))
    result = evomerge("run", str(tiny_pipeline), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and problem in result.stderr and "fitness.tasks.1" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()
