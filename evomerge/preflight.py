"""Checks that need more than the config's own fields, made before a run directory exists, so that a run that
cannot work stops with one clear error and creates nothing:

- the device exists on this machine;
- every model seed can be read (built-in ones are converted now) and all seeds share one architecture and one
  tokenizer vocabulary, so that they can be merged;
- every task or JSONL file that a LoRA seed or a mutation operator trains on is there and readable, and every LoRA
  target module is a module of the model.

Mutation operators take part through their `check(settings, preflight, key=...)`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from evomerge.config import Loaded
from evomerge.errors import ConfigError
from evomerge.registry import EXECUTORS, MUTATION_OPERATORS

# What must agree between seeds for their tensors to be merged
SHAPE_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "tie_word_embeddings")


class Preflight:
    def __init__(self, loaded: Loaded, scorer) -> None:
        self.loaded = loaded
        self.scorer = scorer
        self._modules: Optional[list[str]] = None
        self.file = loaded.pipeline_file  # the file whose keys are being checked

    def run(self) -> None:
        loaded = self.loaded
        EXECUTORS.get(loaded.pipeline.executor.kind).check(loaded.pipeline.executor, self)
        self._device()
        self._seeds()
        self.file = loaded.population_file
        for i, member in enumerate(loaded.population.members):
            if member.lora is not None:
                MUTATION_OPERATORS.get("lora").check(member.lora, self, key=f"members.{i}.lora")
        self.file = loaded.pipeline_file
        mutation = loaded.pipeline.mutation
        for i, op in enumerate(mutation.operators if mutation else ()):
            MUTATION_OPERATORS.get(op.kind).check(op, self, key=f"mutation.operators.{i}")

    # ------------------------------------------------------------ what operators call

    def data(self, task: Optional[str], data: Optional[str], *, key: str) -> None:
        """A training task with a training split, or a JSONL file of prompt/completion objects."""
        if task is not None:
            self.scorer.check_training_task(task, file=self.file, key=f"{key}.task")
        elif data is not None:
            _check_jsonl(Path(self.file).parent / data, file=self.file, key=f"{key}.data")

    def modules(self, targets: tuple[str, ...], *, key: str) -> None:
        """Each target is a module of the seeds' architecture (peft matches names by suffix)."""
        names = self._module_names()
        for t in targets:
            if not any(n == t or n.endswith("." + t) for n in names):
                kinds = sorted({n.rsplit(".", 1)[-1] for n in names if "layers.0." in n and "." in n})
                raise ConfigError(file=self.file, key=key, problem=f"{t!r} is not a module of the model",
                                  fix=f"use module names of this architecture: {', '.join(kinds)}")

    # ------------------------------------------------------------ the machine and the seeds

    def _device(self) -> None:
        from evomerge.devices import FIX, unavailable

        why = unavailable(self.loaded.pipeline.device)
        if why is not None:
            raise ConfigError(file=self.file, key="device", problem=why, fix=FIX)

    def _seeds(self) -> None:
        from transformers import AutoConfig, AutoTokenizer

        from evomerge.models import resolve_model

        loaded, file = self.loaded, self.loaded.population_file
        seen = []
        for i, m in enumerate(loaded.population.members):
            if m.model is None:
                continue
            path = resolve_model(loaded.model_source(m))  # a built-in is converted now, or says what it needs
            cfg, vocab = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path).get_vocab()
            for j, other, other_cfg, other_vocab in seen[:1]:
                for field in SHAPE_FIELDS:
                    mine, theirs = getattr(cfg, field, None), getattr(other_cfg, field, None)
                    if mine != theirs:
                        raise ConfigError(file=file, key=f"members.{i}.model",
                                          problem=f"{m.name} has {field} {mine!r} but {other} has {theirs!r}: "
                                                  "seeds of one population must share an architecture to merge",
                                          fix="use checkpoints fine-tuned from the same base model")
                if vocab != other_vocab:
                    raise ConfigError(file=file, key=f"members.{i}.model",
                                      problem=f"{m.name}'s tokenizer vocabulary differs from {other}'s",
                                      fix="use checkpoints that share one tokenizer")
            seen.append((i, m.name, cfg, vocab))
        self._config = seen[0][2]

    def _module_names(self) -> list[str]:
        if self._modules is None:
            import torch
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):  # the architecture without its weights
                model = AutoModelForCausalLM.from_config(self._config)
            self._modules = [n for n, _ in model.named_modules()]
        return self._modules


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
