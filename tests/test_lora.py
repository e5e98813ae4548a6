"""LoRA specialists (peft): training lowers the loss, changes the model only through the merged adapter, and
parent + saved adapter rebuilds the member bit-exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.config import LoraSpec
from evomerge.mutation.lora import _batch, apply_adapter, train_lora

PAIRS = [(f"Question: What is {a} + {b}?\nAnswer:", f" {a + b}") for a in range(10, 30) for b in range(10, 20)]


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _loss(model, tokenizer) -> float:
    ids, labels, mask = _batch(tokenizer, PAIRS[:32], 64)
    with torch.no_grad():
        return float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)


def test_lora_learns_and_rebuilds_bit_exactly(tiny_models: Path, tmp_path: Path):
    base_dir = tiny_models / "models" / "base"
    model, tok = _load(base_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_before = _loss(model, tok)
    spec = LoraSpec(parent="base", task="t", steps=30, learning_rate=5e-3, batch_size=8, r=4, alpha=8,
                    target_modules=("q_proj", "v_proj", "up_proj"))
    tuned = train_lora(model, tok, PAIRS, spec, adapter_dir=tmp_path / "adapter")
    assert _loss(tuned, tok) < loss_before - 0.1

    after = tuned.state_dict()
    assert after.keys() == before.keys()  # merged: no LoRA modules left in the model
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(any(m in k for m in spec.target_modules) for k in changed)  # only adapted modules move

    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    rebuilt = apply_adapter(_load(base_dir)[0], tmp_path / "adapter").state_dict()
    assert all(torch.equal(rebuilt[k], after[k]) for k in after)


def test_same_spec_same_adapter(tiny_models: Path, tmp_path: Path):
    base_dir = tiny_models / "models" / "base"
    spec = LoraSpec(parent="base", task="t", steps=3, batch_size=4, r=2, alpha=4, target_modules=("q_proj",))
    one = train_lora(_load(base_dir)[0], _load(base_dir)[1], PAIRS, spec, adapter_dir=tmp_path / "1").state_dict()
    two = train_lora(_load(base_dir)[0], _load(base_dir)[1], PAIRS, spec, adapter_dir=tmp_path / "2").state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)


class _Killed(Exception):
    pass


def test_a_fine_tune_killed_mid_way_goes_on_from_its_last_save_to_the_same_adapter(tiny_models: Path,
                                                                                  tmp_path: Path, monkeypatch):
    """State is saved after every step here (EVOMERGE_CHECKPOINT_SECONDS=0); the process dies inside step 5, with
    dropout on so that torch's global generator matters too. Started again, it does steps 5..12 only and ends with
    the adapter and the merged model of a fine-tune that was never interrupted."""
    from safetensors.torch import load_file

    monkeypatch.setenv("EVOMERGE_CHECKPOINT_SECONDS", "0")
    base_dir = tiny_models / "models" / "base"
    spec = LoraSpec(parent="base", task="t", steps=12, learning_rate=5e-3, batch_size=4, r=2, alpha=4, dropout=0.1,
                    target_modules=("q_proj", "v_proj"))
    whole = train_lora(*_load(base_dir), PAIRS, spec, adapter_dir=tmp_path / "whole").state_dict()

    def dies_in_step_5(step: int, loss: float) -> None:
        if step == 5:
            raise _Killed  # after step 5's update, before its save: the last save is step 4's
    model, tok = _load(base_dir)
    with pytest.raises(_Killed):
        train_lora(model, tok, PAIRS, spec, adapter_dir=tmp_path / "killed", on_step=dies_in_step_5)
    assert (tmp_path / "killed" / "checkpoint.safetensors").is_file()
    steps = []
    resumed = train_lora(*_load(base_dir), PAIRS, spec, adapter_dir=tmp_path / "killed",
                         on_step=lambda step, loss: steps.append(step)).state_dict()
    assert steps == list(range(5, 13))
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    ours = load_file(tmp_path / "killed" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not (tmp_path / "killed" / "checkpoint.safetensors").exists()  # done: no state left behind


def test_a_checkpoint_of_other_settings_is_not_used(tiny_models: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EVOMERGE_CHECKPOINT_SECONDS", "0")
    base_dir = tiny_models / "models" / "base"
    spec = LoraSpec(parent="base", task="t", steps=4, batch_size=2, r=2, alpha=4, target_modules=("q_proj",))

    def dies(step: int, loss: float) -> None:
        if step == 3:
            raise _Killed
    with pytest.raises(_Killed):
        train_lora(*_load(base_dir), PAIRS, spec, adapter_dir=tmp_path / "a", on_step=dies)
    other = spec.model_copy(update={"learning_rate": 2e-3})
    steps = []
    train_lora(*_load(base_dir), PAIRS, other, adapter_dir=tmp_path / "a", on_step=lambda s, _: steps.append(s))
    assert steps == [1, 2, 3, 4]
