"""LoRA fine-tunes with peft: train an adapter on (prompt, completion) pairs, merge it into the model.

The adapter (safetensors, a few MB) is the member's recipe next to its parent: parent + adapter rebuilds the member
bit-exactly with `apply_adapter`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from evomerge.config import LoraSpec


def train_lora(model, tokenizer, pairs: list[tuple[str, str]], spec: LoraSpec, *, adapter_dir: Path,
               on_step: Optional[Callable[[int, float], None]] = None):
    """Fine-tune `model` (modified) on `pairs` and return the merged model; the adapter is saved to adapter_dir.

    The loss covers the completion tokens only, as in the tasks' scoring; batches are drawn from a generator seeded
    with `spec.seed`, so the same spec, model and data give the same adapter.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(spec.seed)
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    order = torch.Generator().manual_seed(spec.seed)
    device = next(model.parameters()).device
    for step in range(spec.steps):
        idx = torch.randint(len(pairs), (spec.batch_size,), generator=order).tolist()
        input_ids, labels, mask = _batch(tokenizer, [pairs[i] for i in idx], spec.max_length)
        out = peft_model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
        out.loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step + 1, float(out.loss))
    peft_model.eval()
    adapter_dir.parent.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(adapter_dir), safe_serialization=True)
    return peft_model.merge_and_unload()


def apply_adapter(model, adapter_dir: Path):
    """Rebuild a fine-tuned member: its parent's model plus its saved adapter, merged."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload().eval()


def _batch(tokenizer, pairs: list[tuple[str, str]], max_length: int):
    import torch

    rows, targets = [], []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        ids = (p + c)[-max_length:]  # keep the completion when a prompt is too long
        n_prompt = max(0, len(ids) - len(c))
        rows.append(ids)
        targets.append([-100] * n_prompt + ids[n_prompt:])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, targets)):
        input_ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(t)] = torch.tensor(t)
        mask[i, : len(r)] = 1
    return input_ids, labels, mask
