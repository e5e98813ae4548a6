"""Registries: every extension point is a class found by name (mergekit's merge-method registry, lm-eval's
`register_model`). A built-in is one line below, a lazy "module:Class" target, so that reading a config never imports
torch; a plugin registers its class with `register`:

    from evomerge.registry import CROSSOVERS
    CROSSOVERS.register("della", Della)           # or @CROSSOVERS.register("della") on the class

An unknown name is an error that lists the registered ones; no name stands for a default kind.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name no class is registered under (a ValueError, so that pydantic reports it at the config key)."""


class Registry(Generic[T]):
    def __init__(self, what: str, builtins: dict[str, str]) -> None:
        self.what = what
        self._targets: dict[str, str | type] = dict(builtins)

    def register(self, name: str, cls: Optional[type] = None) -> Callable[[type], type] | type:
        """Register `cls` under `name` (replacing a class of the same name); as a decorator without `cls`."""
        def add(c: type) -> type:
            self._targets[name] = c
            c.name = name  # a class knows the name it is registered under (lineage labels, records)
            return c

        return add(cls) if cls is not None else add

    def get(self, name: str) -> type[T]:
        target = self._targets.get(name)
        if target is None:
            raise UnknownName(f"unknown {self.what} {name!r}; registered: {', '.join(self.names())}")
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            target.name = name
            self._targets[name] = target
        return target

    def names(self) -> list[str]:
        return list(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets


CROSSOVERS: Registry = Registry("crossover kind", {  # merge methods (parameter space) and layer_path (data flow)
    "linear": "evomerge.crossover.methods.linear:Linear",
    "ties": "evomerge.crossover.methods.ties:Ties",
    "dare_ties": "evomerge.crossover.methods.dare_ties:DareTies",
    "task_arithmetic": "evomerge.crossover.methods.task_arithmetic:TaskArithmetic",
    "slerp": "evomerge.crossover.methods.slerp:Slerp",
    "dare_linear": "evomerge.crossover.methods.dare_linear:DareLinear",
    "breadcrumbs": "evomerge.crossover.methods.breadcrumbs:Breadcrumbs",
    "breadcrumbs_ties": "evomerge.crossover.methods.breadcrumbs_ties:BreadcrumbsTies",
    "della": "evomerge.crossover.methods.della:Della",
    "della_linear": "evomerge.crossover.methods.della_linear:DellaLinear",
    "nuslerp": "evomerge.crossover.methods.nuslerp:NuSlerp",
    "multislerp": "evomerge.crossover.methods.multislerp:MultiSlerp",
    "sce": "evomerge.crossover.methods.sce:Sce",
    "model_stock": "evomerge.crossover.methods.model_stock:ModelStock",
    "karcher": "evomerge.crossover.methods.karcher:Karcher",
    "arcee_fusion": "evomerge.crossover.methods.arcee_fusion:ArceeFusion",
    "layer_path": "evomerge.crossover.layer_path:LayerPath",
})
MUTATION_OPERATORS: Registry = Registry("mutation operator", {
    "lora": "evomerge.mutation.lora:LoraMutation",
    "es": "evomerge.mutation.es:NoiseEs",
})
PARENT_SELECTORS: Registry = Registry("parent selector", {
    "tournament": "evomerge.selection.tournament:Tournament",
    "uniform": "evomerge.selection.uniform:Uniform",
    "nsga2": "evomerge.selection.nsga2:Nsga2Parents",
    "attraction": "evomerge.selection.attraction:Attraction",
})
SURVIVOR_SELECTORS: Registry = Registry("survivor selector", {
    "elitist": "evomerge.selection.elitist:Elitist",
    "nsga2": "evomerge.selection.nsga2:Nsga2Survivors",
    "shared": "evomerge.selection.shared:Shared",
})
EXECUTORS: Registry = Registry("executor", {
    "serial": "evomerge.executor.serial:SerialExecutor",
    "ray": "evomerge.executor.ray:RayExecutor",
})
ESTIMATORS: Registry = Registry("fitness estimator", {  # fitness.select.estimator: a select score from fewer documents
    "anchors": "evomerge.fitness.anchors:Anchors",
})
STORES: Registry = Registry("store backend", {
    "sqlite": "evomerge.store.sqlite:SqliteStore",
    "memory": "evomerge.store.memory:MemoryStore",
})
