"""Layer paths: crossover in data-flow space (Akiba et al., "Evolutionary Optimization of Model Merging Recipes",
arXiv 2403.13187, section 3.2). The child is not a mix of weights but a stack of the parents' own decoder layers:
the path a token takes through them.

**Genome** (the paper's layout). Over the parents' layers, M in all, in selection order (parent 0's layers 0..L0-1,
then parent 1's...), `repeats` passes give T = M·r slots. Slot t holds one indicator: the layer is on the path
where the indicator is above 0.5 (CMA-ES searches the continuous relaxation). Where the path crosses from one
parent to another (the embedding counts as its parent's), the next layer's residual branches, `o_proj` and
`down_proj`, are scaled: one scale per ordered pair of parents (`scales: pair`), one per slot (`slot`), or none.
The child keeps the embedding, final norm and head of parent `embed_from`. A path with no layers, or longer than
`max_layers`, is an invalid candidate: it is not scored, and CMA-ES is told the worst score.

**Recipe.** mergekit's `passthrough` with `slices`: the runs of consecutive layers in path order, a scaled layer
in a slice of its own with a per-tensor `scale`; an empty slice of parent `embed_from` first and last, since
mergekit takes the embedding from the first slice and the norm and head from the last. `mergekit-yaml` rebuilds the
child from it; its `num_hidden_layers` is the path's length.

**Fast path** (evomerge/crossover/path_model.py). A candidate copies no weights: a `PathModel` holds the parents
for the whole crossover and, per candidate, points a shell model's layer list at their layer modules in path order;
a forward hook scales `o_proj` and `down_proj` while a layer runs at a crossing, and each step gives the attention
its place in the path as its `layer_idx` (the KV-cache slot of a repeated layer). tests/test_layer_path.py checks it
against `mergekit-yaml`'s model (float32, 1e-5).
"""
from __future__ import annotations

from typing import Any, Optional

from evomerge.crossover.kind import CrossoverKind, InvalidCandidate

ON, OFF = 0.85, 0.15      # start values of an indicator: the path starts as parent `embed_from`, whole
SCALE_BOUNDS, SCALE_START = (0.5, 1.5), 1.0
SCALED = ("o_proj", "down_proj")   # the residual branches' output projections (Llama, Mistral, Qwen2, Gemma...)
PATH, EMBED = "path", "embed"


class LayerPath(CrossoverKind):
    min_parents = 1
    same_depth = False
    color = "#F0E442"

    # ------------------------------------------------------------ config rules

    @classmethod
    def check_spec(cls, spec: Any) -> None:
        if spec.search != ("weight",) or spec.layer_group is not None:
            raise ValueError("layer_path searches the path itself: drop `search` and `layer_group` (its settings go "
                             "under `path`: repeats, max_layers, scales, embed_from)")

    @staticmethod
    def settings(genome) -> Any:
        from evomerge.config import PathSpec

        return genome.spec.path or PathSpec()

    # ------------------------------------------------------------ search space

    @classmethod
    def slots(cls, genome) -> list[tuple[int, int, int]]:
        """(repeat, parent index, layer) of each slot, in path order."""
        if len(genome.depths) != len(genome.parents):
            raise ValueError("a layer path's genome needs each parent's depth")
        return [(r, i, layer) for r in range(cls.settings(genome).repeats)
                for i, depth in enumerate(genome.depths) for layer in range(depth)]

    @classmethod
    def scale_keys(cls, genome) -> list:
        """What each scale dimension belongs to: an ordered pair of parent indices, or a slot index."""
        mode, k = cls.settings(genome).scales, len(genome.parents)
        if mode == "pair":
            return [(a, b) for a in range(k) for b in range(k) if a != b]
        if mode == "slot":
            return list(range(len(cls.slots(genome))))
        return []

    @classmethod
    def dim(cls, genome) -> int:
        return len(cls.slots(genome)) + len(cls.scale_keys(genome))

    @classmethod
    def x0(cls, genome) -> list[float]:
        first = cls.settings(genome).embed_from
        return ([ON if (r, i) == (0, first) else OFF for r, i, _ in cls.slots(genome)]
                + [SCALE_START] * len(cls.scale_keys(genome)))

    @classmethod
    def box(cls, genome) -> tuple[list[float], list[float]]:
        n, m = len(cls.slots(genome)), len(cls.scale_keys(genome))
        return [0.0] * n + [SCALE_BOUNDS[0]] * m, [1.0] * n + [SCALE_BOUNDS[1]] * m

    @classmethod
    def decode(cls, genome, x: list[float]) -> dict:
        """{"path": [[parent, layer, scale], ...] in order, "embed": parent}: scale 1 except at a crossing."""
        slots, keys = cls.slots(genome), cls.scale_keys(genome)
        scales = {key: round(min(SCALE_BOUNDS[1], max(SCALE_BOUNDS[0], float(v))), 6)
                  for key, v in zip(keys, x[len(slots):])}
        embed = cls.settings(genome).embed_from
        path, previous = [], embed
        for t, ((_r, i, layer), v) in enumerate(zip(slots, x)):
            if float(v) <= 0.5:
                continue
            scale = 1.0
            if i != previous:
                scale = scales.get((previous, i), scales.get(t, 1.0))
            path.append([genome.parents[i], layer, scale])
            previous = i
        return {PATH: path, EMBED: genome.parents[embed]}

    @classmethod
    def depth(cls, genome, params: dict) -> int:
        return len(params[PATH])

    @classmethod
    def check(cls, genome, params: dict) -> None:
        """Raise InvalidCandidate for a path that gives no model."""
        n, limit = len(params[PATH]), cls.settings(genome).max_layers
        if n == 0:
            raise InvalidCandidate("the layer path has no layers")
        if limit is not None and n > limit:
            raise InvalidCandidate(f"the layer path has {n} layers, more than max_layers {limit}")

    # ------------------------------------------------------------ mergekit and lineage

    @staticmethod
    def runs(path: list) -> list[tuple[str, int, int, float]]:
        """The path as runs (parent, first layer, last layer + 1, scale of the first): consecutive layers of one
        parent, a scaled layer starting a run of its own."""
        out: list[list] = []
        for parent, layer, scale in path:
            last = out[-1] if out else None
            if last and last[0] == parent and last[2] == layer and scale == 1.0 and last[3] == 1.0:
                last[2] += 1
            else:
                out.append([parent, layer, layer + 1, scale])
        return [tuple(r) for r in out]

    @classmethod
    def mergekit_config(cls, genome, params: dict, *, paths: dict[str, str], base_path: Optional[str],
                        dtype: str) -> dict:
        anchor = {"sources": [{"model": paths[params[EMBED]], "layer_range": [0, 0]}]}  # embedding; norm and head
        slices = []
        for parent, start, stop, scale in cls.runs(params[PATH]):
            source: dict = {"model": paths[parent], "layer_range": [start, stop]}
            if scale != 1.0:
                source["parameters"] = {"scale": [*({"filter": name, "value": scale} for name in SCALED),
                                                  {"value": 1.0}]}
            slices.append({"sources": [source]})
        return {"merge_method": "passthrough", "dtype": dtype, "out_dtype": dtype,
                "slices": [anchor, *slices, anchor]}

    @classmethod
    def describe(cls, params: dict) -> str:
        """`a[0-5] b[4-11]×0.9 a[12-29]`: runs of consecutive layers, a crossing's scale after the runs it starts;
        one parent's runs in a row share a bracket (`a[0-27,29]`)."""
        parts: list[list] = []  # [parent, [[start, stop], ...], scale]
        for parent, start, stop, scale in cls.runs(params[PATH]):
            if parts and parts[-1][0] == parent and scale == 1.0:
                ranges = parts[-1][1]
                if ranges[-1][1] == start:
                    ranges[-1][1] = stop  # a scaled layer's own slice, and the layers after it
                else:
                    ranges.append([start, stop])
            else:
                parts.append([parent, [[start, stop]], scale])
        return " ".join(
            f"{parent}[{','.join(f'{a}' if b - a == 1 else f'{a}-{b - 1}' for a, b in ranges)}]"
            + (f"×{scale:.2f}".rstrip("0").rstrip(".") if scale != 1.0 else "")
            for parent, ranges, scale in parts) or "(no layers)"

    @classmethod
    def drawn_path(cls, params: dict) -> Optional[list[dict]]:
        return [{"parent": p, "start": a, "stop": b, "scale": s} for p, a, b, s in cls.runs(params.get(PATH, []))]

    @classmethod
    def edge_label(cls, params: dict, parent: str) -> str:
        merge = params.get("merge", {})
        return f"{cls.name} {cls.describe(merge)}" if PATH in merge else cls.name

    # ------------------------------------------------------------ candidates

    @classmethod
    def resident(cls, genome, paths: dict[str, str], load: Any) -> Any:
        """The crossover's parents held for its candidates (evomerge/crossover/path_model.py)."""
        from evomerge.crossover.path_model import PathModel

        return PathModel({p: paths[p] for p in genome.parents}, load=load, scaled=SCALED,
                         embed=genome.parents[cls.settings(genome).embed_from])

    @classmethod
    def candidate(cls, bench: Any, job: Any, candidate: Any) -> Any:
        cls.check(job.genome, candidate.params)
        if bench.cfg.engine == "fast":
            return bench.resident(job, lambda: cls.resident(job.genome, job.paths, bench.load)).build(
                candidate.params[PATH])
        from evomerge.crossover.merge import merge_in_memory  # the reference engine: mergekit's stack, loaded

        config = job.merge_config(candidate.params)
        return bench.scratch(bench.holding(merge_in_memory(config, seed=job.seed, device=bench.device), like=config))
