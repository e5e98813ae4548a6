"""Fast candidate merges: the parents stay in memory for a whole crossover and each candidate is one fused pass.

mergekit recomputes everything per merge: it re-reads the parents, subtracts the base, argsorts every task vector
for TIES (about 20 s per 135 M-parameter parent on 2 cores) and allocates a dozen temporaries per tensor.
`ResidentMerge` does the part that does not depend on the candidate once per crossover:

- task vectors (parent - base) for ties / dare_ties / task_arithmetic;
- TIES: the rank of every entry of every task vector by magnitude, from the argsort mergekit runs on every merge
  (ties between equal magnitudes included), so that a density k becomes the test rank < k;
- DARE: the uniform numbers mergekit's `torch.bernoulli` masks would draw with the run's seed (one stream, in
  mergekit's execution order), so that a density becomes a threshold on them;
- SLERP: the angle between the parents' tensors;

and per candidate writes base + recombination straight into the resident evaluation model's parameters, with one
`torch.compile`d elementwise kernel per tensor. tests/test_fast.py checks every method against mergekit
(max abs diff <= 1e-6 in float32); mergekit still writes every child that becomes a member.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from evomerge.crossover.genome import Genome

log = logging.getLogger(__name__)

SLERP_CHUNK = 1024 * 1024  # mergekit's slerp chunk: norms are summed per chunk, so the same chunks give the same bits
SLERP_DOT_THRESHOLD, SLERP_EPS = 0.9995, 1e-8  # mergekit's slerp defaults
RESCALE_EPS = 1e-7  # mergekit's rescaled_masked_tensor


# ---------------------------------------------------------------- kernels: one pass over a tensor, fused by inductor

def _linear(out: torch.Tensor, xs: list[torch.Tensor], w: torch.Tensor) -> None:
    acc = xs[0].float() * w[0]
    for i in range(1, len(xs)):
        acc = acc + xs[i].float() * w[i]
    out.copy_(acc / w.sum())


def _task_arithmetic(out: torch.Tensor, base: torch.Tensor, tvs: list[torch.Tensor], w: torch.Tensor) -> None:
    acc = tvs[0] * w[0]
    for i in range(1, len(tvs)):
        acc = acc + tvs[i] * w[i]
    out.copy_(base + acc)


def _consensus(out: torch.Tensor, base: torch.Tensor, deltas: list[torch.Tensor], w: torch.Tensor,
               inverse: Optional[torch.Tensor]) -> None:
    """TIES sign consensus ('sum' method) over weighted, sparsified deltas, as mergekit's get_mask and merge_group.
    sign(d) == majority is written as (d > 0 where the sum is >= 0, else d < 0): the same test, and it vectorises.
    `inverse` normalises: entry m is 1 / (summed weights of the parents in bit set m), or 1 where that sum is 0
    (mergekit's divisor rule), so each element picks a reciprocal instead of dividing (within an ulp of dividing).
    None: no normalisation (dare_ties)."""
    total = deltas[0]
    for d in deltas[1:]:
        total = total + d
    positive = total >= 0
    agree = [torch.where(positive, d > 0, d < 0) for d in deltas]
    mixed = torch.where(agree[0], deltas[0], 0.0)
    for a, d in zip(agree[1:], deltas[1:]):
        mixed = mixed + torch.where(a, d, 0.0)
    if inverse is not None:
        mixed = mixed * _pick(agree, inverse, 0, 0)
    out.copy_(base + mixed)


def _pick(agree: list[torch.Tensor], table: torch.Tensor, i: int, bits: int) -> torch.Tensor:
    """table[sum of 2^i over the parents i that agree], as nested selects (traced once per parent count)."""
    if i == len(agree):
        return table[bits]
    return torch.where(agree[i], _pick(agree, table, i + 1, bits | (1 << i)), _pick(agree, table, i + 1, bits))


def _inverse_weights(w: list[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1 / (sum of the weights in each subset of parents), 1 for a zero sum: `_consensus`'s `inverse` table."""
    sums = torch.tensor([sum(w[i] for i in range(len(w)) if m >> i & 1) for m in range(2 ** len(w))], dtype=dtype)
    return torch.where(sums == 0, 1.0, 1.0 / torch.where(sums == 0, 1.0, sums)).to(device)


def _ties(out: torch.Tensor, base: torch.Tensor, tvs: list[torch.Tensor], ranks: list[torch.Tensor], k: torch.Tensor,
          w: torch.Tensor, inverse: torch.Tensor) -> None:
    """TIES: keep each task vector's k largest magnitudes (by mergekit's own argsort ranks), then sign consensus."""
    deltas = [torch.where(r < k[i], tv, 0.0) * w[i] for i, (tv, r) in enumerate(zip(tvs, ranks))]
    _consensus(out, base, deltas, w, inverse)


def _dare_kept_l1(tv: torch.Tensor, u: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    return torch.where(u < density, tv.abs(), 0.0).sum()


def _dare_ties(out: torch.Tensor, base: torch.Tensor, tvs: list[torch.Tensor], us: list[torch.Tensor],
               density: torch.Tensor, scale: torch.Tensor, w: torch.Tensor) -> None:
    """DARE: keep where the drawn uniform < density (torch.bernoulli's rule), rescale to the same L1, then TIES."""
    deltas = [(torch.where(u < density[i], tv, 0.0) * scale[i]) * w[i] for i, (tv, u) in enumerate(zip(tvs, us))]
    _consensus(out, base, deltas, w, None)


def _slerp(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, ca: torch.Tensor, cb: torch.Tensor) -> None:
    out.copy_(ca * a.float() + cb * b.float())


class _Kernel:
    """A `torch.compile`d kernel (dynamic shapes: one compilation serves every tensor); plain eager where
    compilation is unavailable (no C++ compiler), with one warning, since the eager result is the same."""

    eager = False

    def __init__(self, fn: Callable) -> None:
        self._fn = fn
        self._compiled = torch.compile(fn, dynamic=True)

    def __call__(self, *args) -> None:
        if _Kernel.eager:
            return self._fn(*args)
        try:
            return self._compiled(*args)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager kernel is correct, only slower
            log.warning("torch.compile is unavailable (%s: %s); merging candidates with eager kernels",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            _Kernel.eager = True
            return self._fn(*args)


KERNELS = {name: _Kernel(fn) for name, fn in (("linear", _linear), ("task_arithmetic", _task_arithmetic),
                                               ("ties", _ties), ("dare_ties", _dare_ties),
                                               ("dare_kept_l1", _dare_kept_l1), ("slerp", _slerp))}


# ---------------------------------------------------------------- the resident parents of one crossover

@dataclass
class _Tensor:
    """What one output tensor's merges need, precomputed; 1-D views."""
    name: str
    group: int
    base: Optional[torch.Tensor] = None
    inputs: list[torch.Tensor] = field(default_factory=list)   # task vectors, or the parents themselves
    ranks: list[torch.Tensor] = field(default_factory=list)     # ties: position of each entry in mergekit's argsort
    l1: list[torch.Tensor] = field(default_factory=list)        # dare_ties: |task vector| summed, as mergekit does
    theta: Optional[torch.Tensor] = None                        # slerp: angle, and whether mergekit falls back to lerp
    lerp: Optional[torch.Tensor] = None

    @property
    def numel(self) -> int:
        return self.inputs[0].numel()


class ResidentMerge:
    """The parents of one crossover, held in memory; `write(params, model)` merges a candidate into `model`.

    `config` is any candidate's mergekit configuration: it fixes the tensors, their order and the parents' paths.
    """

    def __init__(self, genome: Genome, config, *, seed: int, device: str = "cpu") -> None:
        from evomerge.crossover.merge import plan

        self.genome = genome
        self.method = genome.spec.method
        self._device = torch.device(device)
        dtype = getattr(torch, str(config.dtype or "float32"))
        weights = plan(config, seed=seed, device=device)  # mergekit's output tensors, in its execution order
        models = [m.model.model.path for m in config.models]
        base_path = config.base_model.model.path if config.base_model is not None else None
        readers = {p: _Reader(p) for p in {*models, *([base_path] if base_path else [])}}
        self.tensors: list[_Tensor] = []
        for weight in weights:
            t = _Tensor(weight.name, genome.group_of(weight.name))
            parents = [readers[p].get(weight, dtype, self._device) for p in models]
            if self.method in ("ties", "dare_ties", "task_arithmetic"):
                t.base = readers[base_path].get(weight, dtype, self._device)
                t.inputs = [p - t.base for p in parents]  # mergekit: entry.tensor - base, in the merge dtype
                del parents
                if self.method == "dare_ties":
                    t.l1 = [tv.float().abs().sum() for tv in t.inputs]
            else:
                t.inputs = parents
                if self.method == "slerp":
                    t.theta, t.lerp = _slerp_angle(parents[0], parents[1])
            self.tensors.append(t)
        if self.method == "ties":
            _rank_all(self.tensors)
        if self.method == "dare_ties":
            # mergekit draws one uniform per element for every (tensor, parent) whose density is < 1, in this order;
            # a candidate whose density is 1 somewhere draws nothing there, so its masks start further back in the
            # same stream: keep the whole stream and slice it per candidate.
            gen = torch.Generator().manual_seed(seed)
            self._stream = torch.rand(sum(t.numel for t in self.tensors) * len(models), generator=gen,
                                      dtype=torch.float32 if dtype != torch.bfloat16 else dtype).to(self._device)

    # ------------------------------------------------------------ one candidate

    def write(self, params: dict, model) -> None:
        """Merge the candidate `params` (Genome.params) into `model`'s tensors in place."""
        targets = {**dict(model.named_buffers()), **dict(model.named_parameters())}
        cursor = 0
        with torch.no_grad():
            for t in self.tensors:
                target = targets.get(t.name)
                if target is None:
                    raise KeyError(f"merged tensor {t.name} has no place in the evaluation model")
                if target.device != self._device or not target.is_contiguous():
                    raise ValueError(f"{t.name}: the evaluation model must be contiguous on {self._device}")
                out = target.view(-1)
                if self.method == "dare_ties":
                    cursor = self._dare(t, params, out, cursor)
                else:
                    getattr(self, "_" + self.method)(t, params, out)

    def _values(self, params: dict, name: str, group: int, default: Optional[float] = None) -> list[float]:
        out = []
        for p in self.genome.parents:
            values = params[p].get(name)
            out.append(default if values is None else values[group])
        return out

    def _vec(self, values: list[float], dtype=torch.float32) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self._device)

    def _linear(self, t: _Tensor, params: dict, out: torch.Tensor) -> None:
        KERNELS["linear"](out, t.inputs, self._vec(self._values(params, "weight", t.group)))

    def _task_arithmetic(self, t: _Tensor, params: dict, out: torch.Tensor) -> None:
        w = self._vec(self._values(params, "weight", t.group), t.base.dtype)
        KERNELS["task_arithmetic"](out, t.base, t.inputs, w)

    def _ties(self, t: _Tensor, params: dict, out: torch.Tensor) -> None:
        w = self._values(params, "weight", t.group)
        densities = self._values(params, "density", t.group, default=1.0)
        # mergekit's magnitude(): density >= 1 keeps the task vector as it is, else the max(1, int(d * n)) largest
        k = [t.numel if d >= 1 else max(1, int(d * t.numel)) for d in densities]
        KERNELS["ties"](out, t.base, t.inputs, t.ranks, self._vec(k, torch.int32), self._vec(w, t.base.dtype),
                        _inverse_weights(w, t.base.dtype, self._device))

    def _dare(self, t: _Tensor, params: dict, out: torch.Tensor, cursor: int) -> int:
        w = self._values(params, "weight", t.group)
        densities = self._values(params, "density", t.group, default=1.0)
        us, scales, dens = [], [], []
        for tv, l1, density in zip(t.inputs, t.l1, densities):
            if density >= 1:  # mergekit's bernoulli(): no draw, no rescale
                us.append(tv), scales.append(1.0), dens.append(math.inf)
                continue
            u = self._stream[cursor:cursor + t.numel]
            cursor += t.numel
            kept = float(KERNELS["dare_kept_l1"](tv, u, self._vec([density], u.dtype)[0]))
            scales.append(1.0 if float(l1) < RESCALE_EPS or kept < RESCALE_EPS else float(l1 / torch.tensor(kept)))
            us.append(u), dens.append(density)
        KERNELS["dare_ties"](out, t.base, t.inputs, us, self._vec(dens, us[0].dtype if us else torch.float32),
                             self._vec(scales, t.base.dtype), self._vec(w, t.base.dtype))
        return cursor

    def _slerp(self, t: _Tensor, params: dict, out: torch.Tensor) -> None:
        tt = torch.tensor([params["t"]["t"][t.group]], dtype=torch.float32, device=self._device).reshape(-1, 1)
        # mergekit's slerp coefficients, computed by the same operations on the same angle
        ca = torch.where(t.lerp, 1 - tt, torch.sin((1 - tt) * t.theta) / torch.sin(t.theta))
        cb = torch.where(t.lerp, tt, torch.sin(tt * t.theta) / torch.sin(t.theta))
        KERNELS["slerp"](out, t.inputs[0], t.inputs[1], ca.reshape(()), cb.reshape(()))


def _rank_all(tensors: list[_Tensor]) -> None:
    """Each task vector entry's position in `torch.argsort(|tv|, descending=True)`, the call mergekit's magnitude()
    makes (its order among equal magnitudes is the sort's own, so only the same call gives the same masks). Two
    sorts at a time: torch's CPU sort of one tensor runs on one core."""
    from concurrent.futures import ThreadPoolExecutor

    def rank(tv: torch.Tensor) -> torch.Tensor:
        w = tv.abs().reshape(-1)
        if w.device.type == "cpu":
            w = w.float()
        order = torch.argsort(w, descending=True)
        out = torch.empty(tv.numel(), dtype=torch.int32, device=tv.device)
        out[order] = torch.arange(tv.numel(), dtype=torch.int32, device=tv.device)
        return out

    jobs = [(t, tv) for t in tensors for tv in t.inputs]
    with ThreadPoolExecutor(max_workers=max(1, min(4, torch.get_num_threads()))) as pool:
        ranks = list(pool.map(lambda job: rank(job[1]), jobs))
    for (t, _), r in zip(jobs, ranks):
        t.ranks.append(r)


def _slerp_angle(v0: torch.Tensor, v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The angle between two flattened tensors and whether mergekit lerps instead: the first half of its slerp,
    by the same operations (chunked norms, normalised chunk dots), so that the same bits come out."""
    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a, b = v0.reshape(1, -1), v1.reshape(1, -1)
    chunks = range(0, a.shape[1], SLERP_CHUNK)
    norm_a = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(a[:, s:s + SLERP_CHUNK].to(dtype), dim=1,
                                                                            keepdim=True) for s in chunks]), dim=0)
    norm_b = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b[:, s:s + SLERP_CHUNK].to(dtype), dim=1,
                                                                            keepdim=True) for s in chunks]), dim=0)
    norm_a = torch.where(norm_a > SLERP_EPS, norm_a, 1)
    norm_b = torch.where(norm_b > SLERP_EPS, norm_b, 1)
    dot = torch.stack([((a[:, s:s + SLERP_CHUNK].to(dtype) / norm_a) * (b[:, s:s + SLERP_CHUNK].to(dtype) / norm_b))
                       .sum(dim=1, keepdim=True) for s in chunks]).sum(dim=0).clamp(-1, 1)
    lerp = dot.abs() > SLERP_DOT_THRESHOLD
    return torch.acos(torch.where(lerp, 0, dot)), lerp


class _Reader:
    """One model directory's safetensors, read tensor by tensor (names, aliases and tied names as mergekit)."""

    def __init__(self, path: str) -> None:
        from safetensors import safe_open

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors files (the fast merge reads safetensors members)")
        self._where = {}
        self._handles = [safe_open(str(f), framework="pt") for f in files]
        for h in self._handles:
            for key in h.keys():
                self._where[key] = h
        self.path = path

    def get(self, weight, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        for name in (weight.name, *(weight.aliases or ()), *(weight.tied_names or ())):
            if name in self._where:
                return self._where[name].get_tensor(name).to(device=device, dtype=dtype).reshape(-1).contiguous()
        raise KeyError(f"{self.path} has no tensor {weight.name}")
