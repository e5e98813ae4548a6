"""Mutation in the generational loop: LoRA and ES mutants in the lineage, small replayable recipes, bit-exact
rebuilds, resume in the middle of an ES mutation, clear errors for bad operators."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import evomerge, run_and_kill, snapshot
from evomerge.records import MemberState
from evomerge.store import open_store

MUTATION = """\
mutation:
  rate: 1.0
  operators:
    - {kind: lora, task: evomerge_arith, steps: 3, batch_size: 4}
    - {kind: es, iterations: 3, pairs: 2, sigma: 0.01, learning_rate: 0.005,
       reward: {kind: loglik, task: evomerge_arith, batch_size: 4}}
"""


@pytest.fixture
def mutation_pipeline(tiny_pipeline: Path) -> Path:
    text = tiny_pipeline.read_text().replace("method: ties, search: [weight, density], layer_group: 2, cma: "
                                             "{sigma0: 0.3, popsize: 3, budget: 6}",
                                             "method: linear, cma: {sigma0: 0.3, popsize: 2, budget: 2}")
    # seed 0 draws ES for g1-c0 and LoRA for g1-c1, so both operators appear
    tiny_pipeline.write_text(text.replace("seed: 3", "seed: 0") + MUTATION)
    return tiny_pipeline


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _recipe_bytes(run_dir: Path, member) -> int:
    size = len(member.recipe.encode())
    if member.operator == "lora":
        size += sum(f.stat().st_size for f in (run_dir / json.loads(member.recipe)["adapter"]).iterdir())
    return size


def test_mutants_are_in_the_lineage_small_and_rebuilt_bit_exactly(mutation_pipeline: Path, tmp_path: Path):
    from evomerge.evolution import Run

    run_dir = tmp_path / "run"
    result = evomerge("run", str(mutation_pipeline), "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr
    store = open_store(run_dir)
    mutants = [m for m in store.members() if m.operator in ("lora", "es")]
    assert {m.operator for m in mutants} == {"lora", "es"}
    for m in mutants:
        parent = store.member(m.parents[0])
        assert parent.operator == "linear" and parent.state is MemberState.INTERMEDIATE and parent.weights is None
        assert _recipe_bytes(run_dir, m) <= 1_000_000

    es_member = next(m for m in mutants if m.operator == "es")
    recipe = json.loads(es_member.recipe)
    assert len(recipe["iterations"]) == 3 and all(len(i["seeds"]) == 2 for i in recipe["iterations"])

    text = evomerge("lineage", str(run_dir), es_member.name).stdout
    assert "[es iterations=3 pairs=2 sigma=0.01 lr=0.005 rank=4 reward=loglik:evomerge_arith]" in text
    assert "[linear weight=" in text
    lora_member = next(m for m in mutants if m.operator == "lora")
    assert "[lora task=evomerge_arith steps=3 r=4 alpha=8" in evomerge("lineage", str(run_dir), lora_member.name).stdout

    # rebuild each mutant from its recipe alone (its weights and its intermediate parent's are gone)
    for m in mutants:
        if m.weights is None:
            continue
        expected = _weights(run_dir / m.weights)
        copy = tmp_path / f"copy-{m.name}"
        shutil.copytree(run_dir, copy)
        run = Run.resume(copy)
        with run.store.transaction():
            run.store.retire(m.id)
        shutil.rmtree(copy / "members" / m.name)
        rebuilt = _weights(Path(run.artifacts.materialise(run.store.member(m.id))))
        assert rebuilt.keys() == expected.keys()
        assert all(torch.equal(rebuilt[k], expected[k]) for k in expected), m.name


def test_resume_in_the_middle_of_an_es_mutation(mutation_pipeline: Path, tmp_path: Path):
    only_es = mutation_pipeline.read_text().replace("    - {kind: lora, task: evomerge_arith, steps: 3, batch_size: 4}\n",
                                                    "").replace("generations: 2", "generations: 1")
    mutation_pipeline.write_text(only_es)
    reference = tmp_path / "reference"
    assert evomerge("run", str(mutation_pipeline), "--run-dir", str(reference), "--quiet").returncode == 0
    store = open_store(reference)
    # the event count after the first ES iteration of the first mutation: kill right there, then resume
    first_iteration = next(i for i, (_, kind, _) in enumerate(store.events(), start=1) if kind == "es_iteration")

    killed = tmp_path / "killed"
    assert run_and_kill(["run", str(mutation_pipeline), "--run-dir", str(killed), "--quiet"],
                        killed / "evomerge.db", first_iteration)
    mid = open_store(killed)
    assert any(kind == "es_iteration" for _, kind, _ in mid.events())
    assert not [m for m in mid.members() if m.operator == "es"], "killed before the mutant was finished"
    assert evomerge("resume", str(killed), "--quiet").returncode == 0

    assert snapshot(killed) == snapshot(reference)
    es_members = [(m.name, m.recipe) for m in open_store(killed).members() if m.operator == "es"]
    assert es_members == [(m.name, m.recipe) for m in store.members() if m.operator == "es"]
    for a, b in zip(sorted((killed / "members").glob("g1-c*")), sorted((reference / "members").glob("g1-c*"))):
        wa, wb = _weights(a), _weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    iterations = Counter((d["mutation"], d["iteration"]) for _, k, d in open_store(killed).events() if k == "es_iteration")
    assert max(iterations.values()) == 1


BAD_OPERATORS = {
    "unknown operator kind": ("{kind: lora, task: evomerge_arith, steps: 3, batch_size: 4}",
                              "{kind: dropout, rate: 0.1}", ["mutation.operators.0", "dropout", "lora", "es"]),
    "es without reward": ("\n       reward: {kind: loglik, task: evomerge_arith, batch_size: 4}}", "}",
                          ["mutation.operators.1.reward", "Field required"]),
    "lora with two data sources": ("{kind: lora, task: evomerge_arith,", "{kind: lora, task: evomerge_arith, data: x.jsonl,",
                                   ["mutation.operators.0", "exactly one of `task`"]),
    "negative sigma": ("sigma: 0.01", "sigma: -0.01", ["mutation.operators.1.sigma", "greater than 0"]),
    "missing reward data": ("reward: {kind: loglik, task: evomerge_arith,", "reward: {kind: loglik, data: nope.jsonl,",
                            ["mutation.operators.1.reward.data", "nope.jsonl", "not a file"]),
    "rate above one": ("rate: 1.0", "rate: 1.5", ["mutation.rate", "less than or equal to 1"]),
}


@pytest.mark.parametrize("case", sorted(BAD_OPERATORS))
def test_bad_operator_config_is_a_clear_error(mutation_pipeline: Path, case: str):
    old, new, words = BAD_OPERATORS[case]
    text = mutation_pipeline.read_text()
    assert old in text
    mutation_pipeline.write_text(text.replace(old, new))
    result = evomerge("run", str(mutation_pipeline), "--run-dir", str(mutation_pipeline.parent / "runs" / "x"))
    assert result.returncode == 2, result.stderr
    assert "\n" not in result.stderr.strip() and "Fix:" in result.stderr
    for word in words:
        assert word in result.stderr, f"{word!r} missing from {result.stderr}"
    assert not (mutation_pipeline.parent / "runs").exists()


def test_mutation_only_pipeline_needs_rate_one(mutation_pipeline: Path):
    text = mutation_pipeline.read_text()
    text = text.replace("crossover: {method: linear, cma: {sigma0: 0.3, popsize: 2, budget: 2}}\n", "")
    mutation_pipeline.write_text(text.replace("rate: 1.0", "rate: 0.5"))
    result = evomerge("run", str(mutation_pipeline), "--run-dir", str(mutation_pipeline.parent / "runs" / "x"))
    assert result.returncode == 2 and "mutation.rate: 1" in result.stderr


def test_ctrl_c_during_a_lora_seed_saves_it_and_resume_goes_on_to_the_same_adapter(tiny_pipeline: Path,
                                                                                   tmp_path: Path):
    """Ctrl-C in the middle of a seed's fine-tune: the step under way finishes and is saved, `status` says
    interrupted, and `evomerge resume` continues the fine-tune from there to the adapter of an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors import safe_open

    population = tiny_pipeline.parent / "population.yaml"
    population.write_text(population.read_text() + "  - {name: c, lora: {parent: base, task: evomerge_arith, "
                                                   "steps: 400, batch_size: 2, r: 2, alpha: 4}}\n")
    tiny_pipeline.write_text(tiny_pipeline.read_text().replace("generations: 2", "generations: 1").replace(
        "children_per_generation: 2", "children_per_generation: 1").replace("budget: 6", "budget: 3"))
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "adapters" / "c" / "checkpoint.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "run", str(tiny_pipeline), "--run-dir",
                             str(run_dir), "--quiet"], env={**os.environ, "EVOMERGE_CHECKPOINT_SECONDS": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not checkpoint.is_file():
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    with safe_open(str(checkpoint), framework="pt") as f:
        saved = int(f.metadata()["steps_done"])
    assert 0 < saved < 400
    status = evomerge("status", str(run_dir)).stdout
    assert "interrupted (Ctrl-C)" in status
    assert evomerge("resume", str(run_dir), "--quiet").returncode == 0
    assert not checkpoint.exists()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.config import LoraSpec
    from evomerge.evolution import Run
    from evomerge.mutation.lora import train_lora

    run = Run.resume(run_dir)
    spec = LoraSpec.model_validate(run.store.member("c").params)
    base = Path(run.store.member("base").weights)
    examples = run.artifacts._bench().scorer.train_examples("evomerge_arith")
    train_lora(AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base), examples, spec,
               adapter_dir=tmp_path / "uninterrupted")
    ours = load_file(run_dir / "adapters" / "c" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "uninterrupted" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


KEEP = """\
name: keep
population: population.yaml
plugins: [toy_plugin]
generations: 1
population_size: 3
children_per_generation: 2
parents_per_child: 2
crossover: {method: linear, cma: {sigma0: 0.3, popsize: 2, budget: 2}}
mutation: {rate: 1, keep: KEEP, operators: [{kind: gaussian_noise, scale: 0.5}]}
fitness:
  tasks: [{python: "toy_fitness:closeness", task: near_a, metric: closeness, args: {reference: MODELS/a}}]
seed: 0
"""


@pytest.mark.parametrize("keep", ["better", "always"])
def test_a_mutant_worse_than_its_merge_does_not_replace_it(tiny_models: Path, tmp_path: Path, keep: str):
    """Fitness = closeness to model a; noise of scale 0.5 takes every mutant far from it. With keep: better each
    merge is the child (written to disk, alive) and its mutant stays in the lineage, retired; with keep: always the
    mutants are the children."""
    from conftest import POPULATION

    here = Path(__file__).parent
    for name in ("toy_plugin.py", "toy_fitness.py"):
        shutil.copy(here / name, tmp_path / name)
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    (tmp_path / "keep.yaml").write_text(KEEP.replace("KEEP", keep).replace("MODELS", str(tiny_models / "models")))
    run_dir = tmp_path / "run"
    result = evomerge("run", str(tmp_path / "keep.yaml"), "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(run_dir)
    rejected = [d for _, kind, d in store.events() if kind == "mutant_rejected"]
    merges = [m for m in store.members() if m.operator == "linear"]
    mutants = [m for m in store.members() if m.operator == "gaussian_noise"]
    assert len(merges) == len(mutants) == 2
    if keep == "better":
        assert len(rejected) == 2 and all(d["mutant_score"] < d["merge_score"] for d in rejected)
        assert all(m.state is MemberState.ALIVE and (run_dir / m.weights / "model.safetensors").is_file()
                   for m in merges)
        assert {m.state for m in mutants} == {MemberState.RETIRED}
        before = snapshot(run_dir)
        assert evomerge("resume", str(run_dir), "--quiet").returncode == 0  # finished: nothing changes
        assert snapshot(run_dir) == before
    else:
        assert not rejected and {m.state for m in merges} == {MemberState.INTERMEDIATE}
    lineage = evomerge("lineage", str(run_dir), (merges if keep == "better" else mutants)[0].name).stdout
    assert "[linear weight=" in lineage
