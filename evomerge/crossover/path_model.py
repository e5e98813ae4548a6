"""The fast path of a layer path (evomerge/crossover/layer_path.py): a candidate's model without a weight copied.

`PathModel` holds a crossover's parents and one shell model (the `embed_from` parent's embedding, final norm, head
and rotary embedding, shared); per candidate it points the shell's layer list at the parents' layer modules in path
order. Each place in the path is a `Step`: it runs its layer with its place as the attention's `layer_idx` (a
repeated layer gets its own KV-cache slot) and, at a crossing, with its scale, which forward hooks on the layer's
`o_proj` and `down_proj` apply (mergekit's passthrough multiplies those weights instead; tests/test_layer_path.py
checks the two within 1e-5 in float32).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch


class PathModel:
    """A crossover's parents held in memory (`paths`: parent name -> model directory, `load`: a directory -> a
    model), and one shell model with parent `embed`'s embedding, norm and head, whose layer list is pointed at the
    parents' layers; `scaled`: the names of the modules whose output a crossing scales."""

    def __init__(self, paths: dict[str, str], *, embed: str, load: Callable[[str], Any],
                 scaled: tuple[str, ...]) -> None:
        self.parents = {name: load(path).eval() for name, path in paths.items()}
        owner = self.parents[embed]
        prefix = owner.base_model_prefix
        self.model = copy.copy(owner)                    # shares the owner's embedding, norm, head and rotary
        self.model._modules = dict(owner._modules)       # ... but not its module table
        inner = copy.copy(getattr(owner, prefix))
        inner._modules = dict(inner._modules)
        self.model._modules[prefix] = inner
        self.model.config = inner.config = copy.deepcopy(owner.config)
        self._decoder = inner
        self._layers = {name: list(getattr(m, prefix).layers) for name, m in self.parents.items()}
        for layers in self._layers.values():
            for layer in layers:
                layer._evomerge_scale = 1.0
                for name, module in layer.named_modules():
                    if name.split(".")[-1] in scaled:
                        module.register_forward_hook(_scaling(layer))

    def build(self, path: list):
        """The shell, its layers pointed at those of `path` ([parent, layer, scale] in order; no weights copied)."""
        steps = [Step(self._layers[parent][layer], scale, index) for index, (parent, layer, scale) in enumerate(path)]
        self._decoder.layers = torch.nn.ModuleList(steps)
        self.model.config.num_hidden_layers = len(steps)
        return self.model


def _scaling(layer) -> Callable:
    def hook(_module, _inputs, output):
        return output if layer._evomerge_scale == 1.0 else output * layer._evomerge_scale
    return hook


class Step(torch.nn.Module):
    """One place in the path: a parent's layer, run with its place as its KV-cache index and with its scale."""

    def __init__(self, layer: torch.nn.Module, scale: float, index: int) -> None:
        super().__init__()
        self.layer = layer
        self.scale = scale
        self.index = index
        self._indexed = [m for m in layer.modules() if hasattr(m, "layer_idx")]

    def forward(self, *args, **kwargs):
        saved = [m.layer_idx for m in self._indexed]
        for m in self._indexed:
            m.layer_idx = self.index
        self.layer._evomerge_scale = self.scale
        try:
            return self.layer(*args, **kwargs)
        finally:
            self.layer._evomerge_scale = 1.0
            for m, idx in zip(self._indexed, saved):
                m.layer_idx = idx
