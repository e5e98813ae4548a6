"""What a crossover kind is: how a vector that CMA-ES searches becomes a child, and the child's mergekit recipe.

Every kind is one class registered in `evomerge.registry.CROSSOVERS`, and owns
- its search space: `dim`, `x0`, `box` (the bounds), and `decode` (a vector -> the parameters stored with the candidate);
- its recipe: `mergekit_config` (what `mergekit-yaml` rebuilds the child from), and its labels (`describe`,
  `edge_label`);
- its candidate builder: `candidate` (the model a proposal is scored as, in a workbench).

Two families ship: parameter-space merges (`MergeMethod`, evomerge/crossover/methods/: a vector of weights per
parent -> one mergekit `models:` merge written into a resident model) and data-flow-space merges (`LayerPath`,
evomerge/crossover/layer_path.py: a vector of layer indicators -> a stack of the parents' layers). A kind with
nothing to search (`dim` 0: model_stock, karcher) scores its one merge.

Importing a kind's module must not import torch (a config is validated before torch is loaded).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional

if TYPE_CHECKING:
    from evomerge.crossover.genome import Genome


class InvalidCandidate(ValueError):
    """A proposal that decodes to no model (a layer path with no layers, or longer than allowed): it is not scored,
    and CMA-ES is told the worst score there is."""


class CrossoverKind:
    """A crossover kind. Class attributes describe it; `candidate` builds a proposal's model in a workbench."""

    name: ClassVar[str] = ""                 # the registry name (set when registered): the members' operator
    min_parents: ClassVar[int] = 1
    max_parents: ClassVar[Optional[int]] = None
    uses_base: ClassVar[bool] = False        # needs the population's base (task vectors)
    same_depth: ClassVar[bool] = True        # its parents have the base's layer count (it mixes tensors by name)
    base_apart: ClassVar[bool] = False       # the base is an input of its own, never a parent (model_stock)
    color: ClassVar[str] = "#444444"         # lineage edges, report, plots

    # ------------------------------------------------------------ config rules

    @classmethod
    def check_spec(cls, spec: Any) -> None:
        """Raise ValueError if a crossover operator's settings (config.CrossoverOperator) do not fit this kind."""

    @classmethod
    def check_parents(cls, n: int) -> None:
        if n < cls.min_parents or (cls.max_parents is not None and n > cls.max_parents):
            exact = cls.max_parents == cls.min_parents
            wanted = (f"exactly {cls.min_parents}" if exact else
                      f"{cls.min_parents} to {cls.max_parents}" if cls.max_parents else f"at least {cls.min_parents}")
            raise ValueError(f"{cls.name} merges {wanted} parents: set parents_per_child accordingly")

    # ------------------------------------------------------------ search space

    @classmethod
    def dim(cls, genome: "Genome") -> int:
        raise NotImplementedError

    @classmethod
    def x0(cls, genome: "Genome") -> list[float]:
        raise NotImplementedError

    @classmethod
    def box(cls, genome: "Genome") -> tuple[list[float], list[float]]:
        """The lower and the upper bound of each dimension."""
        raise NotImplementedError

    @classmethod
    def decode(cls, genome: "Genome", x: list[float]) -> dict:
        """The parameters a vector stands for, as stored with the candidate and the member (plain JSON)."""
        raise NotImplementedError

    # ------------------------------------------------------------ mergekit and lineage

    @classmethod
    def mergekit_config(cls, genome: "Genome", params: dict, *, paths: dict[str, str], base_path: Optional[str],
                        dtype: str) -> dict:
        """The mergekit configuration of one proposal, as the mapping `MergeConfiguration` validates."""
        raise NotImplementedError

    @classmethod
    def edge_label(cls, params: dict, parent: str) -> str:
        """The lineage edge parent -> child: the kind and what concerns this parent (`params`: the member's)."""
        return cls.name

    @classmethod
    def describe(cls, params: dict) -> str:
        """A candidate's decoded parameters in a line (progress log, leaderboard, report)."""
        raise NotImplementedError

    @classmethod
    def drawn_path(cls, params: dict) -> Optional[list[dict]]:
        """The child's layers as the report draws them (a layer path: its runs); None where there is no path."""
        return None

    @classmethod
    def depth(cls, genome: "Genome", params: dict) -> int:
        """The child's number of decoder layers."""
        return genome.num_layers

    # ------------------------------------------------------------ candidates

    @classmethod
    def candidate(cls, bench: Any, job: Any, candidate: Any) -> Any:
        """The model `candidate` (executor.base.Candidate) of crossover `job` is scored as, built in `bench` (a
        Workbench: its resident models and parents). Raise InvalidCandidate for a proposal with no model."""
        raise NotImplementedError
