"""Cheap rewards for noise ES, computed on a batch of (prompt, completion) examples with forward passes only.

- loglik: mean log-probability per completion token (the EA4LLM reward); smooth, so ES sees small improvements.
- exact_match: the share of prompts whose greedy completion equals the target, stripped.
The pipeline's lm-eval `select` score can be the reward too (evomerge.mutation.es builds that one).
"""
from __future__ import annotations

from typing import Callable

from evomerge.mutation.lora import _batch


class Reward:
    """A reward on a fixed batch: `reward()` scores the model as it is; `reward.groups(g)` runs the batch g times in
    one forward (g equal groups, for a population evaluated inside the forward pass: evomerge/mutation/inforward.py)
    and returns one reward per group."""

    def __init__(self, per_group: Callable[[int], list[float]], single: Callable[[], float]) -> None:
        self.groups = per_group
        self._single = single

    def __call__(self) -> float:
        return self._single()


def loglik(model, tokenizer, examples: list[tuple[str, str]], *, max_length: int = 96) -> Reward:
    import torch

    input_ids, labels, mask = _batch(tokenizer, examples, max_length)
    device = next(model.parameters()).device
    input_ids, labels, mask = input_ids.to(device), labels.to(device), mask.to(device)
    targets = labels[:, 1:]
    keep = targets != -100

    decoder, head = model.get_decoder(), model.get_output_embeddings()

    def logprobs(g: int):
        with torch.no_grad():
            rows = keep.repeat(g, 1)
            hidden = decoder(input_ids=input_ids.repeat(g, 1), attention_mask=mask.repeat(g, 1)).last_hidden_state
            # the vocabulary projection and its log-softmax only where a target token is predicted
            picked = head(hidden[:, :-1][rows]).float()
            return picked.gather(-1, targets.repeat(g, 1)[rows].unsqueeze(-1)).squeeze(-1) - picked.logsumexp(-1)

    return Reward(lambda g: logprobs(g).view(g, -1).mean(1).tolist(), lambda: float(logprobs(1).mean()))


def exact_match(model, tokenizer, examples: list[tuple[str, str]], *, max_new_tokens: int = 8) -> Reward:
    import torch

    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer([p for p, _ in examples], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    wanted = [c.strip() for _, c in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def per_group(g: int) -> list[float]:
        with torch.no_grad():
            out = model.generate(input_ids=enc["input_ids"].repeat(g, 1), attention_mask=enc["attention_mask"].repeat(
                g, 1), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        hits = [t.strip().split("\n")[0].strip() == w for t, w in zip(texts, wanted * g)]
        n = len(examples)
        return [sum(hits[i * n:(i + 1) * n]) / n for i in range(g)]

    return Reward(per_group, lambda: per_group(1)[0])
