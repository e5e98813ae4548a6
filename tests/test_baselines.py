"""benchmarks/baselines.py on tiny models: every kind of arm runs, resumes as done, and the table pairs each arm's
report outcomes with arm (d)'s."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PIPELINE, POPULATION

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"


def baselines(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # about 80 s: a smoke test of a benchmark script
def test_arms_run_share_their_seeds_and_are_paired_with_arm_d(tiny_models: Path, tmp_path: Path):
    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    small = PIPELINE.replace("generations: 2", "generations: 1").replace("popsize: 3, budget: 6", "popsize: 2, budget: 4")
    (tmp_path / "pipeline.yaml").write_text(small)
    work = tmp_path / "work"
    common = ["--pipeline", str(tmp_path / "pipeline.yaml"), "--work", str(work)]
    for arm in ("a", "b-ta", "c-ta", "d"):
        done = baselines("--arm", arm, *common)
        assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    assert set(results) == {"a", "b-ta", "c-ta", "d"}
    # the searching arms score the same number of merges: the pipeline's generations x children x budget
    assert results["c-ta"]["candidates"] == results["d"]["candidates"] == 2 * 4
    assert results["a"]["documents"] == 0 and results["b-ta"]["documents"] == 2 * (6 + 6)
    assert results["a"]["member"] in {"base", "a", "b"}
    # arm c breeds one child of every member, from the seeds' copy (their scores are not computed again)
    assert (work / "c-ta").is_dir() and results["c-ta"]["documents"] > 0
    again = baselines("--arm", "d", *common)  # done: nothing runs again
    assert again.returncode == 0 and "done already" in again.stdout
    table = baselines("--table", *common).stdout
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| arm | answer | select (weighted) | report (weighted)")
    row = {line.split(" | ")[0].removeprefix("| ").split(":")[0]: line for line in lines[1:]}
    assert "not run yet" in row["e"] and "not run yet" in row["b-ties"]
    for arm in ("a", "b-ta", "c-ta"):
        assert "[" in row[arm] and "]" in row[arm]  # its paired interval against (d)
    assert row["d"].count("–") >= 1
