"""Where candidates are merged and scored and children are mutated (mergekit-evolve's `evo/strategy.py` is the
model: one interface, serial now, a pool of workers later).

The driver (evomerge/evolution.py and its stages) owns the store, CMA-ES and selection; an executor only computes.
It receives jobs that carry everything they need (paths, parameters, the keys of their random streams) and hands
back results tagged with what it was given, so that results can be applied in a fixed order whatever order they
arrive in.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from evomerge.config import KindSettings

if TYPE_CHECKING:
    from evomerge.crossover.genome import Genome
    from evomerge.fitness.lm_eval import Scored
    from evomerge.workbench import BenchSpec


@dataclass(frozen=True)
class CrossoverJob:
    """One crossover's merges: its genome, where its parents are, and the model candidates are written into."""
    generation: int
    slot: int
    genome: "Genome"
    paths: dict[str, str]         # parent name -> model directory
    base_path: Optional[str]      # the population's base member (task vectors subtract it)
    resident_from: str            # the model the resident evaluation model is loaded from (its architecture)
    seed: int                     # mergekit's random seed (DARE's masks)
    dtype: str

    def merge_config(self, params: dict):
        return self.genome.merge_config(params, paths=self.paths, base_path=self.base_path, dtype=self.dtype)


@dataclass(frozen=True)
class Candidate:
    """One CMA-ES proposal to merge and score on the select split; `key` is the caller's (its candidate id)."""
    key: int
    params: dict
    docs: Optional[dict[str, tuple[int, ...]]] = None  # task -> the documents to score (racing's slices, anchors);
                                                       # None: the split's first `limit`


@dataclass(frozen=True)
class ParentSource:
    """Where a mutation's parent comes from: a model directory, or a merge built in memory (an intermediate)."""
    model_dir: Optional[str] = None
    merge: Any = None             # a mergekit MergeConfiguration, merged with `merge_seed`
    merge_seed: int = 0


@dataclass(frozen=True)
class MutationJob:
    """One mutation, as an executor receives it: everything it needs, nothing it must look up in the store."""
    name: str                     # the mutant's member name
    kind: str                     # the operator's registry name
    settings: Any                 # its settings (a seed's LoRA spec, or a configured operator)
    parent: ParentSource
    parent_name: str
    seed: int                     # the run's seed; with generation and slot it keys the random streams
    generation: int
    slot: int
    out_dir: Path                 # where the mutant's weights go
    files_dir: Path               # where its recipe's files go (a LoRA adapter)
    files_ref: str                # files_dir as the recipe names it: relative to the run directory
    data_root: Path               # what relative data paths in the settings are relative to
    steps_done: list[dict] = field(default_factory=list)  # committed steps, to replay on resume


@dataclass(frozen=True)
class Mutated:
    """What a mutation gives back: the mutant's recipe, and why it failed if its weights are not finite (then
    nothing was written)."""
    recipe: dict
    failure: Optional[str] = None


class Executor(abc.ABC):
    """An executor. `Settings` is its pipeline block (`executor: {kind: serial}`)."""

    name = ""
    Settings: type[KindSettings] = KindSettings
    capacity = 1  # tasks it runs at once: above 1 the loop breeds a generation's children at once

    def __init__(self, settings: KindSettings, spec: "BenchSpec", **local: Any) -> None:
        self.settings = settings
        self.spec = spec

    def start(self) -> None:
        """Called by the loop, in the main thread, before any work: start workers (Ray wants its main thread)."""

    @classmethod
    def check(cls, settings: KindSettings, preflight: Any) -> None:
        """Before any compute: raise EvomergeError or ConfigError if this executor cannot run here."""

    @abc.abstractmethod
    def evaluate(self, job: CrossoverJob, candidates: list[Candidate]) -> Iterator[tuple[Candidate, "Scored"]]:
        """Merge and score each candidate on the select split; yields each as it is done (in any order)."""

    @abc.abstractmethod
    def end_crossover(self, job: CrossoverJob) -> None:
        """The crossover is over: let its resident parents go."""

    @abc.abstractmethod
    def score(self, model_dir: str, which: str, docs: Optional[dict[str, tuple[int, ...]]] = None) -> "Scored":
        """Score a member's model directory on the select or report split (with `docs`, on those documents of each
        task: the anchors)."""

    @abc.abstractmethod
    def mutate(self, job: MutationJob, checkpoint: Callable[..., None]) -> Mutated:
        """Mutate the job's parent and write the mutant to `job.out_dir`. `checkpoint(step, data, **event)` is
        called, in the driver's process, after each step the operator wants committed."""

    def close(self) -> None:
        """Release workers and memory."""
