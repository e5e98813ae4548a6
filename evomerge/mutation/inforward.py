"""EGGROLL's forward (arXiv 2511.16652): a population of low-rank weight perturbations evaluated inside one forward
pass, instead of writing each perturbed copy of the weights.

A batch whose leading dimension holds G equal, contiguous groups runs as one forward of the unperturbed model;
group g sees the weights θ + s_g·ε(seed_g), where ε is exactly the noise `es.perturb` would add in place (the same
seeds, streams and factors). Hooks add each group's perturbation where a weight is used:

- Linear, W (m×n), ε = A·Bᵀ/√r:   x·(W + s·ε)ᵀ = x·Wᵀ + (s/√r)·(x·B)·Aᵀ      one batched matmul pair per group
- Embedding, E (m×n):              (E + s·ε)[ids] = E[ids] + (s/√r)·A[ids]·Bᵀ
- a Linear's bias, and every other module's own weights (norms, vectors, small tensors): the module runs once per
  group on its weights plus that group's noise, a copy of a few thousand numbers.

Tied weights (an LM head sharing the embedding) are one tensor with one noise. The weights are never written, so
an iteration leaves θ bit-for-bit as it was: a replay needs only the updates, and workers sharing an iteration's
pairs evaluate just their own. A model with a large weight in a module of another kind cannot be evaluated this
way (`plan` returns None, and noise ES says to set `evaluation: in_place`).
"""
from __future__ import annotations

import math
from typing import Any, Optional

SMALL = 1 << 20  # weights of other modules up to this many elements are copied per group


class InForward:
    """Hooks on `model` that perturb each group of a batch by its own noise term, for as long as it is open:

        with InForward(model, params, rank=4) as pop:
            pop.set([(seed, +sigma), (seed, -sigma)])   # two groups: an antithetic pair
            model(input_ids=ids.repeat(2, 1))           # rows [0, b) see θ + σε, rows [b, 2b) see θ − σε
    """

    def __init__(self, model: Any, params: list, *, rank: int) -> None:
        self.model, self.params, self.rank = model, params, rank
        self.plan = plan(model, params, rank)
        self._where = {id(p): i for i, p in enumerate(params)}
        # weights whose noise enters as factors (Linear and Embedding weights); every other one is copied per group
        self._lowrank = {self._where[id(m.weight)] for m, kind in self.plan or () if kind != "copy"}
        self._handles: list = []
        self._inside = False
        self._terms: list[tuple[int, float]] = []
        self._factors: dict[int, tuple[Any, Any]] = {}
        self._copies: dict[int, list] = {}

    def __enter__(self) -> "InForward":
        if self.plan is None:
            raise ValueError("this model has weights that cannot be perturbed inside the forward pass")
        for module, kind in self.plan:
            hook = {"linear": self._linear, "embedding": self._embedding, "copy": self._copy}[kind]
            self._handles.append(module.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._factors.clear()
        self._copies.clear()

    # ------------------------------------------------------------ the population of one forward

    def set(self, terms: list[tuple[int, float]]) -> None:
        """The groups of the next forwards: group g is θ + scale_g·ε(seed_g). Noise is drawn once per seed (an
        antithetic pair shares its factors)."""
        import torch

        from evomerge.mutation.es import _factors, noise

        self._terms = list(terms)
        self._factors.clear()
        self._copies.clear()
        seeds = {seed for seed, _ in terms}
        with torch.no_grad():
            for index, p in enumerate(self.params):
                if index in self._lowrank:
                    drawn = {s: _factors(p, s, index, self.rank) for s in seeds}
                    root = 1 / math.sqrt(self.rank)
                    a = torch.stack([drawn[s][0] * (scale * root) for s, scale in terms]).to(p.dtype)
                    b = torch.stack([drawn[s][1] for s, _ in terms]).to(p.dtype)
                    self._factors[index] = (a, b)       # (G, m, r) scaled, (G, n, r)
                else:
                    drawn = {s: noise(p, s, index, self.rank) for s in seeds}
                    self._copies[index] = [p + drawn[s].to(p.dtype) * scale for s, scale in terms]

    @property
    def groups(self) -> int:
        return len(self._terms)

    # ------------------------------------------------------------ hooks

    def _grouped(self, t: Any) -> Any:
        g = self.groups
        if t.shape[0] % g:
            raise ValueError(f"a batch of {t.shape[0]} rows cannot hold {g} equal groups")
        return t.reshape(g, -1, t.shape[-1]) if t.dim() > 1 else t.reshape(g, -1)

    def _linear(self, module: Any, args: tuple, kwargs: dict, out: Any) -> Any:
        import torch

        where = self._where
        a, b = self._factors[where[id(module.weight)]]
        x = self._grouped(args[0])
        out.view(self.groups, -1, out.shape[-1]).baddbmm_(torch.bmm(x, b), a.transpose(1, 2))
        if module.bias is not None:
            biases = self._copies[where[id(module.bias)]]
            out.view(self.groups, -1, out.shape[-1]).add_(
                torch.stack([c - module.bias for c in biases]).unsqueeze(1))
        return out

    def _embedding(self, module: Any, args: tuple, kwargs: dict, out: Any) -> Any:
        import torch

        a, b = self._factors[self._where[id(module.weight)]]
        ids = args[0].reshape(self.groups, -1)
        rows = a[torch.arange(self.groups, device=ids.device).unsqueeze(1), ids]   # (G, T, r): A[ids] per group
        out.view(self.groups, -1, out.shape[-1]).baddbmm_(rows, b.transpose(1, 2))
        return out

    def _copy(self, module: Any, args: tuple, kwargs: dict, out: Any) -> Any:
        """The module once per group on its own weights plus the group's noise (its output is recomputed)."""
        import torch
        from torch.func import functional_call

        if self._inside:
            return None  # functional_call below runs the module, and with it this hook, once more
        where = self._where
        rows = args[0].shape[0]
        split = lambda v: v.chunk(self.groups) if torch.is_tensor(v) and v.dim() and v.shape[0] == rows else None
        parts_args = [split(v) for v in args]
        parts_kwargs = {k: split(v) for k, v in kwargs.items()}
        own = list(module.named_parameters(recurse=False))
        outs = []
        self._inside = True
        try:
            for g in range(self.groups):
                weights = {name: self._copies[where[id(p)]][g] for name, p in own}
                a = tuple(v if p is None else p[g] for v, p in zip(args, parts_args))
                k = {n: v if parts_kwargs[n] is None else parts_kwargs[n][g] for n, v in kwargs.items()}
                outs.append(functional_call(module, weights, a, k))
        finally:
            self._inside = False
        return torch.cat(outs)


def plan(model: Any, params: list, rank: int) -> Optional[list[tuple[Any, str]]]:
    """(module, how it is perturbed) for every module with weights of its own, or None if some weight cannot be
    perturbed inside the forward: a large weight outside a Linear or Embedding, or an Embedding that renormalises."""
    import torch.nn as nn

    from evomerge.mutation.es import _low_rank

    covered: set[int] = set()
    out = []
    for _, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, nn.Linear) and _low_rank(module.weight, rank):
            kind = "linear"
        elif isinstance(module, nn.Embedding) and _low_rank(module.weight, rank) and module.max_norm is None:
            kind = "embedding"
        elif all(p.numel() <= SMALL for p in own):
            kind = "copy"
        else:
            return None
        if kind == "linear" and module.bias is not None and module.bias.numel() > SMALL:
            return None
        out.append((module, kind))
        covered.update(id(p) for p in own)
    factored = {id(m.weight) for m, kind in out if kind != "copy"}
    if any(id(p) in factored for m, kind in out if kind == "copy" for p in m.parameters(recurse=False)):
        return None  # one weight used both as a matrix and by another module: not worth a special case
    if any(id(p) not in covered for p in params):
        return None
    return out
