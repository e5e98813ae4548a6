"""Crossover merges: the in-memory path equals mergekit's own run_merge, and an exported child is rebuilt
by mergekit-yaml from its mergekit_config.yml."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import evomerge, max_diff, model_tensors
from evomerge.config import CrossoverSpec
from evomerge.crossover.genome import Genome
from evomerge.crossover.merge import load_into, merge_in_memory, merge_to_disk


@pytest.mark.parametrize("method,search,layer_group", [
    ("linear", ("weight",), None),
    ("ties", ("weight", "density"), 2),
    ("dare_ties", ("weight", "density"), None),
    ("task_arithmetic", ("weight",), 2),
    ("slerp", ("weight",), 3),
])
def test_in_memory_merge_equals_mergekit_run_merge(tiny_models: Path, tmp_path: Path, method, search, layer_group):
    models = tiny_models / "models"
    genome = Genome(CrossoverSpec(method=method, search=search, layer_group=layer_group), ("a", "b"), num_layers=4)
    x = [0.2 + 0.6 * (i % 3) / 2 for i in range(genome.dim())]  # distinct values per parent and group
    config = genome.merge_config(genome.params(x), paths={"a": str(models / "a"), "b": str(models / "b")},
                                 base_path=str(models / "base"), dtype="float32")
    in_memory = merge_in_memory(config, seed=7)
    merge_to_disk(config, tmp_path / "merged", seed=7)
    assert max_diff(in_memory, model_tensors(tmp_path / "merged")) <= 1e-6
    # the merge really mixes the parents: it equals neither
    assert max_diff(in_memory, model_tensors(models / "a")) > 1e-4
    assert max_diff(in_memory, model_tensors(models / "b")) > 1e-4


def test_layer_groups_give_different_weights_per_group(tiny_models: Path):
    genome = Genome(CrossoverSpec(method="linear", layer_group=2), ("a", "b"), num_layers=4)
    assert genome.groups == 3  # layers 0-1, layers 2-3, everything outside the layers
    params = genome.params([1.0, 0.0, 0.5, 0.0, 1.0, 0.5])
    models = tiny_models / "models"
    merged = merge_in_memory(genome.merge_config(params, paths={"a": str(models / "a"), "b": str(models / "b")},
                                                 base_path=None, dtype="float32"), seed=0)
    a, b = model_tensors(models / "a"), model_tensors(models / "b")
    name0, name3 = "model.layers.0.mlp.up_proj.weight", "model.layers.3.mlp.up_proj.weight"
    assert torch.equal(merged[name0], a[name0])  # group 0: all weight on a
    assert torch.equal(merged[name3], b[name3])  # group 1: all weight on b


def test_load_into_writes_the_resident_model_in_place(tiny_models: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models / "models" / "base")
    before = model.model.layers[0].mlp.up_proj.weight
    target = model_tensors(tiny_models / "models" / "a")
    load_into(model, target)
    assert model.model.layers[0].mlp.up_proj.weight is before  # same storage, no reload
    assert max_diff({k: v for k, v in model.state_dict().items() if k in target}, target) == 0


def test_export_is_loadable_and_mergekit_yaml_rebuilds_it(tiny_pipeline: Path, tmp_path: Path):
    text = tiny_pipeline.read_text().replace("generations: 2", "generations: 1").replace(
        "children_per_generation: 2", "children_per_generation: 1").replace("method: ties", "method: dare_ties")
    tiny_pipeline.write_text(text)
    run_dir = tmp_path / "run"
    assert evomerge("run", str(tiny_pipeline), "--run-dir", str(run_dir), "--quiet").returncode == 0
    out = tmp_path / "exported"
    result = evomerge("export", str(run_dir), "g1-c0", str(out))
    assert result.returncode == 0, result.stderr
    assert "--random-seed 3" in result.stdout

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4

    rebuilt = tmp_path / "rebuilt"
    mergekit_yaml = Path(sys.executable).parent / "mergekit-yaml"
    subprocess.run([str(mergekit_yaml), str(out / "mergekit_config.yml"), str(rebuilt), "--random-seed", "3"],
                   check=True, capture_output=True)
    assert max_diff(model_tensors(out), model_tensors(rebuilt)) <= 1e-6
    # and an export refuses to overwrite
    again = evomerge("export", str(run_dir), "g1-c0", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr
