"""Task arithmetic: base + Σ w_i (θ_i − base) (mergekit `task_arithmetic`; Ilharco et al., arXiv 2212.04089)."""
from __future__ import annotations

from evomerge.crossover.methods.base import WEIGHT, Kernel, ResidentTensor, TaskVectorMethod


def _task_arithmetic(out, base, tvs, w) -> None:
    acc = tvs[0] * w[0]
    for i in range(1, len(tvs)):
        acc = acc + tvs[i] * w[i]
    out.copy_(base + acc)


class TaskArithmetic(TaskVectorMethod):
    mergekit_method = "task_arithmetic"
    parameters = (WEIGHT,)
    color = "#56B4E9"
    fast = True
    kernel = Kernel(_task_arithmetic)

    def write(self, t: ResidentTensor, params: dict, out) -> None:
        self.kernel(out, t.base, t.inputs, self.vec(self.values(params, WEIGHT, t.group), t.base.dtype))
