"""TIES merging (Yadav et al., arXiv 2306.01708, alg. 1): trim each task vector to its `density` largest magnitudes,
elect a sign per entry (the sign of the summed weighted deltas), keep the deltas that agree with it and divide by
the summed weights of those that agree (mergekit `ties`, consensus "sum", normalised)."""
from __future__ import annotations

from evomerge.crossover.methods.base import DENSITY, WEIGHT, Kernel, ResidentTensor, TaskVectorMethod


def _consensus(out, base, deltas, w, inverse) -> None:
    """TIES sign consensus over weighted, sparsified deltas, as mergekit's get_mask and merge_group.
    sign(d) == majority is written as (d > 0 where the sum is >= 0, else d < 0): the same test, and it vectorises.
    `inverse` normalises: entry m is 1 / (summed weights of the parents in bit set m), or 1 where that sum is 0
    (mergekit's divisor rule), so each element picks a reciprocal instead of dividing (within an ulp of dividing).
    None: no normalisation (dare_ties)."""
    total = deltas[0]
    for d in deltas[1:]:
        total = total + d
    positive = total >= 0
    agree = [(d > 0).where(positive, d < 0) for d in deltas]
    mixed = deltas[0].where(agree[0], 0.0)
    for a, d in zip(agree[1:], deltas[1:]):
        mixed = mixed + d.where(a, 0.0)
    if inverse is not None:
        mixed = mixed * _pick(agree, inverse, 0, 0)
    out.copy_(base + mixed)


def _pick(agree, table, i: int, bits: int):
    """table[sum of 2^i over the parents i that agree], as nested selects (traced once per parent count)."""
    if i == len(agree):
        return table[bits]
    return _pick(agree, table, i + 1, bits | (1 << i)).where(agree[i], _pick(agree, table, i + 1, bits))


def _ties(out, base, tvs, thr, w, inverse) -> None:
    """Keep each task vector's magnitudes >= its k-th largest (the k largest, and any entry tied with the k-th), then
    sign consensus."""
    deltas = [tv.where(tv.abs() >= thr[i], 0.0) * w[i] for i, tv in enumerate(tvs)]
    _consensus(out, base, deltas, w, inverse)


def inverse_weights(w: list[float], dtype, device):
    """1 / (sum of the weights in each subset of parents), 1 for a zero sum: `_consensus`'s `inverse` table."""
    import torch

    sums = torch.tensor([sum(w[i] for i in range(len(w)) if m >> i & 1) for m in range(2 ** len(w))], dtype=dtype)
    return torch.where(sums == 0, 1.0, 1.0 / torch.where(sums == 0, 1.0, sums)).to(device)


BANDS = 256  # rank bands per task vector: one byte per weight


def band_all(tensors: list[ResidentTensor]) -> None:
    """Each task vector entry's rank band, one byte: its position r in `torch.argsort(|tv|, descending=True)` (the
    call mergekit's magnitude() makes) as r·BANDS // n. Band b holds ranks [start(b), start(b+1)), start(b) =
    ceil(b·n / BANDS). Sorts run side by side on a CPU (torch's CPU sort of one tensor runs on one core); while one
    runs it holds the magnitudes and the int64 order of its tensor (about 12 bytes per entry)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    def band(tv):
        w = tv.abs().reshape(-1)
        if w.device.type == "cpu":
            w = w.float()
        order = torch.argsort(w, descending=True)
        del w
        n = tv.numel()
        starts = [-(-b * n // BANDS) for b in range(BANDS + 1)]
        sizes = torch.tensor([hi - lo for lo, hi in zip(starts, starts[1:])], device=tv.device)
        out = torch.empty(n, dtype=torch.uint8, device=tv.device)
        out[order] = torch.arange(BANDS, dtype=torch.uint8, device=tv.device).repeat_interleave(sizes, output_size=n)
        return out

    jobs = [(t, tv) for t in tensors for tv in t.inputs]
    on_cpu = bool(jobs) and jobs[0][1].device.type == "cpu"  # a GPU sorts one at a time: the temporaries are big
    with ThreadPoolExecutor(max_workers=max(1, min(4, torch.get_num_threads())) if on_cpu else 1) as pool:
        bands = list(pool.map(lambda job: band(job[1]), jobs))
    for (t, _), b in zip(jobs, bands):
        t.aux.setdefault("bands", []).append(b)


def kth_threshold(tv, bands, k: int):
    """The k-th largest |tv| (a 0-dim tensor of tv's dtype): with `bands`, found among the entries of the rank band
    that holds rank k-1 only (about numel / BANDS of them: one byte compare over the tensor, then a small
    kthvalue); without, by `kth_largest` over every entry. Keeping |tv| >= it keeps mergekit's k entries and any
    entry of exactly the same magnitude: where mergekit's argsort order among exact ties decides, the masks may
    differ, and only there."""
    n = tv.numel()
    if bands is None:
        return kth_largest(tv.abs(), k)
    j = (k - 1) * BANDS // n
    start = -(-j * n // BANDS)  # ceil(j·n / BANDS): the rank band j starts at
    inside = tv[bands == j].abs()
    return inside.kthvalue(inside.numel() - (k - start) + 1).values


def kth_largest(x, k: int):
    """The k-th largest entry of `x` (non-negative, no NaN; any shape) as a 0-dim tensor of its dtype: exactly
    `x.reshape(-1).kthvalue(x.numel() - k + 1).values`, found by radix select. A non-negative float's bits, read as
    an integer, order as its value; each 8-bit digit from the top is one 256-bin `bincount` over the entries that
    still share the digits chosen so far (2 passes for 16-bit floats, 4 for float32). torch's CUDA kthvalue runs
    one thread block per slice, so over one whole task vector it uses one of the GPU's multiprocessors: on an H200,
    0.168 s for a 45M-entry bfloat16 tensor against 0.0045 s here, and a 7B TIES candidate of two parents did not
    finish within gpu_check's 170 s with it (2.6 s with this; benchmarks/RESULTS.md)."""
    import torch

    bits = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}.get(x.dtype)
    if bits is None:
        raise TypeError(f"kth_largest takes float32, bfloat16 or float16, not {x.dtype}")
    if not 1 <= k <= x.numel():
        raise ValueError(f"k = {k} is outside 1..{x.numel()}")
    keys = x.reshape(-1).view(bits)
    width = keys.element_size() * 8
    prefix = 0
    for shift in range(width - 8, -1, -8):
        digit = keys.bitwise_right_shift(shift).bitwise_and_(0xFF)
        at_least = torch.bincount(digit, minlength=256).flip(0).cumsum(0)  # [i]: entries whose digit >= 255 - i
        i = int(torch.searchsorted(at_least, k))  # the first i with at_least[i] >= k
        if i:
            k -= int(at_least[i - 1])
        prefix |= (255 - i) << shift
        if shift:
            keys = keys[digit == 255 - i]
    return torch.tensor(prefix, dtype=keys.dtype).view(x.dtype).to(x.device)


class Ties(TaskVectorMethod):
    """The k-th largest magnitude of each task vector, per candidate: on a GPU by `kth_largest` over the resident task
    vector (nothing kept besides it); on a CPU, where that select over every entry costs more than the merge, from
    the rank bands computed once per crossover (one byte per entry)."""

    mergekit_method = "ties"
    parameters = (WEIGHT, DENSITY)
    color = "#009E73"
    fast = True
    kernel = Kernel(_ties)

    @staticmethod
    def keeps_bands(device) -> bool:
        return device.type == "cpu"

    def finish(self, tensors: list[ResidentTensor], *, seed: int, dtype) -> None:
        if self.keeps_bands(self.device):
            band_all(tensors)

    def write(self, t: ResidentTensor, params: dict, out) -> None:
        import torch

        w = self.values(params, WEIGHT, t.group)
        densities = self.values(params, DENSITY, t.group, default=1.0)
        bands = t.aux.get("bands") or [None] * len(t.inputs)
        # mergekit's magnitude(): density >= 1 keeps the task vector as it is, else the max(1, int(d * n)) largest
        thr = [torch.zeros((), dtype=t.base.dtype, device=self.device) if d >= 1
               else kth_threshold(tv, b, max(1, int(d * t.numel))) for d, tv, b in zip(densities, t.inputs, bands)]
        self.kernel(out, t.base, t.inputs, torch.stack(thr), self.vec(w, t.base.dtype),
                    inverse_weights(w, t.base.dtype, self.device))
