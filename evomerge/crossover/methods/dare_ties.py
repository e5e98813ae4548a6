"""DARE-TIES (Yu et al., arXiv 2311.03099): drop each task-vector entry with probability 1 − density, rescale the
survivors to the task vector's L1 norm, then TIES sign consensus without normalisation (mergekit `dare_ties`).

The fast path draws the uniforms mergekit's `torch.bernoulli` masks would draw with the run's seed (one stream, in
mergekit's execution order), so that a density becomes a threshold on them."""
from __future__ import annotations

import math

from evomerge.crossover.methods.base import DENSITY, WEIGHT, Kernel, ResidentTensor, TaskVectorMethod
from evomerge.crossover.methods.ties import _consensus

RESCALE_EPS = 1e-7  # mergekit's rescaled_masked_tensor


def _kept_l1(tv, u, density):
    return tv.abs().where(u < density, 0.0).sum()


def _dare_ties(out, base, tvs, us, density, scale, w) -> None:
    """Keep where the drawn uniform < density (torch.bernoulli's rule), rescale to the same L1, then TIES."""
    deltas = [(tv.where(u < density[i], 0.0) * scale[i]) * w[i] for i, (tv, u) in enumerate(zip(tvs, us))]
    _consensus(out, base, deltas, w, None)


class DareTies(TaskVectorMethod):
    mergekit_method = "dare_ties"
    parameters = (WEIGHT, DENSITY)
    color = "#8E9A2A"
    fast = True
    kernel = Kernel(_dare_ties)
    kept_l1 = Kernel(_kept_l1)

    def prepare(self, t: ResidentTensor, parents: list, base) -> None:
        super().prepare(t, parents, base)
        t.aux["l1"] = [tv.float().abs().sum() for tv in t.inputs]  # as mergekit sums it

    def finish(self, tensors: list[ResidentTensor], *, seed: int, dtype) -> None:
        import torch

        # mergekit draws one uniform per element for every (tensor, parent) whose density is < 1, in this order;
        # a candidate whose density is 1 somewhere draws nothing there, so its masks start further back in the
        # same stream: keep the whole stream and slice it per candidate.
        gen = torch.Generator().manual_seed(seed)
        self._stream = torch.rand(sum(t.numel for t in tensors) * len(self.genome.parents), generator=gen,
                                  dtype=torch.float32 if dtype != torch.bfloat16 else dtype).to(self.device)

    def begin(self, params: dict) -> None:
        self._cursor = 0

    def write(self, t: ResidentTensor, params: dict, out) -> None:
        import torch

        w = self.values(params, WEIGHT, t.group)
        densities = self.values(params, DENSITY, t.group, default=1.0)
        us, scales, dens = [], [], []
        for tv, l1, density in zip(t.inputs, t.aux["l1"], densities):
            if density >= 1:  # mergekit's bernoulli(): no draw, no rescale
                us.append(tv), scales.append(1.0), dens.append(math.inf)
                continue
            u = self._stream[self._cursor:self._cursor + t.numel]
            self._cursor += t.numel
            kept = float(self.kept_l1(tv, u, self.vec([density], u.dtype)[0]))
            scales.append(1.0 if float(l1) < RESCALE_EPS or kept < RESCALE_EPS else float(l1 / torch.tensor(kept)))
            us.append(u), dens.append(density)
        self.kernel(out, t.base, t.inputs, us, self.vec(dens, us[0].dtype if us else torch.float32),
                    self.vec(scales, t.base.dtype), self.vec(w, t.base.dtype))
