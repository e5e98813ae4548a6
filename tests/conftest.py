"""Tiny real models for the tests: random-init Llamas of a few layers with a small byte-level BPE tokenizer."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from evomerge.store import open_store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Question: What is 12 + 34?\nAnswer: 46"] * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def make_model(out: Path, *, seed: int, base_seed: int = 0, noise: float = 0.02, layers: int = 4):
    """A random Llama saved as an HF directory; seed != base_seed adds noise, like a fine-tune of the base."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
                      bos_token_id=1, eos_token_id=1, tie_word_embeddings=False)
    torch.manual_seed(base_seed)
    model = LlamaForCausalLM(cfg)
    if seed != base_seed:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """models/base, models/a, models/b: a base and two 'fine-tunes' of it."""
    root = tmp_path_factory.mktemp("tiny")
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        make_model(root / "models" / name, seed=seed)
    return root


POPULATION = """\
name: tiny
base_model: base
members:
  - {name: base, model: MODELS/base}
  - {name: a, model: MODELS/a}
  - {name: b, model: MODELS/b}
"""

PIPELINE = """\
name: tiny
population: population.yaml
generations: 2
population_size: 3
children_per_generation: 2
parents_per_child: 2
parent_selection: {kind: tournament, k: 2}
crossover: {method: ties, search: [weight, density], layer_group: 2, cma: {sigma0: 0.3, popsize: 3, budget: 6}}
fitness:
  tasks: [{task: evomerge_arith, metric: acc}, {task: evomerge_arc_easy, metric: acc}]
  select: {split: select, limit: 6}
  report: {split: report, limit: 6}
seed: 3
"""


@pytest.fixture
def tiny_pipeline(tiny_models, tmp_path) -> Path:
    """A valid pipeline over the tiny models; tests edit the YAML text to break it."""
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    return tmp_path / "pipeline.yaml"


def model_tensors(model_dir: Path) -> dict:
    """Every tensor of an HF model directory's safetensors files, by name."""
    from safetensors.torch import load_file

    out: dict = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def max_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts with the same names."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def evomerge(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess, its output read as a pipe or a log is (pytest's COLUMNS left out, so
    that nothing is wrapped to a terminal's width)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "evomerge.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def snapshot(run_dir: Path) -> dict:
    """What two runs with the same seed must agree on: members, survivors, every score, every CMA-ES candidate."""
    store = open_store(run_dir)
    try:
        # merge recipes name their parents' directories wherever they were: compare what follows members/, models/
        members = [(m.name, m.generation, m.operator, [store.member(p).name for p in m.parents], m.params,
                    re.sub(r"\S*/(members|models)/", r"<\1>/", m.recipe), m.state.value) for m in store.members()]
        names = {m.id: m.name for m in store.members()}
        survivors = [[names[i] for i in store.survivors(g) or []] for g in (1, 2)]
        scores = sorted((s.subject.split(":")[0], names.get(int(s.subject.split(":")[1]), s.subject)
                         if s.subject.startswith("member") else s.subject, s.task, s.split, s.metric, s.value)
                        for s in store.all_scores())
        candidates = [(c.iteration, c.idx, c.x, c.score) for x in store.crossovers()
                      for c in store.candidates(x.id)]
        return {"members": members, "survivors": survivors, "scores": scores, "candidates": candidates}
    finally:
        store.close()


def events_count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.Error:
        return 0


def killed_and_resumed(pipeline: Path, tmp_path: Path) -> tuple[Path, Path]:
    """An uninterrupted run of `pipeline`, and a run of it killed (-9) halfway and resumed: (reference, killed), the
    second checked to have ended exactly where the first did."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert evomerge("run", str(pipeline), "--run-dir", str(reference), "--quiet").returncode == 0
    events = len(open_store(reference).events())
    assert run_and_kill(["run", str(pipeline), "--run-dir", str(killed), "--quiet"], killed / "evomerge.db",
                        events // 2)
    assert evomerge("resume", str(killed), "--quiet").returncode == 0
    assert snapshot(killed) == snapshot(reference)
    return reference, killed


def run_and_kill(args: list[str], db: Path, at_events: int) -> bool:
    """Start the CLI, SIGKILL it once the store holds `at_events` events; False if it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if events_count(db) >= at_events:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    return False
