"""The merge methods evomerge registers beyond its five fast ones: each one runs a generation of a tiny pipeline
through mergekit, and its exported child is what `mergekit-yaml` rebuilds from the exported recipe."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import evomerge, max_diff, model_tensors
from evomerge.config import CrossoverSpec
from evomerge.crossover.genome import Genome

SEARCH = {  # each method of mergekit's that evomerge registers without a fast kernel, and what its genome searches
    "dare_linear": "weight, density",
    "breadcrumbs": "weight, density, gamma",
    "breadcrumbs_ties": "weight, density, gamma",
    "della": "weight, density, epsilon",
    "della_linear": "weight, density, epsilon",
    "nuslerp": "weight",
    "multislerp": "weight",
    "sce": "select_topk",
    "model_stock": "",     # nothing to search: one merge per crossover
    "karcher": "",
    "arcee_fusion": "",
}


DEFAULT_RUN = ("della", "nuslerp", "model_stock")  # a sparsifying task-vector method, one without a base, one with
# nothing to search; the others are `slow`
# (about 20 s each: CI stays under 30 minutes)


@pytest.mark.parametrize("method", [m if m in DEFAULT_RUN else pytest.param(m, marks=pytest.mark.slow) for m in SEARCH])
def test_a_generation_with_the_method_exports_what_mergekit_yaml_rebuilds(tiny_pipeline: Path, tmp_path: Path,
                                                                          method: str):
    from transformers import AutoModelForCausalLM

    text = tiny_pipeline.read_text().replace("generations: 2", "generations: 1").replace(
        "children_per_generation: 2", "children_per_generation: 1")
    text = re.sub(r"crossover: \{.*\}\n", f"crossover: {{method: {method}, search: [{SEARCH[method]}], layer_group: 2, "
                                          "cma: {sigma0: 0.3, popsize: 2, budget: 2}}\n", text)
    tiny_pipeline.write_text(text)
    run_dir, out, rebuilt = tmp_path / "run", tmp_path / "exported", tmp_path / "rebuilt"
    done = evomerge("run", str(tiny_pipeline), "--run-dir", str(run_dir), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    done = evomerge("export", str(run_dir), "g1-c0", str(out))
    assert done.returncode == 0, done.stderr
    assert f"merge_method: {method}" in (out / "mergekit_config.yml").read_text()
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 4
    subprocess.run([str(Path(sys.executable).parent / "mergekit-yaml"), str(out / "mergekit_config.yml"), str(rebuilt),
                    "--random-seed", "3"], check=True, capture_output=True)
    assert max_diff(model_tensors(out), model_tensors(rebuilt)) <= 1e-6


def test_della_keeps_density_plus_or_minus_epsilon_inside_the_unit_interval(tiny_models: Path):
    from evomerge.crossover.merge import merge_in_memory

    genome = Genome(CrossoverSpec(method="della", search=("weight", "density", "epsilon")), ("a", "b"), num_layers=4)
    params = genome.params([0.5, 0.9, 0.3, 0.5, 0.1, 0.3])  # a: density 0.9, epsilon 0.3; b: density 0.1
    for p in params.values():
        for d, e in zip(p["density"], p["epsilon"]):
            assert 0 < d - e and d + e < 1
    models = tiny_models / "models"
    config = genome.merge_config(params, paths={"a": str(models / "a"), "b": str(models / "b")},
                                 base_path=str(models / "base"), dtype="float32")
    assert merge_in_memory(config, seed=0)  # mergekit accepts it (it raises when density ± epsilon leaves (0, 1))


def test_della_without_density_and_epsilon_searched_is_a_config_error():
    with pytest.raises(ValueError, match="needs `density` and `epsilon` in `search`"):
        CrossoverSpec(method="della", search=("weight",))
