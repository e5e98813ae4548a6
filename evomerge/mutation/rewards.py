"""Cheap rewards for noise ES, computed on a batch of (prompt, completion) examples with forward passes only.

- loglik: mean log-probability per completion token (the EA4LLM reward); smooth, so ES sees small improvements.
- exact_match: the share of prompts whose greedy completion equals the target, stripped.
The pipeline's lm-eval `select` score can be the reward too (evomerge.mutation.es builds that one).
"""
from __future__ import annotations

from typing import Callable

from evomerge.mutation.lora import _batch


def loglik(model, tokenizer, examples: list[tuple[str, str]], *, max_length: int = 96) -> Callable[[], float]:
    import torch

    input_ids, labels, mask = _batch(tokenizer, examples, max_length)
    device = next(model.parameters()).device
    input_ids, labels, mask = input_ids.to(device), labels.to(device), mask.to(device)
    targets = labels[:, 1:]
    keep = targets != -100

    decoder, head = model.get_decoder(), model.get_output_embeddings()

    def reward() -> float:
        with torch.no_grad():
            hidden = decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state[:, :-1]
            # the vocabulary projection and its log-softmax only where a target token is predicted
            picked = head(hidden[keep]).float()
            logp = picked.gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1) - picked.logsumexp(-1)
        return float(logp.mean())

    return reward


def exact_match(model, tokenizer, examples: list[tuple[str, str]], *, max_new_tokens: int = 8) -> Callable[[], float]:
    import torch

    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer([p for p, _ in examples], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    wanted = [c.strip() for _, c in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def reward() -> float:
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return sum(t.strip().split("\n")[0].strip() == w for t, w in zip(texts, wanted)) / len(examples)

    return reward
