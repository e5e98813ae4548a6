"""The genome of a crossover: a vector that CMA-ES searches <-> a mergekit `MergeConfiguration`.

One parameter set (weight, and density for ties / dare_ties) per parent, or per parent and per group of N layers
(`layer_group`); tensors outside the decoder layers (embeddings, final norm, head) get a group of their own.
Per-group values are written as mergekit conditional parameters (`filter: model.layers.7.`), so the recipe that
mergekit-yaml reads gives exactly the merge that was scored. The merge method (evomerge/crossover/methods/) says
which parameters there are, their bounds and start values, and how they become a mergekit configuration.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from evomerge.config import CrossoverSpec
from evomerge.registry import MERGE_METHODS

_LAYER = re.compile(r"model\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Genome:
    spec: CrossoverSpec
    parents: tuple[str, ...]   # member names, in selection order (slerp: the first is the base of the interpolation)
    num_layers: int

    @cached_property
    def method(self):
        """The merge method's class."""
        return MERGE_METHODS.get(self.spec.method)

    @property
    def names(self) -> tuple[str, ...]:
        """The searched parameters, as mergekit calls them."""
        return self.method.searched(self.spec.search)

    @property
    def owners(self) -> tuple[str, ...]:
        """Whose parameter sets there are: each parent's, or one for the pair (slerp's t)."""
        return self.method.owners(self.parents)

    @property
    def groups(self) -> int:
        """Layer groups, plus one for the tensors outside the decoder layers; 1 without layer_group."""
        if self.spec.layer_group is None:
            return 1
        return math.ceil(self.num_layers / self.spec.layer_group) + 1

    def dim(self) -> int:
        return len(self.owners) * len(self.names) * self.groups

    def x0(self) -> list[float]:
        return [self.method.start[n] for n in self._layout()]

    def bounds(self) -> tuple[list[float], list[float]]:
        lay = self._layout()
        return [self.method.bounds[n][0] for n in lay], [self.method.bounds[n][1] for n in lay]

    def _layout(self) -> list[str]:
        return [n for _owner in self.owners for n in self.names for _g in range(self.groups)]

    def params(self, x: list[float]) -> dict:
        """The merge parameters a vector stands for: {owner: {param: [value per group]}}, clipped to bounds."""
        if len(x) != self.dim():
            raise ValueError(f"genome has {self.dim()} dimensions, got a vector of {len(x)}")
        out: dict = {}
        i = 0
        for owner in self.owners:
            out[owner] = {}
            for n in self.names:
                lo, hi = self.method.bounds[n]
                out[owner][n] = [round(min(hi, max(lo, float(v))), 6) for v in x[i:i + self.groups]]
                i += self.groups
        return self.method.feasible(out)

    def group_of(self, tensor: str) -> int:
        """The layer group whose parameters a tensor takes: the same rule as the `filter`s `setting` writes."""
        if self.spec.layer_group is None:
            return 0
        match = _LAYER.match(tensor)
        return int(match.group(1)) // self.spec.layer_group if match else self.groups - 1

    def setting(self, values: list[float]):
        """One parameter's per-group values as a mergekit setting: a number, or conditional values by layer."""
        if self.spec.layer_group is None:
            return values[0]
        size = self.spec.layer_group
        per_layer = [{"filter": f"model.layers.{layer}.", "value": values[layer // size]}
                     for layer in range(self.num_layers)]
        return per_layer + [{"value": values[-1]}]  # embeddings, final norm, head

    def merge_config(self, params: dict, *, paths: dict[str, str], base_path: Optional[str], dtype: str,
                     ) -> "MergeConfiguration":  # noqa: F821
        """The mergekit configuration of one proposal; `paths` maps parent names to model directories."""
        from mergekit.config import MergeConfiguration

        data = self.method.mergekit_config(self, params, paths=paths, base_path=base_path, dtype=dtype)
        return MergeConfiguration.model_validate(data)
