"""The genome of a crossover: a vector that CMA-ES searches <-> a mergekit `MergeConfiguration`.

Its crossover kind (evomerge/crossover/kind.py) owns the search space and the recipe; the genome holds what they
are about: the operator's settings, the parents and their depths. For a merge method (parameter space): one
parameter set (weight, and density for ties / dare_ties) per parent, or per parent and per group of N layers
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

from evomerge.config import CrossoverOperator
from evomerge.registry import CROSSOVERS

_LAYER = re.compile(r"model\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Genome:
    spec: CrossoverOperator
    parents: tuple[str, ...]   # member names, in selection order (slerp: the first is the base of the interpolation)
    num_layers: int            # the base's decoder layers (a parameter-space merge has its shape)
    depths: tuple[int, ...] = ()  # each parent's decoder layers, in `parents` order (a layer path needs them)

    @cached_property
    def method(self):
        """The crossover kind's class."""
        return CROSSOVERS.get(self.spec.method)

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
        return self.method.dim(self)

    def x0(self) -> list[float]:
        return self.method.x0(self)

    def bounds(self) -> tuple[list[float], list[float]]:
        return self.method.box(self)

    def params(self, x: list[float]) -> dict:
        """The parameters a vector stands for (merge methods: {owner: {param: [value per group]}}, clipped to
        bounds; a layer path: its layers), as stored with the candidate."""
        if len(x) != self.dim():
            raise ValueError(f"genome has {self.dim()} dimensions, got a vector of {len(x)}")
        return self.method.decode(self, list(x))

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
