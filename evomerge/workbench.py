"""What computing needs in one process: the scorer, the tokenizer, models loaded or merged in memory, the resident
evaluation model candidates are written into, and the resident parents of the crossover under way.

The serial executor holds one workbench; a pool of workers holds one per worker (built from the same picklable
`BenchSpec`); the run's artifacts use one to rebuild retired members. A workbench never touches the store.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional

from evomerge.config import PipelineConfig
from evomerge.errors import EvomergeError
from evomerge.executor.base import Candidate, CrossoverJob, Mutated, MutationJob, ParentSource
from evomerge.models import load_model, load_tokenizer, resolve_model
from evomerge.progress import Reporter
from evomerge.registry import MUTATION_OPERATORS


@dataclass(frozen=True)
class BenchSpec:
    """What a workbench is built from, in any process."""
    pipeline: PipelineConfig
    include_paths: tuple[str, ...]
    pipeline_file: str
    tokenizer_source: str   # the first seed's model (a built-in name or a directory): every member's tokenizer

    def to_json(self) -> dict:
        """Plain data, which another process reads after it has imported the pipeline's plugins."""
        return {"pipeline": self.pipeline.model_dump(mode="json"), "include_paths": list(self.include_paths),
                "pipeline_file": self.pipeline_file, "tokenizer_source": self.tokenizer_source}

    @classmethod
    def from_json(cls, data: dict) -> "BenchSpec":
        from evomerge.config import import_plugins

        import_plugins(data["pipeline"].get("plugins"), root=Path(data["pipeline_file"]).parent,
                       file=data["pipeline_file"])
        return cls(pipeline=PipelineConfig.model_validate(data["pipeline"]),
                   include_paths=tuple(data["include_paths"]), pipeline_file=data["pipeline_file"],
                   tokenizer_source=data["tokenizer_source"])


class Workbench:
    def __init__(self, spec: BenchSpec, *, scorer: Any = None, progress: Optional[Reporter] = None,
                 resident_merges: int = 1) -> None:
        self.spec = spec
        self.cfg = spec.pipeline
        self.progress = progress or Reporter(quiet=True)
        self._scorer = scorer
        self._resident = None                      # the evaluation model candidates are written into
        self._mergers: OrderedDict[tuple[int, int], Any] = OrderedDict()  # (generation, slot) -> resident parents
        self._keep = resident_merges  # crossovers whose parents stay in memory at once (the latest used)

    @cached_property
    def device(self) -> str:
        """The configured device, resolved (evomerge/devices.py): every model, merge and score of this bench."""
        from evomerge.devices import resolve

        return resolve(self.cfg.device)

    @property
    def scorer(self):
        if self._scorer is None:
            from evomerge.fitness.lm_eval import Scorer

            self._scorer = Scorer(self.cfg.fitness, include_paths=list(self.spec.include_paths),
                                  device=self.device, engine=self.cfg.engine, pipeline_file=self.spec.pipeline_file)
        return self._scorer

    @cached_property
    def tokenizer(self):
        return load_tokenizer(resolve_model(self.spec.tokenizer_source))

    def weighted(self, results: dict) -> Optional[float]:
        return self.cfg.fitness.weighted(results)

    # ------------------------------------------------------------ models

    def load(self, source: ParentSource | str):
        """A model in memory on the configured device: from a directory, or merged by mergekit."""
        if isinstance(source, str):
            return load_model(source, dtype=self.cfg.dtype, device=self.device)
        if source.model_dir is not None:
            return self.load(source.model_dir)
        from evomerge.crossover.merge import load_into, merge_in_memory

        model = self.load(source.merge.models[0].model.model.path)  # the architecture; every tensor is replaced
        load_into(model, merge_in_memory(source.merge, seed=source.merge_seed, device=self.device))
        return model

    def examples(self, task: Optional[str], data: Optional[str], root: Path) -> list[tuple[str, str]]:
        """(prompt, completion) examples: an lm-eval task's training split, or a JSONL file relative to `root`."""
        if task is not None:
            return self.scorer.train_examples(task)
        path = root / data
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append((row["prompt"], row["completion"]))
            except (ValueError, KeyError, TypeError):
                raise EvomergeError(f"{path}: line {n} is not a JSON object with \"prompt\" and \"completion\". "
                                    "Fix: write one {\"prompt\": ..., \"completion\": ...} object per line") from None
        return out

    # ------------------------------------------------------------ candidates

    def evaluate(self, job: CrossoverJob, candidate: Candidate):
        """Merge one candidate into the resident evaluation model and score it on the select split."""
        model = self._resident_model(job)
        if self.cfg.engine == "fast" and job.genome.method.fast:
            self._merger(job, candidate).write(candidate.params, model)
        else:  # the reference engine, or a method without a fast kernel: mergekit merges every candidate
            from evomerge.crossover.merge import load_into, merge_in_memory

            load_into(model, merge_in_memory(job.merge_config(candidate.params), seed=job.seed,
                                             device=self.device))
        return self._scored(model, "select", what="the merge", docs=candidate.docs)

    def _merger(self, job: CrossoverJob, candidate: Candidate):
        """The crossover's resident parents, read and precomputed on its first candidate here."""
        key = (job.generation, job.slot)
        if key not in self._mergers:
            from evomerge.crossover.fast import ResidentMerge

            while len(self._mergers) >= self._keep:  # memory first: let the least recently used go
                self._mergers.popitem(last=False)
            self._mergers[key] = ResidentMerge(job.genome, job.merge_config(candidate.params), seed=job.seed,
                                               device=self.device)
        self._mergers.move_to_end(key)
        return self._mergers[key]

    def end_crossover(self, key: Optional[tuple[int, int]] = None) -> None:
        """Let the resident parents of crossover `key` (generation, slot) go; of every crossover without a key."""
        if key is None:
            self._mergers.clear()
        else:
            self._mergers.pop(key, None)

    def _resident_model(self, job: CrossoverJob):
        if self._resident is None:
            self._resident = self.load(job.resident_from)
        return self._resident

    # ------------------------------------------------------------ members

    def score(self, model_dir: str, which: str):
        model = self.load(model_dir)
        scored = self._scored(model, which, what="the model")
        self.scorer.release(model)
        return scored

    def _scored(self, model, which: str, *, what: str, docs: Optional[tuple[int, int]] = None):
        """The model's scores on a split (documents start..stop-1 with `docs`), or a failure if its weights or
        log-likelihoods are not finite."""
        from evomerge.fitness.lm_eval import Scored

        bad = nonfinite(model)
        if bad is not None:
            return Scored(results={}, docs={}, lm="", failure=f"{what} has non-finite weights ({bad})")
        return self.scorer.evaluate(model, self.tokenizer, which, docs=docs)

    def mutate(self, job: MutationJob, checkpoint: Callable[..., None]) -> Mutated:
        """Mutate the job's parent; the mutant is written to `job.out_dir` unless its weights are not finite."""
        return self.keep(job, MUTATION_OPERATORS.get(job.kind).mutate(self, self.load(job.parent), job, checkpoint))

    def keep(self, job: MutationJob, mutant) -> Mutated:
        """Write a finished mutant to `job.out_dir`, unless its weights are not finite."""
        from evomerge.models import save_model_dir

        bad = nonfinite(mutant.model)
        if bad is not None:
            return Mutated(recipe=mutant.recipe, failure=f"the {job.kind} mutant has non-finite weights ({bad})")
        job.out_dir.parent.mkdir(parents=True, exist_ok=True)
        save_model_dir(mutant.model, self.tokenizer, job.out_dir)
        return Mutated(recipe=mutant.recipe)


def nonfinite(model) -> Optional[str]:
    """The first tensor of `model` holding a NaN or an infinity, with how many; None if all are finite. One
    reduction per tensor, on the model's device."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                return f"{name}: {int((~torch.isfinite(p)).sum())} of {p.numel()} values"
    return None
