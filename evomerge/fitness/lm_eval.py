"""Scoring through lm-eval: the one wrapper around its task loading and `evaluate`.

Tasks are found with `TaskManager(include_path=...)` in the folder of tasks shipped with evomerge plus the
pipeline's include paths, built once per run for each split, and evaluated on models held in memory (`HFLM`).
A task given as `python: module:function` is a Python fitness function instead, called on the same model:

    def fitness(model, tokenizer, *, split: str, limit: int | None, device: str, **args) -> dict

(`split` is the split's name in the pipeline, `limit` its document limit; it returns its metrics, and may return
`docs`, how many documents it scored, and `outcomes`, {metric: [one value per document, in split order]}, which
standard errors and paired comparisons use). Its scores are stored and reused exactly as lm-eval's are. A function
that takes `docs` (a list of document indices, increasing) can be estimated from anchors
(fitness.select.estimator): it is then called with the documents to score and must return their outcomes.

lm-eval's tasks give each document's outcome through `log_samples`; they are kept for every metric whose
aggregate is the mean of its documents' values (acc, acc_norm, exact_match, ...).
evomerge/fitness/perplexity.py is one: a held-out log-likelihood on a JSONL text file.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from evomerge.config import FitnessSpec, SplitSpec
from evomerge.errors import ConfigError, EvomergeError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

Results = dict[str, dict[str, float]]  # task -> metric -> value
Docs = dict[str, tuple[int, ...]]       # task -> the indices of the documents to score, increasing


@dataclass(frozen=True)
class Scored:
    """One model scored on one split: task -> metric -> value, task -> documents scored, and the lm-eval model
    that computed it (FastLM or HFLM); or, for a model that cannot be scored, why (`failure`) and no results.
    `outcomes`: task -> metric -> each scored document's outcome, in split order, where the task gives them."""
    results: Results
    docs: dict[str, int]
    lm: str
    failure: Optional[str] = None
    outcomes: dict[str, dict[str, list[float]]] = field(default_factory=dict)


class NonFinite(ValueError):
    """A model's weights or log-likelihoods are NaN or infinite: it is not scored as a number."""


class Scorer:
    """The pipeline's fitness tasks, loaded once; `evaluate` scores a model held in memory on the select or report
    split. `engine` picks the lm-eval model that computes the log-likelihoods: `fast` (evomerge-fast) or
    `reference` (lm-eval's HFLM)."""

    def __init__(self, spec: FitnessSpec, *, include_paths: list[str] = (), device: str = "cpu",
                 engine: str = "fast", pipeline_file: str = "<pipeline>") -> None:
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        from lm_eval.tasks import TaskManager

        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        self.spec = spec
        self._device = device
        self.engine = engine
        self._cache: dict = {}  # the fast scorer's tokenised pairs and request layouts, shared by every model
        self._file = pipeline_file
        self._paths = [str(TASKS_DIR), *include_paths]
        self._manager = TaskManager(include_path=self._paths, include_defaults=False)
        self._configs = {t.task: self._task_config(i, t.task) for i, t in enumerate(spec.tasks) if t.python is None}
        self._functions = {t.task: self._function(i, t) for i, t in enumerate(spec.tasks) if t.python is not None}
        for i, t in enumerate(spec.tasks):
            if t.python is None:
                self._check_splits(i, t.task)
        self._loaded: dict[str, Any] = {}
        self._lms: dict[int, Any] = {}

    @cached_property
    def device(self) -> str:
        """The configured device, resolved once (evomerge/devices.py), on first use: after preflight checked it."""
        from evomerge.devices import resolve

        return resolve(self._device)

    # ------------------------------------------------------------ loading and validation

    def _task_config(self, index: int, name: str) -> dict:
        cfg = _read_task_config(self._manager, name)
        if cfg is None:
            raise ConfigError(file=self._file, key=f"fitness.tasks.{index}.task",
                              problem=f"unknown lm-eval task {name!r} (known here: "
                                      f"{', '.join(sorted(self._manager.all_subtasks))})",
                              fix="use a shipped task, or add the folder holding its YAML to fitness.include_path")
        metrics = [m["metric"] for m in cfg.get("metric_list", [])]
        wanted = self.spec.tasks[index].metric
        if metrics and wanted not in metrics:
            raise ConfigError(file=self._file, key=f"fitness.tasks.{index}.metric",
                              problem=f"task {name!r} reports {', '.join(metrics)}, not {wanted!r}",
                              fix=f"use one of: {', '.join(metrics)}")
        aggregation = next((m.get("aggregation", "mean") for m in cfg.get("metric_list", []) if m["metric"] == wanted),
                           "mean")
        if self.spec.select.estimator is not None and aggregation != "mean":
            raise ConfigError(file=self._file, key="fitness.select.estimator",
                              problem=f"anchors are picked from the seeds' per-document outcomes, and task {name!r} "
                                      f"aggregates {wanted!r} by {aggregation}, so its documents have no outcome of "
                                      "their own", fix=f"estimate only tasks whose metric is a mean over documents "
                                                       "(acc, acc_norm, exact_match), or drop fitness.select.estimator")
        return cfg

    def _function(self, index: int, task) -> Any:
        """A task's Python fitness function, imported (from the pipeline's folder too), with its arguments bound."""
        import functools
        import importlib
        import sys

        module, _, name = task.python.partition(":")
        root = str(Path(self._file).parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            fn = getattr(importlib.import_module(module), name)
        except Exception as e:  # noqa: BLE001 - any failure of a user's module is a config problem to report
            raise ConfigError(file=self._file, key=f"fitness.tasks.{index}.python",
                              problem=f"cannot import {task.python!r} ({type(e).__name__}: {e})".replace("\n", " "),
                              fix="give module:function of an importable module (a file NAME.py next to the "
                                  "pipeline works)") from None
        if not callable(fn):
            raise ConfigError(file=self._file, key=f"fitness.tasks.{index}.python",
                              problem=f"{task.python!r} is not a function", fix="name a function, module:function")
        if self.spec.select.estimator is not None and not _takes_docs(fn):
            raise ConfigError(file=self._file, key=f"fitness.tasks.{index}.python",
                              problem=f"{task.python!r} takes no `docs` argument, so it can neither be scored on "
                                      "anchor documents nor give the per-document outcomes anchors are picked from "
                                      "(fitness.select.estimator)",
                              fix="give the function a `docs` parameter (the indices of the documents to score) and "
                                  "return outcomes={metric: [a value per document]}, or drop fitness.select.estimator")
        args = dict(task.args)
        if isinstance(args.get("data"), str) and not Path(args["data"]).is_absolute():
            args["data"] = str(Path(self._file).parent / args["data"])
        return functools.partial(fn, **args)

    def _check_splits(self, index: int, name: str) -> None:
        files = self._configs[name].get("dataset_kwargs", {}).get("data_files")
        if not isinstance(files, dict):
            return  # a hub or script dataset: its splits are checked by lm-eval when loaded
        docs = {}
        for which, split in (("select", self.spec.select), ("report", self.spec.report)):
            if split.split not in files:
                raise ConfigError(file=self._file, key=f"fitness.{which}.split",
                                  problem=f"task {name!r} has no split {split.split!r} (it has {', '.join(files)})",
                                  fix="name one of the task's data_files splits")
            docs[which] = set()
            lines = [(n, line) for n, line in enumerate(Path(files[split.split]).read_text().splitlines(), start=1)
                     if line.strip()]
            if split.limit is not None and split.limit > len(lines):
                raise ConfigError(file=self._file, key=f"fitness.{which}.limit",
                                  problem=f"{split.limit} documents, but task {name!r} has {len(lines)} in its "
                                          f"{split.split!r} split",
                                  fix=f"use a limit of at most {len(lines)}, or omit it to score every document")
            counted = len(lines[:split.limit])
            n = getattr(split.estimator, "n", None)
            if n is not None and n > counted:
                raise ConfigError(file=self._file, key=f"fitness.{which}.estimator.n",
                                  problem=f"{n} anchor documents per task, but task {name!r} has {counted} in its "
                                          f"{split.split!r} split" + ("" if split.limit is None else
                                                                      f" (limit {split.limit})"),
                                  fix=f"use n of at most {counted} (a tenth of the split saves ten times the "
                                      "documents), or raise fitness.select.limit")
            for n, line in lines[:split.limit]:
                try:
                    docs[which].add(json.dumps(json.loads(line), sort_keys=True))
                except json.JSONDecodeError as e:
                    raise ConfigError(file=files[split.split], key=f"line {n}", problem=f"not a JSON object ({e})",
                                      fix=f"write one JSON document per line (task {name!r})") from None
        shared = docs["select"] & docs["report"]
        if shared:
            raise ConfigError(file=self._file, key="fitness.report.split",
                              problem=f"task {name!r}: {len(shared)} documents are in both the select split "
                                      f"{self.spec.select.split!r} and the report split {self.spec.report.split!r}, "
                                      "so the report would not be held out",
                              fix="use disjoint splits (the shipped tasks have `select` and `report`)")

    def _tasks_for(self, which: str) -> Any:
        if which not in self._loaded:
            split = self._split(which)
            specs = [{**self._configs[t.task], "test_split": split.split, "task": t.task} for t in self.spec.tasks
                     if t.python is None]
            loaded = self._manager.load(specs)
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=self.spec.num_fewshot)
                task.set_fewshot_seed(seed=1234)
                _build_requests_once(task)
            self._loaded[which] = loaded
        return self._loaded[which]

    def _split(self, which: str) -> SplitSpec:
        return self.spec.split(which)

    # ------------------------------------------------------------ scoring

    def evaluate(self, model, tokenizer, which: str, docs: Optional[Docs] = None) -> Scored:
        """Score a model held in memory on the select or report split: on its first `limit` documents of every task,
        or with `docs` (task -> document indices, increasing) on those documents of each task (racing scores a
        candidate in slices, anchors on a few documents). Outcomes come in split order."""
        from lm_eval.evaluator import evaluate

        split = self._split(which)
        results: Results = {}
        counts: dict[str, int] = {}
        outcomes: dict[str, dict[str, list[float]]] = {}
        lm_tasks = [t for t in self.spec.tasks if t.python is None]
        lm = self._lm(model, tokenizer) if lm_tasks else None
        name = type(lm).__name__ if lm_tasks else "python"
        if docs is not None and not all(docs.get(t.task) for t in self.spec.tasks):
            raise ValueError(f"documents to score are given for {', '.join(docs)}, not for every task")
        try:
            if lm_tasks:
                window = {} if docs is None else {"samples": {t.task: list(docs[t.task]) for t in lm_tasks}}
                out = evaluate(lm=lm, task_dict=self._tasks_for(which), limit=None if docs else split.limit,
                               bootstrap_iters=0, log_samples=True, verbosity="ERROR", **window)
                for task in lm_tasks:
                    raw = out["results"][task.task]
                    results[task.task] = {k.split(",")[0]: float(v) for k, v in raw.items() if k.endswith(",none")
                                          and "_stderr" not in k and isinstance(v, (int, float))}
                    counts[task.task] = int(out["n-samples"][task.task]["effective"])
                    outcomes[task.task] = _per_document(out["samples"][task.task], results[task.task])
            for task in self.spec.tasks:
                if task.python is not None:
                    results[task.task], counts[task.task], outcomes[task.task] = self._call(
                        task, model, tokenizer, split, None if docs is None else list(docs[task.task]))
        except NonFinite as e:
            return Scored(results={}, docs={}, lm=name, failure=str(e))
        return Scored(results=results, docs=counts, lm=name, outcomes=outcomes)

    def _call(self, task, model, tokenizer, split: SplitSpec, docs: Optional[list[int]] = None
              ) -> tuple[dict[str, float], int, dict[str, list]]:
        """A Python fitness function's metrics, document count and per-document outcomes, checked: numbers,
        finite, the configured one, one outcome per document. With `docs` it is asked for those documents only."""
        import torch

        chosen = {} if docs is None else {"docs": docs}
        with torch.no_grad():
            out = self._functions[task.task](model, tokenizer, split=split.split, limit=split.limit,
                                             device=self.device, **chosen)
        where = f"the fitness function {task.python} (task {task.task!r})"
        per_doc = out.pop("outcomes", None) if isinstance(out, dict) else None
        if not isinstance(out, dict) or not all(isinstance(v, (int, float)) for v in out.values()):
            raise EvomergeError(f"{where} returned {type(out).__name__} {str(out)[:80]}, not a dict of numbers. "
                                "Fix: return {metric: value, ...}")
        metrics = {k: float(v) for k, v in out.items() if k != "docs"}
        if task.metric not in metrics:
            raise EvomergeError(f"{where} returned {', '.join(metrics) or 'no metric'}, not {task.metric!r}. Fix: set "
                                f"the task's metric to one of them")
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise NonFinite(f"{where} gave non-finite {', '.join(bad)}")
        docs = int(out.get("docs", len(chosen["docs"]) if chosen else split.limit or 0))
        if per_doc is None:
            if chosen:
                raise EvomergeError(f"{where} returned no per-document outcomes for the documents it was given, "
                                    "which an estimate from anchors needs. Fix: return outcomes={metric: [a value per "
                                    "document]}, or drop fitness.select.estimator")
            return metrics, docs, {}
        if not isinstance(per_doc, dict) or set(per_doc) - set(metrics):
            raise EvomergeError(f"{where} returned outcomes for {str(per_doc)[:80]}, not {{metric: [a value per "
                                "document]}} of its metrics. Fix: return outcomes={metric: [...]} or none")
        from evomerge.outcomes import check

        try:
            return metrics, docs, {m: check(v, docs, where).tolist() for m, v in per_doc.items()}
        except (TypeError, ValueError) as e:
            raise EvomergeError(f"{e}. Fix: return one finite outcome per document it scored (`docs` of them), "
                                "in split order") from None

    def _lm(self, model, tokenizer):
        if id(model) not in self._lms:
            self._lms[id(model)] = ENGINES[self.engine](self, model, tokenizer)
        return self._lms[id(model)]

    def release(self, model) -> None:
        self._lms.pop(id(model), None)

    # ------------------------------------------------------------ training data for LoRA

    def check_training_task(self, task_name: str, *, file: str, key: str) -> None:
        """Raise ConfigError unless the task exists and has a training split (for LoRA data)."""
        cfg = self._configs.get(task_name) or _read_task_config(self._manager, task_name)
        if cfg is None:
            raise ConfigError(file=file, key=key, problem=f"unknown lm-eval task {task_name!r} (known here: "
                                                           f"{', '.join(sorted(self._manager.all_subtasks))})",
                              fix="use a shipped task, or add the folder holding its YAML to the pipeline's "
                                  "fitness.include_path")
        if not cfg.get("training_split"):
            raise ConfigError(file=file, key=key, problem=f"task {task_name!r} has no training_split to train on",
                              fix="choose a task whose YAML names a training_split")

    def train_examples(self, task_name: str) -> list[tuple[str, str]]:
        """(prompt, completion) pairs from a task's training split, rendered by lm-eval's own templates."""
        cfg = self._configs.get(task_name) or _read_task_config(self._manager, task_name)
        task = next(iter(self._manager.load([{**cfg, "task": task_name}])["tasks"].values()))
        delim = task.config.target_delimiter
        examples = []
        for doc in task.training_docs():
            target = task.doc_to_target(doc)
            if task.config.output_type == "multiple_choice":
                target = task.doc_to_choice(doc)[target] if isinstance(target, int) else target
            examples.append((task.doc_to_text(doc), f"{delim}{target}"))
        return examples


def _takes_docs(fn) -> bool:
    """Whether a Python fitness function names a `docs` parameter (the documents to score): **kwargs does not count,
    since what it passes them on to may not take it."""
    import inspect

    try:
        return "docs" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _per_document(samples: list[dict], metrics: dict[str, float]) -> dict[str, list[float]]:
    """Each metric's per-document values from lm-eval's logged samples, in document order: for the metrics whose
    aggregate is their mean (the others, e.g. a corpus F1, have no per-document outcome)."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    out = {}
    for metric, value in metrics.items():
        values = [s.get(metric) for s in samples]
        if samples and all(isinstance(v, (int, float, bool)) for v in values):
            values = [float(v) for v in values]
            if abs(sum(values) / len(values) - value) <= 1e-9 * max(1.0, abs(value)):
                out[metric] = values
    return out


def _fast_lm(scorer: Scorer, model, tokenizer):
    from evomerge.fitness.fast_lm import FastLM

    return _quiet(FastLM)(pretrained=model, tokenizer=tokenizer, device=scorer.device,
                          batch_size=scorer.spec.batch_size, cache=scorer._cache)


def _hflm(scorer: Scorer, model, tokenizer):
    from lm_eval.models.huggingface import HFLM

    return _quiet(HFLM)(pretrained=model, tokenizer=tokenizer, device=scorer.device,
                        batch_size=scorer.spec.batch_size)


ENGINES = {"fast": _fast_lm, "reference": _hflm}  # engine -> the lm-eval model that computes log-likelihoods


def _build_requests_once(task) -> None:
    """lm-eval's `evaluate` rebuilds every request (templates, few-shot sampling) on every call; a crossover calls it
    for every candidate on the same documents. Keep the first build's instances and hand them back with their
    responses cleared (the only state `evaluate` leaves on them)."""
    build = task.build_all_requests
    built: dict[str, list] = {}

    def once(**kwargs) -> None:
        key = repr(sorted(kwargs.items()))
        if key not in built:
            build(**kwargs)
            built[key] = list(task._instances)
            return
        for instance in built[key]:
            instance.resps = []
            instance.filtered_resps = {}
        task._instances = list(built[key])

    task.build_all_requests = once


def _quiet(cls):
    """An lm-eval HF model class without its per-request progress bars: evomerge draws its own."""

    class Quiet(cls):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return _finite(super().loglikelihood(requests, disable_tqdm=True), lambda r: r[0])

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return _finite(super().loglikelihood_rolling(requests, disable_tqdm=True), lambda r: r)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

    Quiet.__name__ = Quiet.__qualname__ = cls.__name__  # what the scores say computed them
    return Quiet


def _finite(responses: list, value) -> list:
    """The responses, unless a log-likelihood is NaN or infinite (a broken model would still win argmaxes)."""
    bad = sum(not math.isfinite(value(r)) for r in responses)
    if bad:
        raise NonFinite(f"{bad} of {len(responses)} log-likelihoods are not finite")
    return responses


def _read_task_config(manager, name: str) -> Optional[dict]:
    """A task's full YAML config, with local data files resolved against the YAML's folder (not the cwd)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager.task_index.get(name)
    if entry is None or entry.yaml_path is None:
        return None
    cfg = load_yaml(entry.yaml_path)
    files = cfg.get("dataset_kwargs", {}).get("data_files")
    if cfg.get("dataset_path") == "json" and isinstance(files, dict):
        root = Path(entry.yaml_path).parent
        cfg["dataset_kwargs"] = {**cfg["dataset_kwargs"], "data_files": {k: str(root / v) for k, v in files.items()}}
    return cfg


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
