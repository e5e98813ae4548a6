"""The genome of a crossover: a vector that CMA-ES searches <-> a mergekit `MergeConfiguration`.

One parameter set (weight, and density for ties / dare_ties) per parent, or per parent and per group of N layers
(`layer_group`); tensors outside the decoder layers (embeddings, final norm, head) get a group of their own.
Per-group values are written as mergekit conditional parameters (`filter: model.layers.7.`), so the recipe that
mergekit-yaml reads gives exactly the merge that was scored.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from evomerge.config import BASE_METHODS, CrossoverSpec

# Search bounds per parameter: weights may overshoot 1 (task vectors extrapolate), densities stay in (0, 1].
BOUNDS = {"weight": (0.0, 1.5), "density": (0.05, 1.0), "t": (0.0, 1.0)}
_LAYER = re.compile(r"model\.layers\.(\d+)\.")
START = {"weight": 0.5, "density": 0.5, "t": 0.5}  # the middle of each range: no parent favoured


@dataclass(frozen=True)
class Genome:
    spec: CrossoverSpec
    parents: tuple[str, ...]   # member names, in selection order (slerp: the first is the base of the interpolation)
    num_layers: int

    @property
    def names(self) -> tuple[str, ...]:
        """The searched parameters, as mergekit calls them."""
        return ("t",) if self.spec.method == "slerp" else self.spec.search

    @property
    def groups(self) -> int:
        """Layer groups, plus one for the tensors outside the decoder layers; 1 without layer_group."""
        if self.spec.layer_group is None:
            return 1
        return math.ceil(self.num_layers / self.spec.layer_group) + 1

    @property
    def slots(self) -> int:
        """Parameter sets per group: one for slerp (a single t), else one per parent."""
        return 1 if self.spec.method == "slerp" else len(self.parents)

    def dim(self) -> int:
        return self.slots * len(self.names) * self.groups

    def x0(self) -> list[float]:
        return [START[n] for n in self._layout()]

    def bounds(self) -> tuple[list[float], list[float]]:
        lay = self._layout()
        return [BOUNDS[n][0] for n in lay], [BOUNDS[n][1] for n in lay]

    def _layout(self) -> list[str]:
        return [n for _slot in range(self.slots) for n in self.names for _g in range(self.groups)]

    def params(self, x: list[float]) -> dict:
        """The merge parameters a vector stands for: {slot: {param: [value per group]}}, clipped to bounds."""
        if len(x) != self.dim():
            raise ValueError(f"genome has {self.dim()} dimensions, got a vector of {len(x)}")
        out: dict = {}
        i = 0
        slot_names = ("t",) if self.spec.method == "slerp" else self.parents
        for slot in slot_names:
            out[slot] = {}
            for n in self.names:
                lo, hi = BOUNDS[n]
                out[slot][n] = [round(min(hi, max(lo, float(v))), 6) for v in x[i:i + self.groups]]
                i += self.groups
        return out

    def group_of(self, tensor: str) -> int:
        """The layer group whose parameters a tensor takes: the same rule as the `filter`s `_setting` writes."""
        if self.spec.layer_group is None:
            return 0
        match = _LAYER.match(tensor)
        return int(match.group(1)) // self.spec.layer_group if match else self.groups - 1

    def _setting(self, values: list[float]):
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

        method = self.spec.method
        data: dict = {"merge_method": method, "dtype": dtype, "out_dtype": dtype}
        if method == "slerp":
            data["base_model"] = paths[self.parents[0]]
            data["models"] = [{"model": paths[p]} for p in self.parents]
            data["parameters"] = {"t": self._setting(params["t"]["t"])}
        else:
            data["models"] = [{"model": paths[p], "parameters": {n: self._setting(params[p][n]) for n in self.names}}
                              for p in self.parents]
            if method in BASE_METHODS:
                data["base_model"] = base_path
        return MergeConfiguration.model_validate(data)
