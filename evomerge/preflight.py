"""Checks that need more than the config's own fields, made before a run directory exists: every task or JSONL
file that a LoRA seed or a mutation operator trains on is there and readable."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from evomerge.config import Loaded
from evomerge.errors import ConfigError
from evomerge.registry import MUTATION_OPERATORS


def check_data_sources(loaded: Loaded, scorer) -> None:
    def checker(file: str):
        def check(task: Optional[str], data: Optional[str], *, key: str) -> None:
            if task is not None:
                scorer.check_training_task(task, file=file, key=f"{key}.task")
            elif data is not None:
                _check_jsonl(Path(file).parent / data, file=file, key=f"{key}.data")
        return check

    seeds = checker(loaded.population_file)
    for i, member in enumerate(loaded.population.members):
        if member.lora is not None:
            seeds(member.lora.task, member.lora.data, key=f"members.{i}.lora")
    mutation = loaded.pipeline.mutation
    for i, op in enumerate(mutation.operators if mutation else ()):
        MUTATION_OPERATORS.get(op.kind).check(op, checker(loaded.pipeline_file), key=f"mutation.operators.{i}")


def _check_jsonl(path: Path, *, file: str, key: str) -> None:
    fix = "give a JSONL file of {\"prompt\": ..., \"completion\": ...} lines, relative to this file"
    if not path.is_file():
        raise ConfigError(file=file, key=key, problem=f"{path.name!r} is not a file ({path})", fix=fix)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(file=file, key=key, problem=f"{path} is not a text file", fix=fix) from None
    rows = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str)
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(file=file, key=key, problem=f"{path} line {n} is not a JSON object with string "
                              "\"prompt\" and \"completion\"", fix=fix)
        rows += 1
    if rows == 0:
        raise ConfigError(file=file, key=key, problem=f"{path} has no examples", fix=fix)
