"""The Ray executor: a pool of worker actors (a GPU each, or a share of the CPUs; on one machine or several), each
with its own resident evaluation model, that merge and score candidates, score members and run mutations.

    executor: {kind: ray, workers: 8, worker_resources: {num_gpus: 1}}             # a local Ray, 8 GPUs
    executor: {kind: ray, address: auto, workers: 16, worker_resources: {num_gpus: 1}}   # a `ray start` cluster

The driver keeps the store, CMA-ES and selection (mergekit-evolve's actor-pool strategy, with the driver as the
only writer). Work is handed to whichever worker is free, preferring one that already holds the crossover's
parents; the candidates of an iteration run at once, and the children of a generation are bred at once (the loop's
threads). A worker that dies has its task retried on a new worker; results are committed by the driver, once, under
ids that do not depend on arrival order (evomerge/ids.py), so 1 or N workers give the same run. Ray is an optional
extra (`pip install -e ".[ray]"`), imported only when this executor starts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

from pydantic import Field

from evomerge.config import KindSettings
from evomerge.errors import EvomergeError
from evomerge.executor.base import Candidate, CrossoverJob, Executor, Mutated, MutationJob
from evomerge.executor.ray_worker import Worker, WorkerError, pack, paths_in, unpack

RETRIES = 2  # a task whose worker dies is run again on a new one, this many times


def _ray():
    try:
        import ray
    except ImportError:
        raise EvomergeError("executor kind ray needs Ray, which is not installed. Fix: pip install -e \".[ray]\" "
                            "(or pip install ray), or use executor: {kind: serial}") from None
    return ray


class RayExecutor(Executor):
    @classmethod
    def check(cls, settings: "RayExecutor.Settings", preflight: Any) -> None:
        _ray()  # installed, or a config error before anything is created

    class Settings(KindSettings):
        address: Optional[str] = Field(None, description="null: start a local Ray; auto: join the cluster this "
                                                         "machine is part of; ray://host:port: a remote cluster")
        workers: int = Field(2, ge=1, description="worker actors, each with its own evaluation model")
        worker_resources: dict[str, float] = Field(default_factory=lambda: {"num_cpus": 1},
                                                   description="what each worker reserves: num_gpus, num_cpus, ...")
        resident_merges: int = Field(2, ge=1, description="crossovers whose parents a worker keeps in memory at once "
                                                           "(children bred at once share workers); 1 at 7B")
        files: Literal["auto", "shared", "object_store"] = Field(
            "auto", description="how member directories reach workers: shared paths where workers see the run "
                                "directory (one machine, a shared filesystem), else through Ray's object store")

    def __init__(self, settings: Settings, spec, *, run_dir: Optional[Path] = None, progress: Any = None,
                 **_: Any) -> None:
        super().__init__(settings, spec)
        self.capacity = settings.workers
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._progress = progress
        self._free = threading.Condition()
        self._actors: list[Any] = []            # index -> actor (None while being replaced)
        self._idle: list[int] = []
        self._holds: dict[int, list[tuple[int, int]]] = {}  # worker -> crossovers whose parents it holds (LRU)
        self._tasks: dict[int, dict] = {}       # worker -> what it is doing, for `evomerge status`
        self._where: dict[int, dict] = {}       # worker -> its host and process
        self._done: list[float] = []            # when each candidate finished
        self._shipped: dict[str, Any] = {}      # path -> object ref of its packed files (object-store mode)
        self._threads = ThreadPoolExecutor(max_workers=4 * settings.workers, thread_name_prefix="evomerge-ray")
        self._started_ray = False
        self._closed = False

    # ------------------------------------------------------------ the pool

    def start(self) -> None:
        """Start Ray (unless it runs already) and the workers, once."""
        with self._free:
            if self._actors:
                return
            ray = _ray()
            if not ray.is_initialized():
                ray.init(address=self.settings.address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR")
                self._started_ray = True
            for i in range(self.settings.workers):
                self._actors.append(self._new_actor(i))
                self._idle.append(i)
            self._publish()

    def _new_actor(self, index: int) -> Any:
        ray = _ray()
        resources = dict(self.settings.worker_resources)
        options = {"num_cpus": resources.pop("num_cpus", 0 if "num_gpus" in resources else 1),
                   "num_gpus": resources.pop("num_gpus", 0), "resources": resources or None, "max_restarts": 0}
        actor = ray.remote(Worker).options(**options).remote(self.spec.to_json(), index, self._marker(),
                                                             (socket.gethostname(), os.getpid()),
                                                             self.settings.resident_merges)
        self._where[index] = ray.get(actor.describe.remote())
        if not self._where[index]["shared"]:
            if self.settings.files == "shared":
                raise EvomergeError(f"worker {index} does not see the run directory {self.run_dir}. Fix: put runs "
                                    "on a filesystem every machine mounts at the same path, or set executor.files: "
                                    "auto")
            ray.get(actor.receive.remote(self._setup_files()))
        return actor

    def _marker(self) -> tuple[str, str]:
        """What a worker reads to know it sees the driver's files: the run's lock file and its content."""
        from evomerge.artifacts import LOCK

        lock = (self.run_dir or Path(".")) / LOCK
        content = lock.read_text(errors="replace").strip() if lock.is_file() else f"no lock {time.time()}"
        if self.settings.files == "object_store":
            content = f"ship everything {time.time()}"
        return str(lock.resolve()), content

    def _setup_files(self) -> dict:
        """What every worker needs before its first task, as object refs: the task include paths, the pipeline's
        plugin modules (NAME.py or NAME/ next to it) and the model the tokenizer comes from."""
        root = Path(self.spec.pipeline_file).parent
        plugins = [root / f"{name}.py" for name in self.spec.pipeline.plugins] + \
                  [root / name for name in self.spec.pipeline.plugins]
        wanted = [*map(Path, self.spec.include_paths), *plugins, Path(self.spec.tokenizer_source)]
        return {str(p): self._put(str(p)) for p in wanted if p.is_absolute() and p.exists()}

    def _put(self, path: str) -> Any:
        if path not in self._shipped:
            self._shipped[path] = _ray().put(pack(Path(path)))
        return self._shipped[path]

    def _acquire(self, prefer: Optional[tuple[int, int]], what: str) -> int:
        with self._free:
            while not self._idle:
                if self._closed:
                    raise EvomergeError("the Ray executor was closed")
                self._free.wait(timeout=1.0)
            holding = [i for i in self._idle if prefer in self._holds.get(i, [])]  # its parents are there
            pick = holding[0] if holding else min(self._idle, key=lambda i: len(self._holds.get(i, [])))
            self._idle.remove(pick)
            self._tasks[pick] = {"task": what, "since": time.time()}
        self._publish()
        return pick

    def _release(self, index: int) -> None:
        with self._free:
            self._tasks.pop(index, None)
            self._idle.append(index)
            self._free.notify()
        self._publish()

    def _call(self, what: str, send: Callable[[Any, int], Any], *, prefer: Optional[tuple[int, int]] = None,
              on_retry: Optional[Callable[[], None]] = None) -> Any:
        """Run `send(actor, index)` (which returns an object ref) on a free worker and wait for its result; a worker
        that dies is replaced and the task runs again, up to RETRIES times."""
        ray = _ray()
        self.start()
        for attempt in range(RETRIES + 1):
            index = self._acquire(prefer, what)
            try:
                handle = send(self._actors[index], index)
                return _get_streamed(ray, handle) if isinstance(handle, _Streamed) else ray.get(handle)
            except ray.exceptions.RayTaskError as e:
                raise self._worker_error(e) from None
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as e:
                self._holds.pop(index, None)
                self._actors[index] = self._new_actor(index)
                if attempt == RETRIES:
                    raise EvomergeError(f"worker {index} died {RETRIES + 1} times while {what} ({type(e).__name__}"
                                        f"). Fix: see the Ray logs (/tmp/ray/session_latest/logs) and give workers "
                                        "more memory") from None
                if on_retry is not None:
                    on_retry()
            finally:
                self._release(index)
        raise AssertionError("unreachable")

    def _ship(self, obj: Any, index: int, paths: Optional[set[str]] = None) -> Optional[dict]:
        """In object-store mode, the member directories `obj` names (or `paths`, found once for many tasks), as
        object refs (each packed once)."""
        if self._where[index]["shared"]:  # with files: shared, every worker is (or it was refused at start)
            return None
        return {p: self._put(p) for p in (paths_in(obj) if paths is None else paths)}

    # ------------------------------------------------------------ the interface

    def evaluate(self, job: CrossoverJob, candidates: list[Candidate]) -> Iterator[tuple[Candidate, Any]]:
        key = (job.generation, job.slot)
        paths = set() if self.settings.files == "shared" else paths_in(job)  # the same for every candidate

        def one(cand: Candidate) -> tuple[Candidate, Any]:
            def send(actor, index):
                held = self._holds.setdefault(index, [])
                if key in held:
                    held.remove(key)
                held.append(key)  # as the worker's own LRU: the oldest goes first
                del held[:-self.settings.resident_merges]
                return actor.evaluate.remote(job, cand, self._ship(job, index, paths))

            scored = self._call(f"candidate {cand.key} of generation {job.generation} child {job.slot}", send,
                                prefer=key)
            self._done.append(time.time())
            return cand, scored

        pending = {self._threads.submit(one, c) for c in candidates}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()

    def end_crossover(self, job: CrossoverJob) -> None:
        key = (job.generation, job.slot)
        for index, held in list(self._holds.items()):
            if key in held:
                held.remove(key)
                self._actors[index].end_crossover.remote(key)

    def score(self, model_dir: str, which: str, docs=None):
        return self._call(f"scoring {Path(model_dir).name} on {which}",
                          lambda actor, index: actor.score.remote(model_dir, which, self._ship(model_dir, index),
                                                                  docs))

    def mutate(self, job: MutationJob, checkpoint: Callable[..., None]) -> Mutated:
        from evomerge.registry import MUTATION_OPERATORS

        operator = MUTATION_OPERATORS.get(job.kind)
        share = min(self.capacity, operator.units(job)) if operator.Session is not None else 1
        if share > 1:
            return self._spread(job, operator, share, checkpoint)
        return self._mutate_on_one(job, checkpoint)

    def _mutate_on_one(self, job: MutationJob, checkpoint: Callable[..., None]) -> Mutated:
        from ray.util.queue import Queue

        committed: list[dict] = []
        current = {"job": job}

        def apply(step: Optional[int], data: dict, event: dict) -> None:
            checkpoint(step, data, **event)
            if step is not None:  # not a progress event
                committed.append(data)

        def send(actor, index):
            queue = Queue(maxsize=0)
            return _Streamed(actor.mutate.remote(current["job"], queue, self._ship(current["job"], index)), queue,
                             apply)

        def retry() -> None:  # the steps committed so far are replayed by the next worker
            current["job"] = dataclasses.replace(job, steps_done=[*job.steps_done, *committed])

        mutated, back = self._call(f"mutating {job.parent_name} into {job.name}", send, on_retry=retry)
        for path, files in (back or {}).items():
            unpack(files, Path(path))
        return mutated

    def _spread(self, job: MutationJob, operator: Any, k: int, checkpoint: Callable[..., None]) -> Mutated:
        """A mutation whose steps are shared by k workers (noise ES: each evaluates every k-th antithetic pair and
        walks them all, so all k hold the same weights); the driver commits each step and sends it to all of them."""
        ray = _ray()
        self.start()
        committed: list[dict] = []
        for attempt in range(RETRIES + 1):
            indices = self._acquire_many(k, f"the {job.kind} mutation {job.name}, shared by {k} workers")
            actors = [self._actors[i] for i in indices]
            current = dataclasses.replace(job, steps_done=[*job.steps_done, *committed])
            try:
                done = ray.get([a.spread_start.remote(current, self._ship(current, i)) for a, i in zip(actors, indices)])[0]
                for step in range(done, operator.steps(job)):
                    parts = ray.get([a.spread_results.remote(job.name, step, set(range(w, operator.units(job), k)))
                                     for w, a in enumerate(actors)])
                    data, event = operator.record(job, step, {u: r for part in parts for u, r in part.items()})
                    checkpoint(step, data, **event)
                    committed.append(data)
                    ray.get([a.spread_apply.remote(job.name, data) for a in actors])
                mutated, back = ray.get(actors[0].spread_finish.remote(job.name))
                for a in actors[1:]:
                    a.spread_drop.remote(job.name)
                for path, files in (back or {}).items():
                    unpack(files, Path(path))
                return mutated
            except ray.exceptions.RayTaskError as e:
                raise self._worker_error(e) from None
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as e:
                self._replace_dead(indices)
                if attempt == RETRIES:
                    raise EvomergeError(f"a worker died {RETRIES + 1} times during the {job.kind} mutation "
                                        f"{job.name} ({type(e).__name__}). Fix: see the Ray logs "
                                        "(/tmp/ray/session_latest/logs) and give workers more memory") from None
            finally:
                for i in indices:
                    self._release(i)
        raise AssertionError("unreachable")

    def _acquire_many(self, k: int, what: str) -> list[int]:
        """k workers at once (all or none, so that two shared mutations never hold part of the pool each)."""
        with self._free:
            while len(self._idle) < k:
                if self._closed:
                    raise EvomergeError("the Ray executor was closed")
                self._free.wait(timeout=1.0)
            picked = sorted(self._idle, key=lambda i: len(self._holds.get(i, [])))[:k]
            for i in picked:
                self._idle.remove(i)
                self._tasks[i] = {"task": what, "since": time.time()}
        self._publish()
        return picked

    def _replace_dead(self, indices: list[int]) -> None:
        ray = _ray()
        for i in indices:
            try:
                ray.get(self._actors[i].describe.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - any failure to answer: the worker is gone
                self._holds.pop(i, None)
                self._actors[i] = self._new_actor(i)

    def _worker_error(self, e: Any) -> Exception:
        if isinstance(e.cause, WorkerError):  # the worker's own message, without Ray's traceback
            return EvomergeError(f"{e.cause}. Fix: give each worker more memory (worker_resources), use fewer "
                                 "workers per GPU, or a smaller dtype")
        return e.as_instanceof_cause()

    def close(self) -> None:
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._actors:
            ray = _ray()
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
            if self._started_ray:
                ray.shutdown()
        if self.run_dir is not None:
            (self.run_dir / WORKERS).unlink(missing_ok=True)

    # ------------------------------------------------------------ what `evomerge status` shows

    def _publish(self) -> None:
        if self.run_dir is None:
            return
        now = time.time()
        with self._free:  # one writer at a time
            state = {"time": now, "workers": {str(i): {**where, **self._tasks.get(i, {"task": "idle"})}
                                              for i, where in sorted(self._where.items())},
                     "candidates_last_10_min": sum(t > now - 600 for t in self._done)}
            tmp = self.run_dir / (".tmp-" + WORKERS)
            tmp.write_text(json.dumps(state))
            tmp.replace(self.run_dir / WORKERS)


WORKERS = "workers.json"  # in the run directory while a Ray run goes on


class _Streamed:
    """A mutation under way on a worker: `ray.get` on it applies each step the worker sends, in this thread, as it
    comes, and returns the worker's result."""

    def __init__(self, ref: Any, queue: Any, apply: Callable[[int, dict, dict], None]) -> None:
        self.ref, self.queue, self.apply = ref, queue, apply


def _get_streamed(ray, streamed: _Streamed) -> Any:
    while True:
        ready, _ = ray.wait([streamed.ref], timeout=0.2)
        while not streamed.queue.empty():
            streamed.apply(*streamed.queue.get())
        if ready:
            while not streamed.queue.empty():
                streamed.apply(*streamed.queue.get())
            return ray.get(streamed.ref)
