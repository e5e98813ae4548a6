"""Distributed evolution on a local Ray (`ray.init(num_cpus=2)`): one worker or two end with the serial run's
lineage, parameters and scores (the golden file); a worker killed in the middle of a candidate has its task run
again and nothing is scored twice; a killed driver is resumed; workers that do not see the run directory get
member directories through the object store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import events_count, evomerge, run_and_kill

ray = pytest.importorskip("ray", reason="the Ray extra: pip install -e \".[ray]\"")
sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
from record import write_pipelines  # noqa: E402
from snapshot import run_snapshot  # noqa: E402

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden" / "lineage.json").read_text())


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _pipeline(root: Path, models: Path, executor: str, name: str = "linear") -> Path:
    path = write_pipelines(root, models)[name]
    out = root / f"{name}-{abs(hash(executor))}.yaml"
    out.write_text(path.read_text() + f"executor: {executor}\n")
    return out


def _snapshot(source, models: Path) -> dict:
    return json.loads(json.dumps(run_snapshot(source)).replace(str(models), "<models>"))


def _scored_twice(run_dir: Path) -> int:
    from evomerge.store import open_store

    scored = Counter((d["subject"], d["split"]) for _, _, d in open_store(run_dir).events(kind="scored"))
    return sum(n - 1 for n in scored.values())


@pytest.mark.parametrize("name,executor", [("linear", "{kind: ray, workers: 1}"), ("linear", "{kind: ray, workers: 2}"),
                                           ("linear", "{kind: ray, workers: 2, files: object_store}"),
                                           ("dare_ties", "{kind: ray, workers: 2}")])
def test_one_or_two_workers_give_the_serial_run(local_ray, tiny_models: Path, tmp_path: Path, name: str,
                                                executor: str):
    """Golden runs: 'linear' has crossover, a LoRA mutant, a noise-ES mutant (exact-match reward) and
    intermediates; 'dare_ties' a full-rank noise-ES mutant rewarded by the select score. Two children are bred at
    once, each CMA-ES iteration's candidates are scored at once, and with two workers an ES iteration's antithetic
    pairs are shared between them. The object-store variant ships every member directory to workers that act as
    if they could not see the run directory."""
    from evomerge.evolution import Run

    run = Run.start(_pipeline(tmp_path, tiny_models / "models", executor, name), run_dir=tmp_path / "run")
    run.run()
    assert _snapshot(run.store, tiny_models / "models") == GOLDEN[name]
    assert _scored_twice(tmp_path / "run") == 0
    assert not (tmp_path / "run" / "workers.json").exists()  # only while the run goes on


def test_a_worker_killed_in_the_middle_of_a_candidate_is_replaced(local_ray, tiny_models: Path, tmp_path: Path):
    from evomerge.evolution import Run

    run = Run.start(_pipeline(tmp_path, tiny_models / "models", "{kind: ray, workers: 2}"), run_dir=tmp_path / "run")
    killed = []

    def kill_a_worker_scoring_a_candidate() -> None:
        status = tmp_path / "run" / "workers.json"
        while not killed:
            try:
                workers = json.loads(status.read_text())["workers"]
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            busy = [w for w in workers.values() if w["task"].startswith("candidate")]
            if busy:
                os.kill(busy[0]["pid"], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_a_worker_scoring_a_candidate, daemon=True)
    watcher.start()
    run.run()
    assert killed, "no worker was caught scoring a candidate"
    assert _snapshot(run.store, tiny_models / "models") == GOLDEN["linear"]
    assert _scored_twice(tmp_path / "run") == 0


def test_the_driver_killed_and_resumed(tiny_models: Path, tmp_path: Path):
    """`evomerge run` on Ray (its own local Ray) is SIGKILLed in the middle; `evomerge resume` starts another Ray and
    ends where the serial run ends."""
    pipeline = _pipeline(tmp_path, tiny_models / "models", "{kind: ray, workers: 2}")
    run_dir = tmp_path / "run"
    try:
        assert run_and_kill(["run", str(pipeline), "--run-dir", str(run_dir), "--quiet"], run_dir / "evomerge.db", 30)
        assert 30 <= events_count(run_dir / "evomerge.db") < 68
        result = evomerge("resume", str(run_dir), "--quiet")
        assert result.returncode == 0, result.stderr[-3000:]
        assert _snapshot(run_dir, tiny_models / "models") == GOLDEN["linear"]
        assert _scored_twice(run_dir) == 0
    finally:
        _kill_orphaned_ray_agents()


def test_status_shows_the_workers_while_a_ray_run_goes_on(tiny_models: Path, tmp_path: Path):
    pipeline = _pipeline(tmp_path, tiny_models / "models", "{kind: ray, workers: 2}")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "evomerge.cli", "run", str(pipeline), "--run-dir", str(run_dir),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and not (run_dir / "workers.json").exists():
            time.sleep(0.05)
        status = evomerge("status", str(run_dir)).stdout
        assert "workers    2 Ray workers;" in status and "candidates per minute" in status
        assert "  worker 0 " in status and "  worker 1 " in status
        assert proc.wait(timeout=600) == 0, proc.stderr.read()
    finally:
        proc.kill()


def _kill_orphaned_ray_agents() -> None:
    """A SIGKILLed driver's local Ray leaves two agent processes behind, adopted by init (`ray stop` would remove
    them); those of a Ray still in use have their raylet as parent and are left alone."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and ("ray::DashboardAgent" in cmdline or "ray::RuntimeEnvAgent" in cmdline):
            os.kill(int(proc.name), signal.SIGKILL)


OOM_PLUGIN = '''
from evomerge.config import OperatorSettings
from evomerge.mutation.base import MutationOperator
from evomerge.registry import MUTATION_OPERATORS


class Greedy(MutationOperator):
    """Asks for more memory than there is."""

    class Settings(OperatorSettings):
        """No settings of its own."""

    @classmethod
    def mutate(cls, bench, model, job, checkpoint):
        raise MemoryError("cannot allocate 512 GiB")


MUTATION_OPERATORS.register("greedy", Greedy)
'''


def test_a_worker_out_of_memory_is_an_error_naming_the_worker_and_the_member(tiny_models: Path, tmp_path: Path):
    (tmp_path / "greedy_plugin.py").write_text(OOM_PLUGIN)
    pipeline = _pipeline(tmp_path, tiny_models / "models", "{kind: ray, workers: 1}", "mutation_only")
    text = pipeline.read_text().replace("population: population.yaml", "population: population.yaml\n"
                                        "plugins: [greedy_plugin]")
    pipeline.write_text(text.split("mutation:")[0] + "mutation: {rate: 1, operators: [{kind: greedy}]}\nseed: 4\n"
                        + "executor: {kind: ray, workers: 1}\n")
    result = evomerge("run", str(pipeline), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "worker 0 (" in message and "pid " in message and "ran out of memory while mutating" in message
    assert "into g1-c0 (greedy)" in message and "Fix:" in message


def test_a_worker_whose_driver_is_killed_ends_at_once(tmp_path: Path):
    """A SIGKILLed driver cannot stop its workers and Ray takes seconds to; a worker left mutating would write its
    mutant into the run after another driver resumed and tidied it. Workers watch their driver and end with it."""
    lock = tmp_path / ".lock"
    lock.write_text("evomerge pid 1")

    def watch(driver: subprocess.Popen) -> subprocess.Popen:  # what a worker's watch thread does, alone
        return subprocess.Popen([sys.executable, "-c", "import socket\n"
                                 "from evomerge.executor.ray_worker import _outlive_no_driver\n"
                                 f"_outlive_no_driver((socket.gethostname(), {driver.pid}), ({str(lock)!r}, "
                                 "'evomerge pid 1'))"])

    driver = subprocess.Popen(["sleep", "60"])
    worker = watch(driver)
    try:
        time.sleep(2)
        assert worker.poll() is None  # its driver is alive and holds the run
        driver.kill()
        driver.wait()
        assert worker.wait(timeout=10) == 1
        driver = subprocess.Popen(["sleep", "60"])  # a live driver, but another one now holds the run
        worker = watch(driver)
        time.sleep(2)
        assert worker.poll() is None
        lock.write_text("evomerge pid 2")
        assert worker.wait(timeout=10) == 1
    finally:
        driver.kill()
        worker.kill()


def test_layer_paths_on_two_workers_give_the_serial_run(local_ray, tiny_models: Path, tmp_path: Path):
    """Data-flow-space crossover on workers that cannot see the run directory: each worker holds the crossover's
    parents and builds its candidates' paths; the run is the serial one."""
    from conftest import POPULATION
    from test_layer_path import PATH_PIPELINE

    from evomerge.evolution import Run

    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    runs = {}
    for executor in ("{kind: serial}", "{kind: ray, workers: 2, files: object_store}"):
        pipeline = tmp_path / f"paths-{len(runs)}.yaml"
        pipeline.write_text(PATH_PIPELINE + f"executor: {executor}\n")
        run = Run.start(pipeline, run_dir=tmp_path / f"run-{len(runs)}")
        run.run()
        runs[executor] = _snapshot(run.store, tiny_models / "models")
    serial, ray_run = runs.values()
    assert serial == ray_run and any(m["operator"] == "layer_path" for m in serial["members"])
