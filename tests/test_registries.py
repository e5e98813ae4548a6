"""Extension points: a plugin outside evomerge/ (tests/toy_plugin.py) adds a merge method, a mutation operator and
a survivor selector, one class each, and a pipeline uses them like the built-ins; unknown names are config errors
that list the registered ones."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import POPULATION, evomerge

TESTS = Path(__file__).resolve().parent

TOY = """\
name: toy
population: population.yaml
plugins: [toy_plugin]
generations: 2
population_size: 2
children_per_generation: 2
crossover: {method: della_linear_narrow, search: [weight, density], cma: {sigma0: 0.2, popsize: 2, budget: 2}}
mutation: {rate: 1, keep: always, operators: [{kind: gaussian_noise, scale: 0.02}]}
survivor_selection: {kind: youngest}
fitness:
  tasks: [{task: evomerge_arith, metric: acc}]
  select: {split: select, limit: 4}
  report: {split: report, limit: 4}
seed: 0
"""


@pytest.fixture(scope="module")
def toy_run(tiny_models: Path, tmp_path_factory) -> Path:
    from evomerge.evolution import Run

    root = tmp_path_factory.mktemp("toy")
    shutil.copy(TESTS / "toy_plugin.py", root / "toy_plugin.py")
    (root / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    (root / "pipeline.yaml").write_text(TOY)
    run = Run.start(root / "pipeline.yaml", run_dir=root / "run")
    run.run()
    run.store.close()
    return root / "run"


def test_a_plugin_merge_method_mutation_operator_and_survivor_selector_run_a_pipeline(toy_run: Path):
    from evomerge.store import open_store

    store = open_store(toy_run)
    members = {m.name: m for m in store.members()}
    for gen in (1, 2):
        for slot in (0, 1):
            child, merge = members[f"g{gen}-c{slot}"], members[f"g{gen}-c{slot}-merge"]
            assert child.operator == "gaussian_noise" and child.parents == (merge.id,)
            assert merge.operator == "della_linear_narrow" and merge.state.value == "intermediate"
            assert "merge_method: della_linear" in merge.recipe
            for values in merge.params["merge"].values():
                assert all(0.2 <= d <= 0.8 for d in values["density"])  # the method's own bounds
    # youngest survive, whatever their scores
    assert [members_by_id.name for members_by_id in map(store.member, store.survivors(2))] == ["g2-c1", "g2-c0"]
    lineage = evomerge("lineage", str(toy_run), "g2-c1")
    assert lineage.returncode == 0, lineage.stderr
    assert "[gaussian_noise scale=0.02]" in lineage.stdout and "[della_linear_narrow weight=" in lineage.stdout


def test_members_of_plugin_operators_export_and_rebuild(toy_run: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    for name in ("g1-c0", "g2-c1-merge"):  # a retired noise mutant (rebuilt), an intermediate della merge
        out = tmp_path / name
        result = evomerge("export", str(toy_run), name, str(out))
        assert result.returncode == 0, result.stderr
        assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4
    chain = json.loads((tmp_path / "g1-c0" / "evomerge_recipe.json").read_text())["members"]
    assert json.loads(next(m for m in chain if m["name"] == "g1-c0")["recipe"])["scale"] == 0.02
    assert "della_linear" in (tmp_path / "g2-c1-merge" / "mergekit_config.yml").read_text()
    assert sorted(p.name for p in (toy_run / "members").iterdir()) == ["g2-c0", "g2-c1"]  # nothing rebuilt stays
    # the plugin's operators rebuild the member from the export alone
    assert evomerge("rebuild", str(tmp_path / "g1-c0"), str(tmp_path / "again")).returncode == 0
    from safetensors.torch import load_file

    ours, again = (load_file(d / "model.safetensors") for d in (tmp_path / "g1-c0", tmp_path / "again"))
    assert max(float((ours[k] - again[k]).abs().max()) for k in ours) <= 1e-6


CASES = {
    "merge method": ("method: della_linear_narrow", "method: frankenmerge",
                     ["crossover.method", "unknown crossover kind 'frankenmerge'", "della_linear_narrow", "ties",
                      "plugins"]),
    "mutation operator": ("kind: gaussian_noise", "kind: dropout",
                          ["mutation.operators.0", "unknown mutation operator 'dropout'", "gaussian_noise", "lora"]),
    "survivor selector": ("kind: youngest}", "kind: nsga3}", ["survivor_selection", "nsga3", "elitist, nsga2, shared, youngest"]),
    "plugin": ("plugins: [toy_plugin]", "plugins: [toy_plugin, no_such_module]",
               ["plugins.1", "cannot import 'no_such_module'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unknown_name_lists_the_registered_ones(tiny_models: Path, tmp_path: Path, case: str):
    old, new, words = CASES[case]
    shutil.copy(TESTS / "toy_plugin.py", tmp_path / "toy_plugin.py")
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    assert old in TOY
    (tmp_path / "pipeline.yaml").write_text(TOY.replace(old, new))
    result = evomerge("run", str(tmp_path / "pipeline.yaml"), "--run-dir", str(tmp_path / "runs" / "x"))
    assert result.returncode == 2, result.stderr
    assert "\n" not in result.stderr.strip() and "Fix:" in result.stderr
    for word in words:
        assert word in result.stderr, f"{word!r} missing from {result.stderr}"
    assert not (tmp_path / "runs").exists()
