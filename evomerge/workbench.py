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
        self._scratch = None                       # the reference engine's last layer-path candidate

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
        from evomerge.crossover.merge import merge_in_memory

        merged = merge_in_memory(source.merge, seed=source.merge_seed, device=self.device)
        return self.holding(merged, like=source.merge)

    def holding(self, tensors: dict, *, like):
        """A model holding merged `tensors`: the architecture of the first model mergekit config `like` reads, with
        as many decoder layers as the tensors have (a layer path's child may have any number)."""
        from evomerge.crossover.merge import first_model, layers_in, load_into

        from transformers import AutoConfig

        path = first_model(like)
        config = AutoConfig.from_pretrained(path)
        depth = layers_in(tensors)
        if depth == config.num_hidden_layers:
            model = self.load(path)  # the architecture; every tensor is replaced
        else:  # another depth: built empty from the config, never loaded only to be dropped
            import torch
            from transformers import AutoModelForCausalLM

            config.num_hidden_layers = depth
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, self.cfg.dtype)).to(self.device)
        load_into(model, tensors)
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
        """Build one candidate (its crossover kind says how: a merge written into the resident evaluation model, a
        path through the resident parents' layers) and score it on the select split."""
        from evomerge.crossover.kind import InvalidCandidate
        from evomerge.fitness.lm_eval import Scored

        try:
            model = job.genome.method.candidate(self, job, candidate)
        except InvalidCandidate as e:
            return Scored(results={}, docs={}, lm="", failure=f"invalid candidate: {e}")
        return self._scored(model, "select", what="the merge", docs=candidate.docs)

    def resident(self, job: CrossoverJob, make: Callable[[], Any]):
        """What crossover `job` keeps in memory between its candidates (its resident parents), made by `make` on its
        first candidate here; the least recently used crossover's go when more than `resident_merges` are held."""
        key = (job.generation, job.slot)
        if key not in self._mergers:
            while len(self._mergers) >= self._keep:  # memory first: let the least recently used go
                self._release(self._mergers.popitem(last=False)[1])
            self._mergers[key] = make()
        self._mergers.move_to_end(key)
        return self._mergers[key]

    def _release(self, held) -> None:
        """Forget a resident crossover's models in the scorer (it keeps one lm-eval wrapper per model)."""
        model = getattr(held, "model", None)
        if model is not None and self._scorer is not None:
            self._scorer.release(model)

    def scratch(self, model):
        """A model built for one candidate only (the reference engine's layer path): the previous one is forgotten."""
        if self._scratch is not None and self._scorer is not None:
            self._scorer.release(self._scratch)
        self._scratch = model
        return model

    def end_crossover(self, key: Optional[tuple[int, int]] = None) -> None:
        """Let the resident parents of crossover `key` (generation, slot) go; of every crossover without a key."""
        for k in list(self._mergers) if key is None else [key]:
            held = self._mergers.pop(k, None)
            if held is not None:
                self._release(held)

    def resident_model(self, job: CrossoverJob):
        """The evaluation model merges are written into (loaded once, with the architecture of `job.resident_from`)."""
        if self._resident is None:
            self._resident = self.load(job.resident_from)
        return self._resident

    # ------------------------------------------------------------ members

    def score(self, model_dir: str, which: str, docs: Optional[dict[str, tuple[int, ...]]] = None):
        model = self.load(model_dir)
        scored = self._scored(model, which, what="the model", docs=docs)
        self.scorer.release(model)
        return scored

    def _scored(self, model, which: str, *, what: str, docs: Optional[dict[str, tuple[int, ...]]] = None):
        """The model's scores on a split (on each task's documents `docs` where given), or a failure if its weights
        or log-likelihoods are not finite."""
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
