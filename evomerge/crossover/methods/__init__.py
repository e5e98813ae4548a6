"""Merge methods, one class per file; each is registered by name in evomerge.registry.CROSSOVERS."""
from evomerge.crossover.methods.base import FixedMerge, MergeMethod, ResidentTensor, TaskVectorMethod

__all__ = ["FixedMerge", "MergeMethod", "ResidentTensor", "TaskVectorMethod"]
