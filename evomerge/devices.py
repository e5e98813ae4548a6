"""The one place a configured device becomes the device tensors report: `cuda` is the current CUDA device
(`cuda:0` in a fresh process, and in each Ray worker, which sees only its own GPU), `cpu:0` is `cpu`, `mps` is
`mps:0`. A tensor's `.device` is always the resolved form, so comparing a configured device with a tensor's
(`torch.device("cuda") != torch.device("cuda:0")`) goes through `same`."""
from __future__ import annotations

from typing import Any


def resolve(device: Any) -> str:
    """The device as the tensors put on it name theirs."""
    import torch

    d = torch.device(device)
    if d.type == "cpu":
        return "cpu"
    if d.index is None:
        d = torch.device(d.type, torch.cuda.current_device() if d.type == "cuda" else 0)
    return str(d)


def same(a: Any, b: Any) -> bool:
    """Whether two device names or `torch.device`s are the same device (`cuda` and `cuda:0` in a fresh process)."""
    return resolve(a) == resolve(b)
