"""SCE (Wan et al., FuseChat, arXiv 2408.07990; mergekit `sce`): Select the entries whose task vectors vary most
across the parents (the top `select_topk` share), Calculate each parent's weight from its task vector's energy, and
Erase the entries whose sign disagrees with the sum. The parents carry no weights, so the genome is one
`select_topk` per layer group (`search: [select_topk]`). No fast kernel: mergekit merges every candidate."""
from __future__ import annotations

from typing import Optional

from evomerge.crossover.methods.base import TaskVectorMethod

SELECT_TOPK = "select_topk"


class Sce(TaskVectorMethod):
    mergekit_method = "sce"
    parameters = (SELECT_TOPK,)
    min_parents = 2
    bounds = {SELECT_TOPK: (0.05, 1.0)}
    start = {SELECT_TOPK: 0.5}
    color = "#17BECF"

    @classmethod
    def owners(cls, parents: tuple[str, ...]) -> tuple[str, ...]:
        return (SELECT_TOPK,)  # one value for all the parents, not one per parent

    @classmethod
    def mergekit_config(cls, genome, params: dict, *, paths: dict[str, str], base_path: Optional[str],
                        dtype: str) -> dict:
        return {"merge_method": cls.mergekit_method, "dtype": dtype, "out_dtype": dtype, "base_model": base_path,
                "models": [{"model": paths[p]} for p in genome.parents],
                "parameters": {SELECT_TOPK: genome.setting(params[SELECT_TOPK][SELECT_TOPK])}}

    @classmethod
    def edge_label(cls, params: dict, parent: str) -> str:
        values = params.get("merge", {}).get(SELECT_TOPK, {}).get(SELECT_TOPK, [])
        return f"{cls.name} {SELECT_TOPK}={'/'.join(f'{v:.3f}' for v in values)}".strip()
