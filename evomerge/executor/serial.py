"""The serial executor: everything in the driver's own process, one candidate after another (the default)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from evomerge.executor.base import Candidate, CrossoverJob, Executor, Mutated, MutationJob
from evomerge.workbench import BenchSpec, Workbench


class SerialExecutor(Executor):
    def __init__(self, settings, spec: BenchSpec, *, scorer: Any = None, progress: Any = None, **_: Any) -> None:
        super().__init__(settings, spec)
        self.bench = Workbench(spec, scorer=scorer, progress=progress)

    def evaluate(self, job: CrossoverJob, candidates: list[Candidate]) -> Iterator[tuple[Candidate, Any]]:
        for candidate in candidates:
            yield candidate, self.bench.evaluate(job, candidate)

    def end_crossover(self, job: CrossoverJob) -> None:
        self.bench.end_crossover((job.generation, job.slot))

    def score(self, model_dir: str, which: str, docs=None):
        return self.bench.score(model_dir, which, docs=docs)

    def mutate(self, job: MutationJob, checkpoint: Callable[..., None]) -> Mutated:
        return self.bench.mutate(job, checkpoint)
