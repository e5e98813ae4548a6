"""What every stage of a run works with: the run's directory, configuration, store, score query, files, executor
and progress display. The stages (seeding, breeding, crossover, mutation, scoring) share one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evomerge.artifacts import Artifacts
from evomerge.config import Loaded, PipelineConfig
from evomerge.executor.base import Executor
from evomerge.progress import Reporter
from evomerge.scores import ScoreBoard
from evomerge.store.base import Store


@dataclass
class RunContext:
    dir: Path
    loaded: Loaded
    store: Store
    board: ScoreBoard
    artifacts: Artifacts
    executor: Executor
    reporter: Reporter

    @property
    def cfg(self) -> PipelineConfig:
        return self.loaded.pipeline
