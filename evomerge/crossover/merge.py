"""Merging with mergekit: in memory for scoring candidates, to disk (mergekit's own `run_merge`) for members.

The in-memory path plans with mergekit's `MergePlanner` and runs its `Executor` on the per-tensor merge tasks.
(`MergePlanner.plan_in_memory` in mergekit 0.1.5 raises while building `ReturnTensor`s, so we run the merge tasks
themselves; tests/test_merge.py checks that both paths give the same tensors.)
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

# mergekit's LoaderCache is one per process and dare_ties draws its masks from torch's global RNG: two merges at once
# in one process (the driver writes the children of a generation bred at once) would share both, and a child's
# weights would depend on the other's timing. One merge at a time, then.
_ONE_AT_A_TIME = threading.RLock()


def _options(seed: int, device: str):
    from mergekit.options import MergeOptions

    return MergeOptions(random_seed=seed, device=device, quiet=True, copy_tokenizer=True, lazy_unpickle=False,
                        write_model_card=True, safe_serialization=True)


def _executor(config, *, seed: int, device: str):
    """mergekit's planner and executor for a configuration: (executor, {merge task: WeightInfo}, loader cache)."""
    import torch
    from mergekit.architecture import get_architecture_info
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import _model_out_config
    from mergekit.plan import MergePlanner

    config = config.model_copy(deep=True)  # the planner normalises the configuration in place
    options = _options(seed, device)
    arch = get_architecture_info(config, options)
    cache = LoaderCache()
    cache.setup(options=options)
    planner = MergePlanner(config, arch, options=options,
                           out_model_config=_model_out_config(config, arch, trust_remote_code=False))
    planner._plan()
    weights = {task: weight for weight, task in planner._tensors}
    executor = Executor(list(weights), math_device=torch.device(device), storage_device=torch.device(device))
    return executor, weights, cache


def merge_in_memory(config, *, seed: int, device: str = "cpu") -> dict:
    """The merged tensors of a `MergeConfiguration`, by name, without touching the disk."""
    import transformers

    with _ONE_AT_A_TIME:
        executor, weights, cache = _executor(config, seed=seed, device=device)
        transformers.trainer_utils.set_seed(seed)  # as run_merge does: dare_ties draws its masks from torch's RNG
        out = {weights[task].name: value for task, value in executor.run(quiet=True)}
        cache.flush_all()
    return out


def plan(config, *, seed: int, device: str = "cpu") -> list:
    """The `WeightInfo` of every tensor mergekit's merge outputs, in the order its executor merges them."""
    with _ONE_AT_A_TIME:
        executor, weights, cache = _executor(config, seed=seed, device=device)
        cache.flush_all()
    return [weights[h.task()] for h in executor.schedule.tasks if h.task() in weights]


def merge_to_disk(config, out_dir: Path, *, seed: int, device: str = "cpu") -> None:
    """Write the merge as an HF model directory with mergekit's `run_merge` (what mergekit-yaml does), atomically."""
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import run_merge

    from evomerge.models import readable

    tmp = out_dir.with_name(".tmp-" + out_dir.name)
    shutil.rmtree(tmp, ignore_errors=True)
    with _ONE_AT_A_TIME:
        run_merge(config.model_copy(deep=True), str(tmp), _options(seed, device))  # it normalises in place
        LoaderCache().flush_all()
    readable(tmp)
    tmp.rename(out_dir)


def first_model(config) -> str:
    """The directory of the first model a configuration reads: its `models:` or its first slice's (passthrough)."""
    if config.models:
        return config.models[0].model.model.path
    return config.slices[0].sources[0].model.model.path


def layers_in(tensors: dict) -> int:
    """How many decoder layers merged tensors (by name) hold."""
    import re

    found = [int(m.group(1)) for name in tensors if (m := re.match(r"model\.layers\.(\d+)\.", name))]
    return max(found) + 1 if found else 0


def load_into(model, tensors: dict) -> None:
    """Write merged tensors into a resident model in place (no reload); tied weights follow their source."""
    import torch

    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in tensors.items():
            target = params.get(name, buffers.get(name))
            if target is None:
                raise KeyError(f"merged tensor {name} has no place in the model")
            target.copy_(value)
