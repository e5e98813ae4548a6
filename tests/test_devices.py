"""A configured device is resolved once to the name tensors report (evomerge/devices.py): `device: cuda` used to
crash at the first candidate because torch.device("cuda") never equals a tensor's cuda:0. On the CPU the same
comparison is `cpu:0` against `cpu`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.config import CrossoverSpec
from evomerge.crossover.fast import ResidentMerge
from evomerge.crossover.genome import Genome
from evomerge.crossover.merge import merge_in_memory
from evomerge.devices import resolve


def test_device_names_resolve_to_what_tensors_report():
    assert resolve("cpu") == resolve("cpu:0") == resolve(torch.device("cpu", 0)) == "cpu"
    assert torch.device(resolve("cpu:0")) == torch.zeros(1).device == torch.device(resolve("cpu"))
    assert torch.device(resolve("cpu")) != torch.device(resolve("meta"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_run_resumed_without_its_gpu_is_told_so(tiny_models: Path, tmp_path: Path):
    """A run started with device: cuda:0 and resumed on a machine without a GPU: one line at once, not torch's
    assertion at the first model load."""
    import json
    import sqlite3
    import sys

    from conftest import evomerge
    from evomerge.evolution import Run

    sys.path.insert(0, str(Path(__file__).parent / "golden"))
    from record import write_pipelines

    run = tmp_path / "run"
    Run.start(write_pipelines(tmp_path, tiny_models / "models")["linear"], run_dir=run).store.close()
    with sqlite3.connect(run / "evomerge.db") as db:  # as if it had been started on a GPU machine
        config = json.loads(db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
        config["pipeline"]["device"] = "cuda:0"
        db.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(config),))
    result = evomerge("resume", str(run))
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "was made with device 'cuda:0', but torch" in message
    assert "Fix: resume it on a machine with that GPU" in message


def _merge_on(device: str, models: Path):
    from transformers import AutoModelForCausalLM

    genome = Genome(CrossoverSpec(method="ties", search=("weight", "density")), ("a", "b"), num_layers=4)
    params = genome.params([0.6, 0.4, 0.9, 0.7])
    config = genome.merge_config(params, paths={"a": str(models / "a"), "b": str(models / "b")},
                                 base_path=str(models / "base"), dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(models / "base", dtype=torch.float32).to(resolve(device))
    ResidentMerge(genome, config, seed=3, device=device).write(params, model)  # raised on an unresolved name
    reference = merge_in_memory(config, seed=3)
    ours = dict(model.named_parameters())
    return max(float((ours[k].detach().cpu() - v).abs().max()) for k, v in reference.items())


def test_the_fast_merge_takes_any_name_of_the_models_device(tiny_models: Path):
    assert _merge_on("cpu:0", tiny_models / "models") <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cuda_is_the_current_gpu_and_the_fast_merge_runs_there(tiny_models: Path):
    assert resolve("cuda") == f"cuda:{torch.cuda.current_device()}"
    assert torch.device(resolve("cuda")) == torch.zeros(1, device="cuda").device
    assert _merge_on("cuda", tiny_models / "models") <= 1e-5  # GPU arithmetic, mergekit's on the CPU
