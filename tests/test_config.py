"""Malformed pipeline and population files: one paragraph naming file, key and fix; exit 2; nothing created."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import evomerge


def _break(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new))


CASES = {
    # name: (file to edit, old text, new text, words the error must contain)
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_one_paragraph_exit_2_and_creates_nothing(tiny_pipeline: Path, case: str):
    file, old, new, words = CASES[case]
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
    (tasks / "b.jsonl").write_text("".join(rows[5:]))
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
