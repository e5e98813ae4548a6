"""Executors: where candidates and mutations are computed (base.py: the interface and its jobs)."""
from evomerge.executor.base import Candidate, CrossoverJob, Executor, Mutated, MutationJob, ParentSource

__all__ = ["Candidate", "CrossoverJob", "Executor", "Mutated", "MutationJob", "ParentSource"]
