"""Linear: a weighted mean of the parents, Σ w_i θ_i / Σ w_i (mergekit `linear`; model soups, arXiv 2203.05482)."""
from __future__ import annotations

from evomerge.crossover.methods.base import WEIGHT, Kernel, MergeMethod, ResidentTensor


def _linear(out, xs, w) -> None:
    acc = xs[0].float() * w[0]
    for i in range(1, len(xs)):
        acc = acc + xs[i].float() * w[i]
    out.copy_(acc / w.sum())


class Linear(MergeMethod):
    mergekit_method = "linear"
    parameters = (WEIGHT,)
    color = "#0072B2"
    fast = True
    kernel = Kernel(_linear)

    def prepare(self, t: ResidentTensor, parents: list, base) -> None:
        t.inputs = parents

    def write(self, t: ResidentTensor, params: dict, out) -> None:
        self.kernel(out, t.inputs, self.vec(self.values(params, WEIGHT, t.group)))
