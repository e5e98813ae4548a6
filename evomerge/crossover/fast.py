"""Fast candidate merges: the parents stay in memory for a whole crossover and each candidate is one fused pass.

mergekit recomputes everything per merge: it re-reads the parents, subtracts the base, argsorts every task vector
for TIES (about 20 s per 135 M-parameter parent on 2 cores) and allocates a dozen temporaries per tensor.
`ResidentMerge` reads the parents once per crossover, lets the merge method precompute what does not depend on the
candidate (task vectors; TIES rank bands from mergekit's own argsort; DARE's uniforms with the run's seed; SLERP's
angles; see evomerge/crossover/methods/), and per candidate writes base + recombination straight into the resident
evaluation model's parameters with the method's `torch.compile`d kernel, one pass per tensor.
tests/test_fast.py checks every method against mergekit (max abs diff <= 1e-6 in float32; TIES: away from exact ties
of the k-th magnitude, where mergekit's unstable sort decides); mergekit still writes
every child that becomes a member.
"""
from __future__ import annotations

from pathlib import Path

import torch

from evomerge.crossover.genome import Genome
from evomerge.crossover.methods.base import ResidentTensor
from evomerge.devices import resolve


class ResidentMerge:
    """The parents of one crossover, held in memory; `write(params, model)` merges a candidate into `model`.

    `config` is any candidate's mergekit configuration: it fixes the tensors, their order and the parents' paths.
    """

    def __init__(self, genome: Genome, config, *, seed: int, device: str = "cpu") -> None:
        from evomerge.crossover.merge import plan

        if not genome.method.fast:
            raise ValueError(f"merge method {genome.method.name} has no fast kernel")
        self.genome = genome
        self._device = torch.device(resolve(device))
        self.method = genome.method(genome, device=self._device)
        dtype = getattr(torch, str(config.dtype or "float32"))
        weights = plan(config, seed=seed, device=device)  # mergekit's output tensors, in its execution order
        models = [m.model.model.path for m in config.models]
        base_path = config.base_model.model.path if config.base_model is not None else None
        readers = {p: _Reader(p) for p in {*models, *([base_path] if base_path else [])}}
        self.tensors: list[ResidentTensor] = []
        for weight in weights:
            t = ResidentTensor(weight.name, genome.group_of(weight.name))
            parents = [readers[p].get(weight, dtype, self._device) for p in models]
            base = readers[base_path].get(weight, dtype, self._device) if genome.method.uses_base else None
            self.method.prepare(t, parents, base)
            self.tensors.append(t)
        self.method.finish(self.tensors, seed=seed, dtype=dtype)

    def write(self, params: dict, model) -> None:
        """Merge the candidate `params` (Genome.params) into `model`'s tensors in place."""
        targets = {**dict(model.named_buffers()), **dict(model.named_parameters())}
        self.method.begin(params)
        with torch.no_grad():
            for t in self.tensors:
                target = targets.get(t.name)
                if target is None:
                    raise KeyError(f"merged tensor {t.name} has no place in the evaluation model")
                if target.device != self._device or not target.is_contiguous():
                    raise ValueError(f"{t.name}: the evaluation model must be contiguous on {self._device}")
                self.method.write(t, params, target.view(-1))


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
