"""LoRA fine-tunes with peft (Hu et al., arXiv 2106.09685): train an adapter on (prompt, completion) examples,
merge it into the model. A mutation operator (`kind: lora`) and the way a population makes LoRA seeds.

The adapter (safetensors, a few MB) is the member's recipe next to its parent: parent + adapter rebuilds the member
bit-exactly with `apply_adapter`.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from pydantic import Field

from evomerge.config import LoraSettings, OperatorSettings
from evomerge.executor.base import MutationJob
from evomerge.mutation.base import Checkpoint, Mutant, MutationOperator
from evomerge.records import MemberRecord

if TYPE_CHECKING:
    from evomerge.preflight import Preflight
    from evomerge.workbench import Workbench


CHECKPOINT = "checkpoint.safetensors"  # in the adapter's directory while the fine-tune is under way


def checkpoint_seconds() -> float:
    """How often a fine-tune saves its state ($EVOMERGE_CHECKPOINT_SECONDS, default 60; 0: after every step)."""
    return float(os.environ.get("EVOMERGE_CHECKPOINT_SECONDS", "60"))


def train_lora(model, tokenizer, examples: list[tuple[str, str]], spec: LoraSettings, *, adapter_dir: Path,
               on_step: Optional[Callable[[int, float], None]] = None):
    """Fine-tune `model` (modified) on `examples` and return the merged model; the adapter is saved to adapter_dir.

    The loss covers the completion tokens only, as in the tasks' scoring; batches are drawn from a generator seeded
    with `spec.seed`, so the same spec, model and data give the same adapter. Every `checkpoint_seconds()`, and at
    Ctrl-C (at the end of the step under way), the adapter, the optimiser and both random generators are saved to
    `adapter_dir/checkpoint.safetensors`; a fine-tune started again continues from there and ends with the adapter
    an uninterrupted one gives.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(spec.seed)
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.train()
    state = _TrainState(peft_model, spec, adapter_dir / CHECKPOINT)
    device = next(model.parameters()).device
    with _deferred_interrupt() as interrupted:
        for step in range(state.restore(), spec.steps):
            idx = torch.randint(len(examples), (spec.batch_size,), generator=state.order).tolist()
            input_ids, labels, mask = _batch(tokenizer, [examples[i] for i in idx], spec.max_length)
            out = peft_model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            out.loss.backward()
            state.optimiser.step()
            state.optimiser.zero_grad(set_to_none=True)
            if on_step is not None:
                on_step(step + 1, float(out.loss.detach()))
            if interrupted():
                state.save(step + 1)
                raise KeyboardInterrupt
            state.maybe_save(step + 1)
    peft_model.eval()
    adapter_dir.parent.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(adapter_dir), safe_serialization=True)
    (adapter_dir / CHECKPOINT).unlink(missing_ok=True)
    return peft_model.merge_and_unload()


class _TrainState:
    """What a fine-tune needs to go on exactly where it stopped: the adapter's weights, AdamW's moments and step
    counts, the batch-order generator and torch's global generator (dropout). Saved as one safetensors file,
    replaced atomically; nothing is unpickled to read it back."""

    def __init__(self, peft_model, spec: LoraSettings, path: Path) -> None:
        import torch

        self.path, self.spec = path, spec
        self.named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
        self.optimiser = torch.optim.AdamW([p for _, p in self.named], lr=spec.learning_rate, weight_decay=0.0)
        self.order = torch.Generator().manual_seed(spec.seed)
        self._every, self._last = checkpoint_seconds(), time.monotonic()

    def _key(self) -> str:
        return json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)

    def maybe_save(self, done: int) -> None:
        if done < self.spec.steps and time.monotonic() - self._last >= self._every:
            self.save(done)

    def save(self, done: int) -> None:
        import torch
        from safetensors.torch import save_file

        tensors = {f"adapter.{n}": p.detach().cpu().contiguous() for n, p in self.named}
        for i, (_, p) in enumerate(self.named):
            for k, v in self.optimiser.state.get(p, {}).items():
                tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        tensors["rng.order"] = self.order.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(".tmp-" + self.path.name)
        save_file(tensors, str(tmp), metadata={"steps_done": str(done), "settings": self._key()})
        os.replace(tmp, self.path)
        self._last = time.monotonic()

    def restore(self) -> int:
        """The steps already done: 0, or those of a checkpoint made with the same settings (loaded here)."""
        import torch
        from safetensors import safe_open

        if not self.path.is_file():
            return 0
        with safe_open(str(self.path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("settings") != self._key():
            return 0  # another fine-tune's state: start afresh
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(tensors[f"adapter.{n}"])
        state = {i: {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
                 for i in range(len(self.named))}
        self.optimiser.load_state_dict({"state": {i: s for i, s in state.items() if s},
                                        "param_groups": self.optimiser.state_dict()["param_groups"]})
        self.order.set_state(tensors["rng.order"])
        torch.set_rng_state(tensors["rng.torch"])
        return int(meta["steps_done"])


class _Told:
    """Progress events for the driver's store while a fine-tune runs (`evomerge status` reads them): at the first
    step this process makes, then every `progress_seconds()`, with the steps done and an ETA."""

    def __init__(self, checkpoint: Callable[..., None], member: str, operator: str, steps: int) -> None:
        from evomerge.progress import progress_seconds

        self.checkpoint, self.member, self.operator, self.steps = checkpoint, member, operator, steps
        self.every, self.last, self.first = progress_seconds(), -math.inf, None

    def __call__(self, step: int, loss: float) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (step, now)  # the pace is measured from this process's first step on
        if now - self.last < self.every and step < self.steps:
            return
        self.last = now
        done, since = self.first
        eta = (now - since) / (step - done) * (self.steps - step) if step > done else None
        self.checkpoint(None, {}, member=self.member, operator=self.operator, steps=self.steps, done=step,
                        loss=round(loss, 4), eta=None if eta is None else round(eta, 1))


@contextmanager
def _deferred_interrupt():
    """Ctrl-C during a step is taken at the end of that step, so that what is saved is a whole step."""
    hit = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: hit.append(True))
    except ValueError:  # not the main thread: interrupts are not deferred
        yield lambda: False
        return
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, previous)


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
    def check(cls, settings: Any, preflight: "Preflight", *, key: str) -> None:
        preflight.data(settings.task, settings.data, key=key)
        preflight.modules(settings.target_modules, key=f"{key}.target_modules")

    @classmethod
    def mutate(cls, bench: "Workbench", model: Any, job: MutationJob, checkpoint: Checkpoint) -> Mutant:
        s = job.settings
        examples = bench.examples(s.task, s.data, job.data_root)
        source = s.task or s.data
        what = f"LoRA fine-tune of {job.parent_name} into {job.name} on {source}"
        bar = bench.progress.step(what, total=s.steps)
        checkpoint(None, {}, member=job.name, operator=cls.name, steps=s.steps)  # `evomerge status`: under way
        told = _Told(checkpoint, job.name, cls.name, s.steps)

        def on_step(step: int, loss: float) -> None:
            bench.progress.advance(bar, description=f"{what} (loss {loss:.3f})")
            told(step, loss)

        merged = train_lora(model, bench.tokenizer, examples, s, adapter_dir=job.files_dir, on_step=on_step)
        return Mutant(merged, {"parent": job.parent_name, "adapter": job.files_ref, "lora": s.model_dump(mode="json"),
                               "train_examples": len(examples)})

    @classmethod
    def rebuild(cls, bench: "Workbench", model: Any, member: MemberRecord, run_dir: Path) -> Any:
        return apply_adapter(model, run_dir / json.loads(member.recipe)["adapter"])

    @classmethod
    def recipe_files(cls, member: MemberRecord, run_dir: Path) -> list[Path]:
        return [run_dir / json.loads(member.recipe)["adapter"] / "adapter_model.safetensors"]

    @classmethod
    def edge_label(cls, params: dict) -> str:
        data = f"task={params['task']}" if params.get("task") else f"data={params['data']}"
        return (f"{cls.name} {data} steps={params['steps']} r={params['r']} alpha={params['alpha']} "
                f"lr={params['learning_rate']:g}")
