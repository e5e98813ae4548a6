"""What every merge method keeps resident for one crossover, per weight and at 7B, measured on the real structures.

    python benchmarks/memory_plan.py                   # bfloat16, 2 and 3 parents, Llama-2-7B and Mistral-7B shapes

A `ResidentMerge` (evomerge/crossover/fast.py) is built for each method from a small random Llama in the run's
dtype, as on a GPU, and every tensor it holds is counted: the base, the parents or task vectors, and the method's
precompute (SLERP's angles). On a GPU, TIES selects each task vector's k-th magnitude per candidate and DARE redraws
mergekit's masks per candidate, so neither keeps anything more; on a CPU they keep one byte (TIES's rank bands) and
four bytes (DARE's uniforms) per task-vector entry instead. Every tensor is per weight, so bytes per weight times a
7B model's weight count is the resident memory of a 7B crossover. On top: the evaluation model (one copy of the
weights) and the largest transient, on the largest tensor (the embedding) while a candidate is written.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SHAPES = {  # name: (weights, the largest tensor's entries)
    "Llama-2-7B": (6_738_415_616, 32_000 * 4096),
    "Mistral-7B": (7_241_732_096, 32_000 * 4096),
}
GIB = 2 ** 30
GPU_GIB = 79.1  # an H100 80 GB as torch reports it


def _tensors(obj, seen: dict) -> None:
    if isinstance(obj, torch.Tensor):
        seen.setdefault((obj.untyped_storage().data_ptr(), obj.untyped_storage().nbytes()), obj.untyped_storage()
                        .nbytes())
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _tensors(x, seen)
    elif isinstance(obj, dict):
        for x in obj.values():
            _tensors(x, seen)


def resident_bytes_per_weight(method: str, parents: int, dtype: str, root: Path) -> float:
    from evomerge.config import CrossoverSpec
    from evomerge.crossover.fast import ResidentMerge
    from evomerge.crossover.genome import Genome
    from evomerge.registry import CROSSOVERS

    names = [f"p{i}" for i in range(parents)]
    cls = CROSSOVERS.get(method)
    genome = Genome(CrossoverSpec(method=method, search=cls.parameters if method != "slerp" else ("weight",)),
                    tuple(names), num_layers=2)
    params = genome.params([0.5] * genome.dim())
    config = genome.merge_config(params, paths={n: str(root / n) for n in names}, base_path=str(root / "base"),
                                 dtype=dtype)
    merge = ResidentMerge(genome, config, seed=0)
    seen: dict = {}
    for t in merge.tensors:
        _tensors([t.base, t.inputs, t.aux], seen)
    _tensors(vars(merge.method), seen)
    weights = sum(t.numel for t in merge.tensors)
    return sum(seen.values()) / weights


@contextlib.contextmanager
def as_on_a_gpu():
    """TIES and DARE as they run on a GPU (kth_largest and masks redrawn per candidate, nothing kept), on any device."""
    from evomerge.crossover.methods.dare_ties import DareTies
    from evomerge.crossover.methods.ties import Ties

    saved = DareTies.__dict__["keeps_stream"], Ties.__dict__["keeps_bands"]
    DareTies.keeps_stream = staticmethod(lambda device: False)
    Ties.keeps_bands = staticmethod(lambda device: False)
    try:
        yield
    finally:
        DareTies.keeps_stream, Ties.keeps_bands = saved


def tiny_parents(root: Path) -> Path:
    """The small random Llamas (base, p0, p1, p2) the per-weight counts are measured on."""
    from conftest import make_model

    for i, name in enumerate(["base", "p0", "p1", "p2"]):
        if not (root / name).exists():
            make_model(root / name, seed=i, layers=2)
    return root


def plan_gib(method: str, parents: int, dtype: str, weights: int, largest: int, root: Path) -> tuple[float, ...]:
    """(resident parents, + the evaluation model, peak with the largest transient) in GiB, for a model of `weights`
    weights whose largest tensor has `largest` entries, as on a GPU; `root` holds `tiny_parents`."""
    width = torch.tensor([], dtype=getattr(torch, dtype)).element_size()
    with as_on_a_gpu():
        per_weight = resident_bytes_per_weight(method, parents, dtype, root)
    # bytes per entry of the largest tensor while a candidate is written: TIES's magnitudes, kth_largest's digits,
    # its selection mask and the entries still in play; DARE's bernoulli mask, then mergekit's masked copy and its
    # magnitudes for the kept L1; all in the merge dtype
    transient = {"ties": 3 * width + 1, "dare_ties": 3 * width}.get(method, 0)
    resident = per_weight * weights / GIB
    total = resident + width * weights / GIB
    return per_weight, resident, total, total + transient * largest / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()

    width = torch.tensor([], dtype=getattr(torch, args.dtype)).element_size()
    root = tiny_parents(Path(tempfile.mkdtemp(prefix="evomerge-memory-")))
    print(f"\nresident memory of one crossover, {args.dtype}; evaluation model = {width} bytes per weight\n")
    head = " | ".join(f"{s}: parents / + eval model / peak" for s in SHAPES)
    print(f"| method | parents | resident bytes per weight | {head} | fits one 80 GB GPU |")
    print("|---|---:|---:|" + "---:|" * len(SHAPES) + "---|")
    for method, counts in [("linear", (2, 3)), ("task_arithmetic", (2, 3)), ("ties", (2, 3)), ("dare_ties", (2, 3)),
                           ("slerp", (2,))]:
        for parents in counts:
            cells, fits = [], True
            for weights, largest in SHAPES.values():
                per_weight, resident, total, peak = plan_gib(method, parents, args.dtype, weights, largest, root)
                fits &= peak <= GPU_GIB
                cells.append(f"{resident:.1f} / {total:.1f} / {peak:.1f} GiB")
            print(f"| {method} | {parents} | {per_weight:.2f} | " + " | ".join(cells)
                  + f" | {'yes' if fits else 'NO'} |")


if __name__ == "__main__":
    main()
