"""What one Ray worker does (evomerge/executor/ray.py makes it an actor): the same Workbench the serial executor
uses, in its own process, with its own resident evaluation model and the resident parents of the crossover it
serves. It never touches the store: it returns results, and streams a mutation's steps back through a queue.

Files travel one of two ways. Where the worker sees the driver's run directory (one machine, or a shared
filesystem), jobs use the members' paths as they are. Elsewhere the driver ships directories through the object
store: the worker unpacks each under a private root, mirroring its absolute path, reads jobs with their paths moved
under that root, and sends a mutant's new directories back the same way. This module imports nothing of Ray at
import time.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel

from evomerge.executor.base import CrossoverJob, Mutated, MutationJob


class WorkerError(RuntimeError):
    """A worker's task failed in a way the user must hear about: it names the worker and the task."""


class Worker:
    def __init__(self, spec: dict, index: int, marker: tuple[str, str], driver: tuple[str, int],
                 resident_merges: int = 1) -> None:
        self.index = index
        self.where = f"worker {index} ({socket.gethostname()}, pid {os.getpid()})"
        lock, content = marker
        self.shared = Path(lock).is_file() and Path(lock).read_text(errors="replace").strip() == content
        threading.Thread(target=_outlive_no_driver, args=(driver, marker if self.shared else None), daemon=True,
                         name="evomerge-driver-watch").start()
        self.root: Optional[Path] = None if self.shared else Path(tempfile.mkdtemp(prefix=f"evomerge-w{index}-"))
        self._have: set[str] = set()
        self._sessions: dict[str, tuple] = {}  # shared mutations under way: (job, job here, session)
        self._spec, self._resident_merges = spec, resident_merges
        self._bench = None
        self.task = "idle"

    def receive(self, files: dict[str, Any]) -> None:
        """Object-store mode: what every task needs (plugins, task folders, the tokenizer's model), once."""
        import ray

        for path, ref in files.items():
            self._unpack(path, ray.get(ref))

    @property
    def bench(self):
        """The workbench, made on first use (after `receive`, which it may need)."""
        if self._bench is None:
            from evomerge.workbench import BenchSpec, Workbench

            self._bench = Workbench(BenchSpec.from_json(self._move(self._spec)),
                                    resident_merges=self._resident_merges)
        return self._bench

    def describe(self) -> dict:
        return {"where": self.where, "host": socket.gethostname(), "pid": os.getpid(), "shared": self.shared}

    # ------------------------------------------------------------ tasks

    def evaluate(self, job: CrossoverJob, candidate, ship: Optional[dict] = None):
        return self._run(f"scoring candidate {candidate.key} of generation {job.generation} child {job.slot}", ship,
                         lambda: self.bench.evaluate(self._move(job), candidate))

    def end_crossover(self, key: tuple[int, int]) -> None:
        self.bench.end_crossover(key)

    def score(self, model_dir: str, which: str, ship: Optional[dict] = None, docs: Optional[dict] = None):
        return self._run(f"scoring {Path(model_dir).name} on the {which} split", ship,
                         lambda: self.bench.score(self._move(model_dir), which, docs=docs))

    def mutate(self, job: MutationJob, queue: Any, ship: Optional[dict] = None) -> tuple[Mutated, Optional[dict]]:
        """The mutant's recipe, and in object-store mode its new directories (packed) for the driver to write."""
        here = self._move(job)

        def checkpoint(step: int, data: dict, **event: Any) -> None:
            queue.put((step, data, event))

        mutated = self._run(f"mutating {job.parent_name} into {job.name} ({job.kind})", ship,
                            lambda: self.bench.mutate(here, checkpoint))
        return mutated, self._send_back(job, here)

    # ------------------------------------------------------------ a mutation whose steps workers share

    def spread_start(self, job: MutationJob, ship: Optional[dict] = None) -> int:
        """Load the parent, replay the committed steps; returns how many there are."""
        from evomerge.registry import MUTATION_OPERATORS

        def start() -> int:
            here = self._move(job)
            session = MUTATION_OPERATORS.get(job.kind).Session(self.bench, self.bench.load(here.parent), here)
            self._sessions[job.name] = (job, here, session)
            return session.done

        return self._run(f"joining the {job.kind} mutation {job.name}", ship, start)

    def spread_results(self, name: str, step: int, mine: set[int]) -> dict:
        return self._run(f"{len(mine)} units of step {step} of {name}", None,
                         lambda: self._sessions[name][2].rewards(step, mine))

    def spread_apply(self, name: str, data: dict) -> None:
        self._sessions[name][2].apply(data)

    def spread_finish(self, name: str) -> tuple[Mutated, Optional[dict]]:
        job, here, session = self._sessions.pop(name)
        mutated = self._run(f"writing {name}", None, lambda: self.bench.keep(here, session.finish()))
        return mutated, self._send_back(job, here)

    def spread_drop(self, name: str) -> None:
        self._sessions.pop(name, None)

    def _send_back(self, job: MutationJob, here: MutationJob) -> Optional[dict]:
        """In object-store mode, a mutant's new directories, packed for the driver (keyed by the driver's paths)."""
        if self.shared:
            return None
        return {str(getattr(job, f)): pack(getattr(here, f)) for f in ("out_dir", "files_dir")
                if getattr(here, f).is_dir()}

    def _run(self, task: str, ship: Optional[dict], work: Callable[[], Any]) -> Any:
        self.task = task
        try:
            for path, ref in (ship or {}).items():
                if path not in self._have:
                    import ray

                    self._unpack(path, ray.get(ref))
            return work()
        except MemoryError as e:
            raise WorkerError(f"{self.where} ran out of memory while {task}: {e}") from None
        except RuntimeError as e:
            if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
                raise WorkerError(f"{self.where} ran out of memory while {task}: "
                                  f"{str(e).splitlines()[0]}") from None
            raise
        finally:
            self.task = "idle"

    # ------------------------------------------------------------ files in object-store mode

    def _unpack(self, path: str, files: dict[str, bytes]) -> None:
        if self.root is None:  # a worker that sees the driver's files has them already
            return
        unpack(files, Path(str(self.root) + path))
        self._have.add(path)

    def _move(self, obj: Any) -> Any:
        """`obj` with its absolute paths moved under this worker's root (nothing moves in shared mode)."""
        return obj if self.shared else relocate(obj, lambda p: str(self.root) + p)


def _outlive_no_driver(driver: tuple[str, int], marker: Optional[tuple[str, str]]) -> None:
    """End this worker as soon as its driver is gone (a driver killed with -9 cannot stop it, and Ray takes a while):
    left running, it would write a member directory into a run that another driver has resumed and tidied. Gone
    means its process no longer exists (same machine) or the run's lock names another holder (shared files)."""
    host, pid = driver
    while True:
        time.sleep(0.2)
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
        if marker is not None:
            try:
                content = Path(marker[0]).read_text(errors="replace").strip()
            except OSError:
                content = ""
            if content and content != marker[1]:  # empty: being rewritten, or unreadable for now
                os._exit(1)


def pack(path: Path) -> dict[str, bytes]:
    """A directory's files by path relative to it; a file alone as {".": its bytes}."""
    path = Path(path)
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def unpack(files: dict[str, bytes], directory: Path) -> None:
    if "." in files:  # a file
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.write_bytes(files["."])
        return
    tmp = directory.with_name(".tmp-" + directory.name)
    shutil.rmtree(tmp, ignore_errors=True)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(directory)


def relocate(obj: Any, move: Callable[[str], str]) -> Any:
    """A copy of `obj` (dataclasses, pydantic models, containers) with `move` applied to every absolute path."""
    if isinstance(obj, Path):
        return Path(move(str(obj))) if obj.is_absolute() else obj
    if isinstance(obj, str):
        return move(obj) if obj.startswith("/") else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: relocate(getattr(obj, f.name), move)
                                           for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, BaseModel):  # a mergekit configuration goes through its own YAML, as mergekit-yaml reads it
        import yaml

        data = yaml.safe_load(obj.to_yaml()) if hasattr(obj, "to_yaml") else obj.model_dump(mode="json")
        return type(obj).model_validate(relocate(data, move))
    if isinstance(obj, dict):
        return {k: relocate(v, move) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(relocate(v, move) for v in obj)
    return obj


def paths_in(obj: Any) -> set[str]:
    """What a worker without the driver's files needs for `obj`: every model directory (config.json) and every file
    its absolute paths name, and the data files its settings name relative to a job's `data_root`."""
    found: set[str] = set()

    def visit(p: str) -> str:
        if Path(p).is_file() or (Path(p) / "config.json").is_file():
            found.add(p)
        return p

    relocate(obj, visit)
    root, settings = getattr(obj, "data_root", None), getattr(obj, "settings", None)
    if root is not None and isinstance(settings, BaseModel):
        found |= {str(Path(root) / d) for d in _values(settings.model_dump(), "data") if (Path(root) / d).is_file()}
    return found


def _values(data: Any, key: str) -> list[str]:
    """Every string under `key` at any depth of a settings dump (LoRA's data, an ES reward's data)."""
    if isinstance(data, dict):
        return [v for k, v in data.items() if k == key and isinstance(v, str)] + \
            [x for v in data.values() for x in _values(v, key)]
    if isinstance(data, (list, tuple)):
        return [x for v in data for x in _values(v, key)]
    return []
