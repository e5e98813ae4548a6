"""An example Python fitness function: the model's mean log-likelihood per token of held-out text (minus its log
perplexity), from a JSONL file of {"text": ...} lines, one file per split.

    fitness:
      tasks:
        - {python: "evomerge.fitness.perplexity:heldout_loglik", metric: loglik, weight: 0.1}
        - {python: "evomerge.fitness.perplexity:heldout_loglik", task: my_text, metric: loglik,
           args: {data: "texts/{split}.jsonl"}}        # your own files, relative to the pipeline

Without `data` it reads the shipped tasks/text/{select,report}.jsonl (ARC-Easy questions with their answers,
CC BY-SA 4.0). Higher is better, as selection wants; `perplexity` is reported beside it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

TEXT = Path(__file__).resolve().parent / "tasks" / "text" / "{split}.jsonl"


def heldout_loglik(model, tokenizer, *, split: str, limit: Optional[int], device: str, data: Optional[str] = None,
                   max_length: int = 256, batch_size: int = 16) -> dict[str, float]:
    path = Path(str(data or TEXT).format(split=split))
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = texts[:limit] if limit else texts
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding="longest", truncation=True,
                        max_length=max_length, padding_side="right", add_special_tokens=False)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        ids = ids.masked_fill(mask == 0, pad)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        picked = logits.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        keep = mask[:, 1:].bool()
        total += float(picked[keep].sum())
        tokens += int(keep.sum())
    loglik = total / max(1, tokens)
    return {"loglik": loglik, "perplexity": math.exp(-loglik), "docs": len(texts)}
