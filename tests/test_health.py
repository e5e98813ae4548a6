"""Nothing silent: a member or candidate whose weights or log-likelihoods are not finite fails (marked, with its
reason, never scored as a number, never selected) and the run goes on with the healthy ones."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from conftest import POPULATION, evomerge
from evomerge.records import MemberState
from evomerge.store import open_store

PIPELINE = """\
name: health
population: population.yaml
generations: 1
population_size: 3
children_per_generation: 2
crossover: {method: linear, cma: {sigma0: 0.3, popsize: 2, budget: 2}}
fitness:
  tasks: [{task: evomerge_arith, metric: acc}]
  select: {split: select, limit: 4}
  report: {split: report, limit: 4}
seed: 1
"""


def _broken_copy(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    change(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _setup(tiny_models: Path, root: Path, change, pipeline: str = PIPELINE) -> Path:
    _broken_copy(tiny_models / "models" / "b", root / "b-broken", change)
    (root / "population.yaml").write_text(POPULATION.replace("MODELS/b}", f"{root / 'b-broken'}}}")
                                          .replace("MODELS", str(tiny_models / "models")))
    (root / "pipeline.yaml").write_text(pipeline)
    return root / "pipeline.yaml"


def _two_nans(t: dict) -> None:
    t["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    t["model.layers.2.self_attn.q_proj.weight"][0, 0] = float("nan")


def _overflowing_head(t: dict) -> None:
    t["lm_head.weight"] *= 1e36  # finite weights, infinite logits
    t["model.norm.weight"] *= 1e4


@pytest.mark.parametrize("change,reason", [(_two_nans, "non-finite weights"),
                                           (_overflowing_head, "log-likelihoods are not finite")])
def test_a_broken_seed_fails_and_the_run_goes_on_with_the_healthy_ones(tiny_models: Path, tmp_path: Path, change,
                                                                       reason: str):
    pipeline = _setup(tiny_models, tmp_path, change)
    result = evomerge("run", str(pipeline), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(tmp_path / "run")
    b = store.member("b")
    assert b.state is MemberState.FAILED
    assert [d["reason"] for _, _, d in store.events(kind="member_failed") if d["name"] == "b"][0].find(reason) >= 0
    assert store.scores(f"member:{b.id}", any_limit=True) == []  # never scored as a number
    assert all(b.id not in x.parents for x in store.crossovers())  # never a parent
    assert b.id not in store.survivors(1) and len(store.survivors(1)) == 3
    rows = json.loads(evomerge("leaderboard", str(tmp_path / "run"), "--format", "json").stdout)
    assert rows[-1]["member"] == "b" and rows[-1]["state"] == "failed" and rows[-1]["score"] is None
    assert all(r["score"] is not None for r in rows[:-1])
    status = evomerge("status", str(tmp_path / "run")).stdout
    assert "failed     b: " in status and reason in status


def test_a_diverging_lora_mutant_fails_and_its_parents_survive(tiny_models: Path, tmp_path: Path):
    pipeline = PIPELINE.replace("crossover: {method: linear, cma: {sigma0: 0.3, popsize: 2, budget: 2}}",
                                "parents_per_child: 1\nmutation: {rate: 1, operators: [{kind: lora, "
                                "task: evomerge_arith, steps: 3, batch_size: 2, learning_rate: 1.0e+30}]}")
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    result = evomerge("run", str(tmp_path / "pipeline.yaml"), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(tmp_path / "run")
    mutants = [m for m in store.members() if m.generation == 1]
    assert [m.state for m in mutants] == [MemberState.FAILED, MemberState.FAILED]
    assert all(m.weights is None and not (tmp_path / "run" / "members" / m.name).exists() for m in mutants)
    assert sorted(store.member(i).name for i in store.survivors(1)) == ["a", "b", "base"]
    reasons = [d["reason"] for _, _, d in store.events(kind="member_failed")]
    assert len(reasons) == 2 and all("lora mutant has non-finite weights" in r for r in reasons)
    # an infinite learning rate never gets that far: it is refused with the file and the key
    (tmp_path / "pipeline.yaml").write_text(pipeline.replace("1.0e+30", ".inf"))
    refused = evomerge("run", str(tmp_path / "pipeline.yaml"), "--run-dir", str(tmp_path / "other"))
    assert refused.returncode == 2 and "mutation.operators.0.learning_rate" in refused.stderr
    assert not (tmp_path / "other").exists()


def test_failed_candidates_are_told_the_worst_score_and_never_become_the_child(tiny_models: Path, tmp_path: Path,
                                                                              monkeypatch):
    """Candidates whose merge is not finite (simulated: the executor says so for some) are stored as failed, CMA-ES
    ranks them last, the best healthy candidate becomes the child; if all fail, the child fails and the run goes
    on."""
    from evomerge.evolution import Run
    from evomerge.executor.serial import SerialExecutor
    from evomerge.fitness.lm_eval import Scored

    evaluate = SerialExecutor.evaluate

    def odd_ones_fail(self, job, candidates):
        for cand, scored in evaluate(self, job, candidates):
            if job.slot == 1 or cand.key % 2:
                scored = Scored(results={}, docs={}, lm="", failure="the merge has non-finite weights (test)")
            yield cand, scored

    monkeypatch.setattr(SerialExecutor, "evaluate", odd_ones_fail)
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.replace("budget: 2", "budget: 4"))
    run = Run.start(tmp_path / "pipeline.yaml", run_dir=tmp_path / "run")
    run.run()
    store = run.store
    first, second = store.crossovers()
    cands = store.candidates(first.id)
    assert [c.failure is not None for c in cands] == [c.id % 2 == 1 for c in cands]
    assert all(c.score is None for c in cands if c.failure)
    child = store.member(first.child_id)
    best = next(c for c in cands if c.id == child.params["candidate"])
    assert child.state is not MemberState.FAILED and best.failure is None
    assert best.score == max(c.score for c in cands if c.score is not None)
    assert first.iteration == second.iteration == 2  # every iteration was told, failures included
    assert store.member(second.child_id).state is MemberState.FAILED
    assert second.child_id not in store.survivors(1) and len(store.survivors(1)) == 3
