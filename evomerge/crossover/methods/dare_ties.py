"""DARE-TIES (Yu et al., arXiv 2311.03099): drop each task-vector entry with probability 1 − density, rescale the
survivors to the task vector's L1 norm, then TIES sign consensus without normalisation (mergekit `dare_ties`).

The fast path draws mergekit's own masks: `run_merge` seeds torch's generators with the run's seed, then mergekit's
`bernoulli` draws `torch.bernoulli(full_like(task_vector, density))` for every (tensor, parent) whose density is below
1, in its execution order. Per candidate the fast path does the same from a generator seeded the same way:
- on a GPU it calls that very op (one tensor's mask at a time), so nothing is kept between candidates: the masks are
  mergekit's whatever the device's random number generator is;
- on a CPU, whose generator (mt19937) draws about 220 M numbers a second on one core, regenerating would cost more
  than the merge itself: the stream of float32 uniforms behind those masks is drawn once per crossover and kept
  (4 bytes per weight per parent; a CPU `bernoulli` keeps an entry where its float32 uniform is below the
  density, rounded to the merge's dtype).
A candidate whose density is 1 somewhere draws nothing there, so its later masks start further back in the stream.
"""
from __future__ import annotations

import math

from evomerge.crossover.methods.base import DENSITY, WEIGHT, Kernel, ResidentTensor, TaskVectorMethod
from evomerge.crossover.methods.ties import _consensus

RESCALE_EPS = 1e-7  # mergekit's rescaled_masked_tensor


def _kept_l1(tv, u, density):
    return tv.abs().where(u < density, 0.0).sum()


def _dare_ties(out, base, tvs, us, density, scale, w) -> None:
    """Keep where u < density (u: the uniform torch.bernoulli compared, or 1 − mergekit's mask with density 0.5),
    rescale to the same L1, then TIES."""
    deltas = [(tv.where(u < density[i], 0.0) * scale[i]) * w[i] for i, (tv, u) in enumerate(zip(tvs, us))]
    _consensus(out, base, deltas, w, None)


class DareTies(TaskVectorMethod):
    mergekit_method = "dare_ties"
    parameters = (WEIGHT, DENSITY)
    color = "#8E9A2A"
    fast = True
    kernel = Kernel(_dare_ties)
    kept_l1 = Kernel(_kept_l1)

    @staticmethod
    def keeps_stream(device) -> bool:
        """Whether the uniforms are drawn once and kept (a CPU) rather than redrawn per candidate (a GPU)."""
        return device.type == "cpu"

    def prepare(self, t: ResidentTensor, parents: list, base) -> None:
        super().prepare(t, parents, base)
        if self.keeps_stream(self.device):  # the rescale's first sum, once (a GPU redoes mergekit's per candidate)
            t.aux["l1"] = [tv.float().abs().sum() for tv in t.inputs]

    def finish(self, tensors: list[ResidentTensor], *, seed: int, dtype) -> None:
        import torch

        self._seed = seed
        # mergekit's bernoulli works in the merge dtype, except float32 for float32 and float16 on a CPU
        cpu = self.device.type == "cpu"
        self._work = dtype if not cpu or dtype == torch.bfloat16 else torch.float32
        self._stream = None
        if self.keeps_stream(self.device):
            gen = torch.Generator(device=self.device).manual_seed(seed)
            self._stream = torch.rand(sum(t.numel for t in tensors) * len(self.genome.parents), generator=gen,
                                      device=self.device)

    def begin(self, params: dict) -> None:
        import torch

        self._cursor = 0
        if self._stream is None:
            self._gen = torch.Generator(device=self.device).manual_seed(self._seed)

    def _uniforms(self, tv, density: float):
        """What decides which entries of `tv` survive: (u, threshold), an entry kept where u < threshold."""
        import torch

        if self._stream is not None:
            u = self._stream[self._cursor:self._cursor + tv.numel()]
            self._cursor += tv.numel()
            return u, float(torch.tensor(density, dtype=self._work))
        mask = torch.bernoulli(torch.full_like(tv, density, dtype=self._work), generator=self._gen)
        return mask.neg_().add_(1), 0.5  # 0 where mergekit keeps the entry

    def write(self, t: ResidentTensor, params: dict, out) -> None:
        import torch

        w = self.values(params, WEIGHT, t.group)
        densities = self.values(params, DENSITY, t.group, default=1.0)
        us, scales, dens = [], [], []
        for j, (tv, density) in enumerate(zip(t.inputs, densities)):
            if density >= 1:  # mergekit's bernoulli(): no draw, no rescale
                us.append(tv), scales.append(1.0), dens.append(math.inf)
                continue
            u, threshold = self._uniforms(tv, density)
            if self._stream is None:
                # mergekit's rescaled_masked_tensor, op for op in the work dtype: the same sums, so the same scale.
                # A scale one ulp off flips the elected sign where two deltas nearly cancel (gpu_check: 5e-4 off)
                work = tv.to(self._work)
                before, after = work.abs().sum(), (work * u.neg().add_(1)).abs().sum()
            else:
                before, after = t.aux["l1"][j], self.kept_l1(tv, u, self.vec([threshold], u.dtype)[0])
            scales.append(1.0 if float(before) < RESCALE_EPS or float(after) < RESCALE_EPS
                          else float(before / after.to(before.dtype)))
            us.append(u), dens.append(threshold)
        self.kernel(out, t.base, t.inputs, us, self.vec(dens, torch.float32),
                    self.vec(scales, t.base.dtype), self.vec(w, t.base.dtype))
