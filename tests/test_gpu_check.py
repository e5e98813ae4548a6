"""benchmarks/gpu_check.py, the one command a lent GPU runs, works on the CPU on tiny models: every step runs or is
skipped with its reason, a failing step is recorded and the next one runs, the budget is kept, and the table is well
formed. No timing is asserted: this only makes sure that the GPU's few minutes are not lost to a typo."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import COLUMNS, STEPS  # noqa: E402


def _check(out: Path, *args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--shape", "tiny", "--device",
                           "cpu", "--out", str(out), *args], capture_output=True, text=True, timeout=timeout)
    return done, json.loads((out / "gpu_check.json").read_text())


def _table(out: Path) -> list[list[str]]:
    lines = [line for line in (out / "gpu_check.md").read_text().splitlines() if line.startswith("|")]
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |" and lines[1] == "|" + "---|" * len(COLUMNS)
    cells = [line.split(" | ") for line in lines[2:]]
    assert all(len(c) == len(COLUMNS) for c in cells), "a row with a stray | or a missing cell"
    return cells


def test_every_step_runs_on_the_cpu_and_the_table_is_well_formed(tmp_path: Path):
    done, result = _check(tmp_path, "--budget-s", "900")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = result["rows"]
    assert [s for s in STEPS if any(r["step"] == s for r in rows)] == list(STEPS)
    for r in rows:
        assert r["status"] == "ok" or (r["status"] == "skipped" and r["note"]), r
    cases = {(r["step"], r["case"]) for r in rows}
    assert {("merge", f"{m}, {k} parents") for m in ("linear", "ties", "dare_ties", "task_arithmetic") for k in (2, 3)
            } | {("merge", "slerp, 2 parents"), ("merge", "layer_path, 2 parents")} <= cases
    assert {("run", "kill -9 halfway, resume"), ("masks", "DARE-TIES masks: fast path vs mergekit, both on cpu")
            } <= cases
    assert any(r["step"] == "es" and "in the forward, 2 pair(s)" in r["case"] for r in rows)
    table = _table(tmp_path)
    assert len(table) == len(rows) and all(cells[0] == "| " + r["step"] for cells, r in zip(table, rows))


def test_a_failing_step_is_recorded_and_the_next_runs(tmp_path: Path):
    work = tmp_path / "work"
    broken = work / "mid-float32"  # models cached by an earlier call, since damaged
    for name in ("base", "p0", "p1", "p2"):
        (broken / name).mkdir(parents=True)
    (broken / "done").touch()
    done, result = _check(tmp_path / "out", "--steps", "masks,env", "--work", str(work))
    assert done.returncode == 1
    masks = [r for r in result["rows"] if r["step"] == "masks"]
    assert masks[-1]["status"] == "FAIL" and "gpu_check.masks.log" in masks[-1]["note"]
    assert (tmp_path / "out" / "gpu_check.masks.log").read_text().strip()
    assert any(r["step"] == "env" and r["status"] == "ok" for r in result["rows"])


def test_the_budget_is_kept_and_what_it_cut_says_so(tmp_path: Path):
    done, result = _check(tmp_path, "--steps", "env,merge,ray", "--budget-s", "12")
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["wall_s"] < 60
    cut = [r for r in result["rows"] if r["status"] == "skipped"]
    assert cut and all("budget" in r["note"] and "--steps" in r["note"] for r in cut)
    assert {r["step"] for r in cut} >= {"ray"}


def test_a_missing_gpu_is_refused_before_any_work(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "error: --device 'cuda', but torch" in done.stderr and "Fix:" in done.stderr
    assert not (tmp_path / "o").exists()
