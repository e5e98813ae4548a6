"""Merge methods, one class per file; each is registered by name in evomerge.registry.CROSSOVERS."""
from evomerge.crossover.methods.base import MergeMethod, ResidentTensor, TaskVectorMethod

__all__ = ["MergeMethod", "ResidentTensor", "TaskVectorMethod"]
