"""Arcee Fusion (mergekit `arcee_fusion`): the second parent's entries that differ most from the first's (by a
KL-based importance with a dynamic threshold) are fused into the first. Nothing to search: one merge per crossover,
by mergekit. Exactly two parents; the first is mergekit's `base_model`."""
from __future__ import annotations

from typing import Optional

from evomerge.crossover.methods.base import FixedMerge


class ArceeFusion(FixedMerge):
    mergekit_method = "arcee_fusion"
    min_parents = max_parents = 2
    color = "#BCBD22"

    @classmethod
    def mergekit_config(cls, genome, params: dict, *, paths: dict[str, str], base_path: Optional[str],
                        dtype: str) -> dict:
        first, second = genome.parents
        return {"merge_method": cls.mergekit_method, "dtype": dtype, "out_dtype": dtype,
                "base_model": paths[first], "models": [{"model": paths[second]}]}
