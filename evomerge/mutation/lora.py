"""LoRA fine-tunes with peft (Hu et al., arXiv 2106.09685): train an adapter on (prompt, completion) examples,
merge it into the model. A mutation operator (`kind: lora`) and the way a population makes LoRA seeds.

The adapter (safetensors, a few MB) is the member's recipe next to its parent: parent + adapter rebuilds the member
bit-exactly with `apply_adapter`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from pydantic import Field

from evomerge.config import LoraSettings, OperatorSettings
from evomerge.executor.base import MutationJob
from evomerge.mutation.base import Checkpoint, Mutant, MutationOperator
from evomerge.records import MemberRecord

if TYPE_CHECKING:
    from evomerge.workbench import Workbench


def train_lora(model, tokenizer, examples: list[tuple[str, str]], spec: LoraSettings, *, adapter_dir: Path,
               on_step: Optional[Callable[[int, float], None]] = None):
    """Fine-tune `model` (modified) on `examples` and return the merged model; the adapter is saved to adapter_dir.

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
        idx = torch.randint(len(examples), (spec.batch_size,), generator=order).tolist()
        input_ids, labels, mask = _batch(tokenizer, [examples[i] for i in idx], spec.max_length)
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


def _batch(tokenizer, examples: list[tuple[str, str]], max_length: int):
    import torch

    rows, targets = [], []
    for prompt, completion in examples:
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


class LoraMutation(MutationOperator):
    """Mutation by a short LoRA fine-tune of the parent; the recipe is the parent plus the saved adapter."""

    class Settings(LoraSettings, OperatorSettings):
        """Defaults keep the adapter (the member's recipe) under 1 MB for SmolLM2-135M."""

        steps: int = Field(20, gt=0)
        r: int = Field(4, gt=0)
        alpha: int = Field(8, gt=0)
        target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    color = "#E69F00"

    @classmethod
    def check(cls, settings: Any, check_data: Callable[..., None], *, key: str) -> None:
        check_data(settings.task, settings.data, key=key)

    @classmethod
    def mutate(cls, bench: "Workbench", model: Any, job: MutationJob, checkpoint: Checkpoint) -> Mutant:
        s = job.settings
        examples = bench.examples(s.task, s.data, job.data_root)
        source = s.task or s.data
        bar = bench.progress.step(f"LoRA fine-tune {job.name} on {source}", total=s.steps)
        merged = train_lora(model, bench.tokenizer, examples, s, adapter_dir=job.files_dir,
                            on_step=lambda step, loss: bench.progress.advance(
                                bar, description=f"LoRA fine-tune {job.name} on {source} (loss {loss:.3f})"))
        bench.progress.log(f"{job.name}: LoRA fine-tune of {job.parent_name} on {source} ({s.steps} steps)")
        return Mutant(merged, {"parent": job.parent_name, "adapter": job.files_ref, "lora": s.model_dump(mode="json"),
                               "train_examples": len(examples)})

    @classmethod
    def rebuild(cls, bench: "Workbench", model: Any, member: MemberRecord, run_dir: Path) -> Any:
        return apply_adapter(model, run_dir / json.loads(member.recipe)["adapter"])

    @classmethod
    def edge_label(cls, params: dict) -> str:
        data = f"task={params['task']}" if params.get("task") else f"data={params['data']}"
        return (f"{cls.name} {data} steps={params['steps']} r={params['r']} alpha={params['alpha']} "
                f"lr={params['learning_rate']:g}")
