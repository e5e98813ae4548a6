"""The one place a configured device becomes the device tensors report: `cuda` is the current CUDA device
(`cuda:0` in a fresh process, and in each Ray worker, which sees only its own GPU), `cpu:0` is `cpu`, `mps` is
`mps:0`. A tensor's `.device` is always the resolved form, so a configured device is resolved once and then
compares equal to its tensors' (`torch.device("cuda") != torch.device("cuda:0")`)."""
from __future__ import annotations

from typing import Any, Optional

from evomerge.errors import EvomergeError

FIX = "use device: cpu, or run on a machine with that GPU and a build of torch for it (CUDA or MPS)"


def unavailable(device: Any) -> Optional[str]:
    """Why `device` cannot be used on this machine; None if it can."""
    import torch

    d = torch.device(device)
    if d.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (d.index or 0) >= count:
            return (f"{str(device)!r}, but torch {torch.__version__} sees {count} CUDA GPU(s) here"
                    + ("" if torch.version.cuda else " (a CPU build of torch)"))
    elif d.type == "mps" and not torch.backends.mps.is_available():
        return f"{str(device)!r}, but this machine has no Apple GPU"
    return None


def resolve(device: Any) -> str:
    """The device as the tensors put on it name theirs; an EvomergeError if this machine does not have it (a run
    made on a GPU machine and resumed on another)."""
    import torch

    why = unavailable(device)
    if why is not None:
        raise EvomergeError(f"device {why}. Fix: {FIX}")
    d = torch.device(device)
    if d.type == "cpu":
        return "cpu"
    if d.index is None:
        d = torch.device(d.type, torch.cuda.current_device() if d.type == "cuda" else 0)
    return str(d)
