"""What a merge method is (mergekit's `merge_methods/base.py` is the model): the parameter-space crossover kind. One
class carries its config rules, its search space (parameters, bounds, start values), its mergekit configuration, its
lineage label and, optionally, a fast kernel with the precompute it needs. A method without a fast kernel is merged
by mergekit for every candidate.

    from evomerge.registry import CROSSOVERS
    CROSSOVERS.register("della", Della)     # Della(MergeMethod) with mergekit_method = "della"

Importing a method module must not import torch (a config is validated before torch is loaded): kernels use tensor
methods only, and precompute imports torch inside the function.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from evomerge.crossover.kind import CrossoverKind

if TYPE_CHECKING:
    from evomerge.crossover.genome import Genome

log = logging.getLogger(__name__)

WEIGHT, DENSITY = "weight", "density"


@dataclass
class ResidentTensor:
    """One output tensor of a crossover held in memory: the parents' values (or their task vectors) as 1-D views, and
    what the method precomputed for it."""
    name: str
    group: int                                            # the layer group whose parameters it takes
    base: Any = None                                      # the base model's tensor (task-vector methods)
    inputs: list = field(default_factory=list)            # task vectors, or the parents themselves
    aux: dict = field(default_factory=dict)               # the method's precompute (ranks, angles, ...)

    @property
    def numel(self) -> int:
        return self.inputs[0].numel()


class Kernel:
    """A `torch.compile`d elementwise pass (dynamic shapes: one compilation serves every tensor), compiled on first
    use; plain eager where compilation is unavailable (no C++ compiler), with one warning, since it computes the same."""

    eager = False

    def __init__(self, fn: Callable) -> None:
        self._fn = fn
        self._compiled: Optional[Callable] = None

    def __call__(self, *args) -> Any:
        if Kernel.eager:
            return self._fn(*args)
        try:
            if self._compiled is None:
                import torch

                self._compiled = torch.compile(self._fn, dynamic=True)
            return self._compiled(*args)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager kernel is correct, only slower
            log.warning("torch.compile is unavailable (%s: %s); merging candidates with eager kernels",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            Kernel.eager = True
            return self._fn(*args)


class MergeMethod(CrossoverKind):
    """A merge method: one mergekit `models:` merge of same-shaped parents, with a parameter set per parent (and
    layer group). Class attributes describe it; an instance holds one crossover's fast-path state."""

    mergekit_method: ClassVar[str] = ""      # mergekit's `merge_method`
    parameters: ClassVar[tuple[str, ...]] = (WEIGHT,)  # what CMA-ES may search, per parent (mergekit's names)
    bounds: ClassVar[dict[str, tuple[float, float]]] = {WEIGHT: (0.0, 1.5), DENSITY: (0.05, 1.0)}  # weights may
    start: ClassVar[dict[str, float]] = {WEIGHT: 0.5, DENSITY: 0.5}  # overshoot 1: task vectors extrapolate
    fast: ClassVar[bool] = False             # has a fast kernel (prepare/write below)

    # ------------------------------------------------------------ config rules

    @classmethod
    def check_search(cls, search: tuple[str, ...]) -> None:
        """Raise ValueError if `search` names a parameter this method does not have."""
        for name in search:
            if name not in cls.parameters:
                raise ValueError(f"`{name}` is not a parameter of {cls.name} (it searches: {', '.join(cls.parameters)})")

    @classmethod
    def check_spec(cls, spec: Any) -> None:
        if spec.path is not None:
            raise ValueError(f"`path` settings are for layer_path; {cls.name} merges weights (drop `path`)")
        cls.check_search(spec.search)

    # ------------------------------------------------------------ search space

    @classmethod
    def dim(cls, genome: "Genome") -> int:
        return len(genome.owners) * len(genome.names) * genome.groups

    @classmethod
    def x0(cls, genome: "Genome") -> list[float]:
        return [cls.start[n] for n in cls._layout(genome)]

    @classmethod
    def box(cls, genome: "Genome") -> tuple[list[float], list[float]]:
        lay = cls._layout(genome)
        return [cls.bounds[n][0] for n in lay], [cls.bounds[n][1] for n in lay]

    @classmethod
    def _layout(cls, genome: "Genome") -> list[str]:
        return [n for _owner in genome.owners for n in genome.names for _g in range(genome.groups)]

    @classmethod
    def decode(cls, genome: "Genome", x: list[float]) -> dict:
        """{owner: {param: [value per group]}}, clipped to bounds, then made feasible."""
        out: dict = {}
        i = 0
        for owner in genome.owners:
            out[owner] = {}
            for n in genome.names:
                lo, hi = cls.bounds[n]
                out[owner][n] = [round(min(hi, max(lo, float(v))), 6) for v in x[i:i + genome.groups]]
                i += genome.groups
        return cls.feasible(out)

    @classmethod
    def searched(cls, search: tuple[str, ...]) -> tuple[str, ...]:
        """The parameter names of the genome (mergekit's names)."""
        return search

    @classmethod
    def owners(cls, parents: tuple[str, ...]) -> tuple[str, ...]:
        """Who a parameter set belongs to: each parent, by name (slerp: its single `t`)."""
        return parents

    @classmethod
    def feasible(cls, params: dict) -> dict:
        """A candidate's parameters ({owner: {param: [value per group]}}, already within bounds) moved where mergekit
        accepts them, when a constraint ties parameters together (DELLA: density ± epsilon inside (0, 1))."""
        return params

    # ------------------------------------------------------------ mergekit and lineage

    @classmethod
    def mergekit_config(cls, genome: "Genome", params: dict, *, paths: dict[str, str], base_path: Optional[str],
                        dtype: str) -> dict:
        """The mergekit configuration of one proposal, as the mapping `MergeConfiguration` validates."""
        data: dict = {"merge_method": cls.mergekit_method, "dtype": dtype, "out_dtype": dtype,
                      "models": [{"model": paths[p],
                                  "parameters": {n: genome.setting(params[p][n]) for n in genome.names}}
                                 for p in genome.parents]}
        if cls.uses_base:
            data["base_model"] = base_path
        return data

    @classmethod
    def edge_label(cls, params: dict, parent: str) -> str:
        """The lineage edge parent -> child: the method and the values that concern this parent."""
        values = params.get("merge", {}).get(parent, {})
        shown = " ".join(f"{k}={'/'.join(f'{v:.3f}' for v in vs)}" for k, vs in values.items())
        return f"{cls.name} {shown}".strip()

    @classmethod
    def describe(cls, params: dict) -> str:
        parts = []
        for owner, values in params.items():
            parts.append(f"{owner}: " + ", ".join(f"{k}={'/'.join(f'{v:.2f}' for v in vs)}" for k, vs in values.items()))
        return "[" + "; ".join(parts) + "]"

    # ------------------------------------------------------------ candidates

    @classmethod
    def candidate(cls, bench: Any, job: Any, candidate: Any) -> Any:
        """The candidate merged into the workbench's resident evaluation model: by the fast kernel (the fast engine),
        or by mergekit (the reference engine, or a method without a fast kernel)."""
        model = bench.resident_model(job)
        if bench.cfg.engine == "fast" and cls.fast:
            from evomerge.crossover.fast import ResidentMerge

            merger = bench.resident(job, lambda: ResidentMerge(job.genome, job.merge_config(candidate.params),
                                                               seed=job.seed, device=bench.device))
            merger.write(candidate.params, model)
        else:
            from evomerge.crossover.merge import load_into, merge_in_memory

            load_into(model, merge_in_memory(job.merge_config(candidate.params), seed=job.seed, device=bench.device))
        return model

    # ------------------------------------------------------------ fast path (methods with `fast = True`)

    def __init__(self, genome: "Genome", *, device: Any) -> None:
        self.genome = genome
        self.device = device

    def prepare(self, t: ResidentTensor, parents: list, base: Any) -> None:
        """Fill `t` (inputs, aux) from the parents' and the base's tensors: what does not change between candidates."""
        raise NotImplementedError(f"{self.name} has no fast kernel")

    def finish(self, tensors: list[ResidentTensor], *, seed: int, dtype: Any) -> None:
        """Precompute that needs every tensor (TIES ranks, DARE's random stream)."""

    def begin(self, params: dict) -> None:
        """Called before the tensors of one candidate are written."""

    def write(self, t: ResidentTensor, params: dict, out: Any) -> None:
        """Write the candidate's merge of `t` into `out` (a 1-D view of the evaluation model's tensor)."""
        raise NotImplementedError(f"{self.name} has no fast kernel")

    # ------------------------------------------------------------ helpers for kernels

    def values(self, params: dict, name: str, group: int, default: Optional[float] = None) -> list[float]:
        """Each parent's value of `name` for a layer group (`default` where the genome does not search it)."""
        out = []
        for p in self.genome.parents:
            values = params[p].get(name)
            out.append(default if values is None else values[group])
        return out

    def vec(self, values: list, dtype: Any = None) -> Any:
        import torch

        return torch.tensor(values, dtype=dtype or torch.float32, device=self.device)


class TaskVectorMethod(MergeMethod):
    """A method over task vectors (parent - base): the fast path computes them once per crossover."""

    uses_base = True

    def prepare(self, t: ResidentTensor, parents: list, base: Any) -> None:
        t.base = base
        t.inputs = [p - base for p in parents]  # mergekit: entry.tensor - base, in the merge dtype


class FixedMerge(MergeMethod):
    """A merge method with nothing to search (its weights come from the parents themselves): the genome has no
    dimensions, and the crossover scores its one merge. `search` is left out."""

    parameters = ()

    @classmethod
    def check_search(cls, search: tuple[str, ...]) -> None:
        if search not in ((), (WEIGHT,)):  # (weight,) is the default a configuration that leaves it out holds
            raise ValueError(f"{cls.name} has nothing to search (its weights come from the parents): drop `search`")

    @classmethod
    def searched(cls, search: tuple[str, ...]) -> tuple[str, ...]:
        return ()

    @classmethod
    def owners(cls, parents: tuple[str, ...]) -> tuple[str, ...]:
        return ()

    @classmethod
    def mergekit_config(cls, genome: "Genome", params: dict, *, paths: dict[str, str], base_path: Optional[str],
                        dtype: str) -> dict:
        data: dict = {"merge_method": cls.mergekit_method, "dtype": dtype, "out_dtype": dtype,
                      "models": [{"model": paths[p]} for p in genome.parents]}
        if cls.uses_base:
            data["base_model"] = base_path
        return data
