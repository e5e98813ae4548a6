"""What a mutation operator is: one class with its settings, the checks it needs before any compute, the mutation
itself (a model in memory in, a mutant and its recipe out), the rebuild of a retired mutant from its recipe, and
its lineage label. The driver commits what `mutate` reports through `checkpoint`; `mutate` never writes the store.

    from evomerge.registry import MUTATION_OPERATORS
    MUTATION_OPERATORS.register("dropout", Dropout)   # Dropout(MutationOperator) with a Settings model
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from evomerge.config import OperatorSettings
from evomerge.executor.base import MutationJob
from evomerge.records import MemberRecord, MutationStep

if TYPE_CHECKING:
    from evomerge.preflight import Preflight
    from evomerge.workbench import Workbench

# checkpoint(step, data, **event): commit one step of a mutation (the driver does it, in one transaction);
# checkpoint(None, {}, **event): only an event saying how far the mutation is (`evomerge status` shows the last one)
Checkpoint = Callable[..., None]


@dataclass
class Mutant:
    model: Any
    recipe: dict


class MutationOperator:
    name: ClassVar[str] = ""                      # the registry name (set when registered): the members' operator
    Settings: ClassVar[type[OperatorSettings]] = OperatorSettings
    color: ClassVar[str] = "#444444"
    step_event: ClassVar[str] = "mutation_step"   # the event each committed step adds
    # An operator whose steps are made of independent evaluations (noise ES: antithetic pairs) can share each step
    # among workers: `Session(bench, model, job)` holds the mutation in one worker (`.done`, `.rewards(step, mine)`
    # for the units in `mine`, `.apply(data)`, `.finish() -> Mutant`), `units(job)` counts a step's units and
    # `record(job, step, results) -> (data, event)` makes the committed step from every unit's result, and
    # `steps(job)` counts the steps.
    Session: ClassVar[Optional[type]] = None

    @classmethod
    def check(cls, settings: Any, preflight: "Preflight", *, key: str) -> None:
        """Before any compute: raise ConfigError for what the settings name that is not there.
        `preflight.data(task, data, key=...)` checks a training task or a JSONL file, `preflight.modules(names,
        key=...)` module names of the seeds' architecture."""

    @classmethod
    def mutate(cls, bench: "Workbench", model: Any, job: MutationJob, checkpoint: Checkpoint) -> Mutant:
        """Mutate `model` (the parent, in memory, owned by the operator from now on)."""
        raise NotImplementedError

    @classmethod
    def rebuild(cls, bench: "Workbench", model: Any, member: MemberRecord, run_dir: Path) -> Any:
        """The member from its parent's model and its recipe, bit-exactly as `mutate` made it."""
        raise NotImplementedError

    @classmethod
    def recipe_files(cls, member: MemberRecord, run_dir: Path) -> list[Path]:
        """The files besides the store that `rebuild` needs (`evomerge check` verifies they are there)."""
        return []

    @classmethod
    def edge_label(cls, params: dict) -> str:
        return cls.name

    @classmethod
    def curve(cls, steps: list[MutationStep]) -> list[dict]:
        """Per step, for the report: {"iteration", "mean", "best", "worst"} of its rewards; [] if it has none."""
        return []
