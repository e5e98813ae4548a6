"""SLERP: spherical interpolation of two parents by one factor t per layer group (mergekit `slerp`; Shoemake 1985).
The first parent is the base of the interpolation (t = 0 gives it)."""
from __future__ import annotations

from typing import Optional

from evomerge.crossover.methods.base import WEIGHT, Kernel, MergeMethod, ResidentTensor

T = "t"
SLERP_CHUNK = 1024 * 1024  # mergekit's slerp chunk: norms are summed per chunk, so the same chunks give the same bits
SLERP_DOT_THRESHOLD, SLERP_EPS = 0.9995, 1e-8  # mergekit's slerp defaults


def _slerp(out, a, b, ca, cb) -> None:
    out.copy_(ca * a.float() + cb * b.float())


def slerp_angle(v0, v1):
    """The angle between two flattened tensors and whether mergekit lerps instead: the first half of its slerp,
    by the same operations (chunked norms, normalised chunk dots), so that the same bits come out."""
    import torch

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


class Slerp(MergeMethod):
    mergekit_method = "slerp"
    parameters = (WEIGHT,)  # configured as `search: [weight]`; the genome calls it t, as mergekit does
    min_parents = max_parents = 2
    bounds = {T: (0.0, 1.0)}
    start = {T: 0.5}
    color = "#CC79A7"
    fast = True
    kernel = Kernel(_slerp)

    @classmethod
    def searched(cls, search: tuple[str, ...]) -> tuple[str, ...]:
        return (T,)

    @classmethod
    def owners(cls, parents: tuple[str, ...]) -> tuple[str, ...]:
        return (T,)  # one t for the pair, not one per parent

    @classmethod
    def mergekit_config(cls, genome, params: dict, *, paths: dict[str, str], base_path: Optional[str],
                        dtype: str) -> dict:
        return {"merge_method": cls.mergekit_method, "dtype": dtype, "out_dtype": dtype,
                "base_model": paths[genome.parents[0]], "models": [{"model": paths[p]} for p in genome.parents],
                "parameters": {T: genome.setting(params[T][T])}}

    @classmethod
    def edge_label(cls, params: dict, parent: str) -> str:
        values = params.get("merge", {}).get(T, {})
        return f"{cls.name} " + " ".join(f"{k}={'/'.join(f'{v:.3f}' for v in vs)}" for k, vs in values.items())

    def prepare(self, t: ResidentTensor, parents: list, base) -> None:
        t.inputs = parents
        t.aux["theta"], t.aux["lerp"] = slerp_angle(parents[0], parents[1])

    def write(self, t: ResidentTensor, params: dict, out) -> None:
        import torch

        tt = torch.tensor([params[T][T][t.group]], dtype=torch.float32, device=self.device).reshape(-1, 1)
        theta, lerp = t.aux["theta"], t.aux["lerp"]
        # mergekit's slerp coefficients, computed by the same operations on the same angle
        ca = torch.where(lerp, 1 - tt, torch.sin((1 - tt) * theta) / torch.sin(theta))
        cb = torch.where(lerp, tt, torch.sin(tt * theta) / torch.sin(theta))
        self.kernel(out, t.inputs[0], t.inputs[1], ca.reshape(()), cb.reshape(()))
