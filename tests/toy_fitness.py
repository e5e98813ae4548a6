"""Python fitness functions for the tests (evomerge/fitness/lm_eval.py calls them like lm-eval tasks).

- `closeness`: minus the squared distance of the model's weights to a reference model's: two of them, towards two
  different models, are objectives that conflict, as selection over several tasks must handle.
- `counted_loglik`: evomerge's example held-out log-likelihood, logging each call to a file, so that a test can
  check that no score is computed twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

_REFERENCES: dict[str, dict] = {}


def closeness(model, tokenizer, *, split, limit, device, reference: str) -> dict[str, float]:
    from safetensors.torch import load_file

    if reference not in _REFERENCES:
        _REFERENCES[reference] = load_file(str(Path(reference) / "model.safetensors"))
    ref = _REFERENCES[reference]
    distance = sum(float(((p.detach().float().cpu() - ref[n]) ** 2).sum()) for n, p in model.named_parameters()
                   if n in ref)
    return {"closeness": -distance}


def counted_loglik(model, tokenizer, *, split, limit, device, log: str, **kwargs) -> dict[str, float]:
    from evomerge.fitness.perplexity import heldout_loglik

    out = heldout_loglik(model, tokenizer, split=split, limit=limit, device=device, **kwargs)
    with open(log, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "split": split, "limit": limit,
                            "weights": float(sum(p.detach().double().sum() for p in model.parameters()))}) + "\n")
    return out
