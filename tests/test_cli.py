"""The command line a newcomer meets: help for every argument with examples, --version, quiet ends of pipes, refusals
before anything heavy is imported, tables and trees that fit 80 columns, and progress that shows in a log (a start
line, a line at least every so often with an ETA, events that `evomerge status` reads during a fine-tune)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import evomerge


@pytest.fixture(scope="module")
def finished(tiny_models: Path, tmp_path_factory) -> Path:
    """A finished one-generation tiny run with a LoRA mutant (and the intermediate merge it was made from)."""
    from conftest import PIPELINE, POPULATION

    root = tmp_path_factory.mktemp("cli")
    (root / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    (root / "pipeline.yaml").write_text(PIPELINE.replace("generations: 2", "generations: 1") + """\
mutation:
  rate: 1
  keep: always
  operators: [{kind: lora, task: evomerge_arith, steps: 3, batch_size: 2}]
""")
    result = evomerge("run", str(root / "pipeline.yaml"), "--run-dir", str(root / "run"), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_every_command_explains_every_argument_with_examples():
    from evomerge.cli import _parser

    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    assert {"run", "resume", "status", "leaderboard", "lineage", "export", "rebuild", "check", "report"} <= set(commands)
    for name, parser in commands.items():
        text = evomerge(name, "--help").stdout
        assert "examples:" in text and f"evomerge {name} " in text, name
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help and action.help.strip(), f"{name}: {action.dest} has no help"
            shown = action.option_strings[-1] if action.option_strings else action.dest
            assert shown in text, f"{name} --help does not show {shown}"
            if action.option_strings and action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()), f"{name}: {shown} default"
    version = evomerge("--version")
    assert version.returncode == 0 and version.stdout.startswith("evomerge 0.")


@pytest.mark.parametrize("command", [["status"], ["lineage"], ["leaderboard", "--format", "csv"], ["leaderboard"]])
@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_a_pipe_closed_early_ends_quietly(finished: Path, command, reader):
    args = " ".join([sys.executable, "-m", "evomerge.cli", command[0], str(finished), *command[1:]])
    result = subprocess.run(["bash", "-c", f"{args} | {reader}; exit ${{PIPESTATUS[0]}}"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr and result.stderr == "", result.stderr


def test_a_run_directory_in_use_is_refused_before_torch_is_imported(finished: Path, tmp_path: Path):
    """`run --run-dir` on a run, or on a folder that is not one: the advice that fits, before any heavy import."""
    probe = ("import sys; from evomerge.cli import main; rc = main(sys.argv[1:]); "
             "print('torch' in sys.modules, rc)")
    pipeline = finished.parent / "pipeline.yaml"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("x")
    for run_dir, advice in ((finished, f"`evomerge resume {finished}` to continue it"),
                            (other, "is not empty and is not an evomerge run directory")):
        result = subprocess.run([sys.executable, "-c", probe, "run", str(pipeline), "--run-dir", str(run_dir)],
                                capture_output=True, text=True)
        assert result.stdout.split() == ["False", "2"], (result.stdout, result.stderr)
        assert advice in result.stderr and "Fix:" in result.stderr


def test_tables_and_trees_fit_80_columns(finished: Path):
    env = {**os.environ, "COLUMNS": "80"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "evomerge.cli", *a], capture_output=True, text=True,
                                    env=env)
    table = run("leaderboard", str(finished)).stdout
    rows = json.loads(evomerge("leaderboard", str(finished), "--format", "json").stdout)
    assert all(len(line) <= 80 for line in table.splitlines()), table
    assert "arith" in table and "arc_easy" in table and "arith = evomerge_arith" in " ".join(table.split())
    for r in rows:  # every task's score of every member is on screen
        line = next(line for line in table.splitlines() if re.match(rf"^│\s*{r['rank']}\s*│", line))
        for task, value in r["tasks"].items():
            assert (f"{value:.4f}" if value is not None else "-") in line, (task, line)
    tree = run("lineage", str(finished), "g1-c0").stdout
    assert all(len(line) <= 80 for line in tree.splitlines() if " " in line.strip()), tree
    assert "[lora task=evomerge_arith" in tree and "intermediate" in tree
    every = json.loads(evomerge("leaderboard", str(finished), "--all", "--format", "json").stdout)
    assert {r["state"] for r in every} - {r["state"] for r in rows} == {"intermediate"}


def test_progress_shows_in_a_log_and_status_names_the_fine_tune(tiny_pipeline: Path, tmp_path: Path):
    """Not a terminal (a pipe): a start line, progress lines with an ETA, a done line with the duration; the store
    gets progress events, and `evomerge status` says which fine-tune runs and how far it is."""
    population = tiny_pipeline.parent / "population.yaml"
    population.write_text(population.read_text() + "  - {name: c, lora: {parent: a, task: evomerge_arith, steps: 400,"
                                                   " batch_size: 2}}\n")
    tiny_pipeline.write_text(tiny_pipeline.read_text().replace("generations: 2", "generations: 1"))
    run_dir = tmp_path / "run"
    env = {**os.environ, "EVOMERGE_PROGRESS_SECONDS": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "run", str(tiny_pipeline), "--run-dir",
                             str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []  # status lines naming the fine-tune; the first step's has no pace yet, so no ETA
    while proc.poll() is None and not any("left" in x for x in seen):
        if (run_dir / "evomerge.db").exists():
            line = evomerge("status", str(run_dir)).stdout
            now = next((x for x in line.splitlines() if x.startswith("now")), "")
            if "fine-tuning c, step " in now:
                seen.append(now)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert seen and all("/400" in x for x in seen) and "left" in seen[-1], seen
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if "start  LoRA fine-tune of a into c" in x)
    done = next(i for i, x in enumerate(lines) if "done   LoRA fine-tune of a into c" in x)
    between = [x for x in lines[start + 1:done] if "LoRA fine-tune of a into c" in x]
    assert between and all("/400" in x for x in between) and any("left" in x for x in between)
    assert "\x1b[" not in out  # no live bars or colours in a log
    from evomerge.store import open_store

    events = [d for _, kind, d in open_store(run_dir).events() if kind == "mutation_progress" and d["member"] == "c"]
    assert events[0].get("done") is None and events[-1]["done"] == 400 and len(events) > 2
