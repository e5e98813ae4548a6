"""Exports that stand alone: a member as an HF model directory plus the recipe chain that rebuilds it without the
run directory, and `rebuild`, which replays that chain.

    evomerge export RUN_DIR g1-c1 out/g1-c1      # out/g1-c1: the model, evomerge_recipe.json, recipe/adapters/...
    evomerge rebuild out/g1-c1 out/again          # the same weights, from the export alone

`evomerge_recipe.json` holds the run's configuration and the records of every member the export depends on: the
member's ancestors back to the seeds, and the population's base model (task-vector merges subtract it). Merges
keep their parameters, LoRA mutants their adapter (copied under `recipe/adapters/`), noise-ES mutants their seeds
and coefficients; seeds name their source (a built-in model or a local directory, which must still be there).
A merge also gets `mergekit_config.yml`, its parents at the absolute paths where they are at export time, so that
`mergekit-yaml` rebuilds it from any directory while they are there.

`rebuild` puts those records into an in-memory store over a scratch directory and asks the run's own code
(evomerge/artifacts.py) for the member, so each step is the very computation the run made: mergekit's merge, peft's
adapter, the ES replay (bit-exact on the same device type).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from evomerge.errors import EvomergeError

RECIPE = "evomerge_recipe.json"
FORMAT = "evomerge export 1"


def export(run, member, out: Path, *, keep_rebuilt: bool = False) -> Path:
    """Write `member` of `run` (an evolution.Run) to `out`, atomically; rebuilt ancestors go unless kept."""
    from evomerge.lineage import ancestors
    from evomerge.models import readable
    from evomerge.registry import CROSSOVERS

    store, artifacts = run.store, run.artifacts
    base = store.member(run.loaded.population.base_model)
    chain = {m.id: m for m in ancestors(store, member)}
    chain.update({m.id: m for m in ancestors(store, base)} if base is not None else {})
    tmp = out.with_name(".tmp-" + out.name)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(artifacts.materialise(member), tmp, ignore=shutil.ignore_patterns(".tmp-*"))
        for m in chain.values():
            for f in _adapter_files(run.dir, m):
                target = tmp / "recipe" / f.relative_to(run.dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
        if member.operator in CROSSOVERS:  # parents where they are now: absolute paths, any working directory
            (tmp / "mergekit_config.yml").write_text(
                "# mergekit-yaml mergekit_config.yml OUT --random-seed "
                f"{member.params.get('seed', 0)}   (parents at their paths at export time)\n"
                "# without the run directory: evomerge rebuild THIS_DIRECTORY OUT\n"
                + artifacts.merge_config(member).to_yaml())
        (tmp / RECIPE).write_text(json.dumps({
            "format": FORMAT, "member": member.name, "config": store.config(),
            "members": [_record(m) for m in sorted(chain.values(), key=lambda m: m.id)],
        }, indent=1) + "\n")
        readable(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep_rebuilt:
            artifacts.discard_rebuilt()
    return out


def _adapter_files(run_dir: Path, member) -> list[Path]:
    """The files a member's recipe names inside the run directory (a LoRA adapter), without training state."""
    try:
        adapter = json.loads(member.recipe).get("adapter")
    except (ValueError, AttributeError):
        return []
    if not adapter:
        return []
    folder = Path(run_dir) / adapter
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.name != "checkpoint.safetensors")


def _record(m) -> dict:
    return {"id": m.id, "name": m.name, "generation": m.generation, "operator": m.operator, "parents": list(m.parents),
            "params": m.params, "recipe": m.recipe, "state": m.state.value}


def rebuild(export_dir: Path, out: Path, *, device: Optional[str] = None) -> Path:
    """The exported member, rebuilt from `export_dir` alone into `out` (a new or empty directory)."""
    from evomerge.artifacts import Artifacts
    from evomerge.config import load_pipeline_dict
    from evomerge.models import readable
    from evomerge.records import MemberState
    from evomerge.store.memory import MemoryStore
    from evomerge.workbench import BenchSpec, Workbench

    path = Path(export_dir) / RECIPE
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
    except (OSError, ValueError) as e:
        raise EvomergeError(f"{export_dir} is not an evomerge export ({path.name}: {e}). Fix: give a directory "
                            "written by `evomerge export`") from None
    config = data["config"]
    if device is not None:
        config = {**config, "pipeline": {**config["pipeline"], "device": device}}
    loaded = load_pipeline_dict(config, pipeline_file=config["pipeline_file"],
                                population_file=config["population_file"])
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".rebuild-", dir=out.parent))
    try:
        if (Path(export_dir) / "recipe").is_dir():
            shutil.copytree(Path(export_dir) / "recipe", work, dirs_exist_ok=True)
        store = MemoryStore.create(work, config=config)
        with store.transaction():
            for m in data["members"]:
                state = MemberState(m["state"])
                store.add_member(name=m["name"], generation=m["generation"], operator=m["operator"],
                                 parents=tuple(m["parents"]), params=m["params"], recipe=m["recipe"], weights=None,
                                 state=MemberState.RETIRED if state is MemberState.ALIVE else state, id=m["id"])
        spec = BenchSpec(pipeline=loaded.pipeline, include_paths=(), pipeline_file=loaded.pipeline_file,
                         tokenizer_source=loaded.model_source(loaded.population.members[0]))
        bench = Workbench(spec)
        built = Artifacts(work, store, loaded, lambda: bench).materialise(store.member(data["member"]))
        tmp = out.with_name(".tmp-" + out.name)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(built, tmp)
        readable(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
