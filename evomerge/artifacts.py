"""A run directory's files: member weights (`members/`), LoRA adapters (`adapters/`), the lock that keeps a second
process out, rebuilding a member from its recipe, and tidying what a killed process half-wrote.

Weights inside the run directory are stored relative to it, so a run directory can be moved and still resumes.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import threading
from pathlib import Path
from typing import Callable, Optional

from evomerge.config import Loaded
from evomerge.errors import EvomergeError
from evomerge.executor.base import ParentSource
from evomerge.models import resolve_model, save_model_dir
from evomerge.records import MemberRecord, MemberState
from evomerge.registry import CROSSOVERS, MUTATION_OPERATORS
from evomerge.store.base import Store

LOCK = ".evomerge.lock"


class Artifacts:
    def __init__(self, run_dir: Path, store: Store, loaded: Loaded, bench: Callable[[], "Workbench"],  # noqa: F821
                 log: Callable[[str], None] = lambda message: None) -> None:
        self.dir = Path(run_dir).resolve()
        self._log = log
        self.store = store
        self.loaded = loaded
        self.cfg = loaded.pipeline
        self._bench = bench                      # the workbench that rebuilds members (made when first needed)
        self.members_dir = self.dir / "members"
        self.adapters_dir = self.dir / "adapters"
        self.rebuilt: list[Path] = []            # directories rebuilt for members outside the population
        self._lock: Optional[int] = None
        self._rebuilding = threading.RLock()     # children bred at once may need the same rebuild
        self._depths: dict[int, int] = {}        # member id -> decoder layers

    # ------------------------------------------------------------ paths

    def ref(self, path: Path) -> str:
        """How the store names a path: relative to the run directory when inside it."""
        path = Path(path).resolve()
        return str(path.relative_to(self.dir)) if path.is_relative_to(self.dir) else str(path)

    def where(self, record: MemberRecord) -> Optional[Path]:
        if record.weights is None:
            return None
        path = Path(record.weights)
        return path if path.is_absolute() else self.dir / path

    def materialise(self, record: MemberRecord) -> str:
        """The member's model directory: where its weights are, or rebuilt from its recipe (a retired member, or
        one whose directory was deleted)."""
        with self._rebuilding:
            return self._materialise(record)

    def _materialise(self, record: MemberRecord) -> str:
        record = self.store.member(record.id)
        path = self.where(record)
        if path is not None and path.exists():
            return str(path)
        if record.operator == "seed":
            return self._seed_path(record)
        out = self.members_dir / record.name
        if not out.exists():
            if record.state is MemberState.ALIVE:
                self._log(f"warning: {record.name}'s weights ({path}) are missing; rebuilding them from its recipe")
            out.parent.mkdir(parents=True, exist_ok=True)
            self.build(record, out)
            if record.state is not MemberState.ALIVE:
                self.rebuilt.append(out)
        if record.state is MemberState.ALIVE and record.weights is None:
            with self.store.transaction():
                self.store.set_weights(record.id, self.ref(out))
        return str(out)

    def _seed_path(self, record: MemberRecord) -> str:
        import json

        path = resolve_model(json.loads(record.recipe)["source"])
        if not (Path(path) / "config.json").is_file():
            raise EvomergeError(f"seed {record.name}: its model directory {path} is gone. Fix: put the model back "
                                "there (seeds are read in place, never copied)")
        return path

    def source(self, record: MemberRecord) -> ParentSource:
        """Where a mutation finds `record`: an intermediate merge is built in memory, anything else is a directory."""
        if record.state is MemberState.INTERMEDIATE and record.operator in CROSSOVERS and record.weights is None:
            return ParentSource(merge=self.merge_config(record), merge_seed=record.params["seed"])
        return ParentSource(model_dir=self.materialise(record))

    def paths(self, ids: tuple[int, ...] | list[int]) -> dict[str, str]:
        """Member name -> model directory, for the members `ids`."""
        return {self.store.member(m).name: self.materialise(self.store.member(m)) for m in ids}

    def base_path(self) -> str:
        return self.materialise(self.store.member(self.loaded.population.base_model))

    def num_layers(self) -> int:
        """The base's decoder layers."""
        return self.depth(self.loaded.population.base_model)

    def depth(self, member: int | str) -> int:
        """A member's decoder layers, by id or name (a layer path's child may have any number)."""
        record = self.store.member(member)
        if record.id not in self._depths:
            from transformers import AutoConfig

            self._depths[record.id] = AutoConfig.from_pretrained(self.materialise(record)).num_hidden_layers
        return self._depths[record.id]

    def genome(self, parents: tuple[int, ...] | list[int], method: str):
        """The genome of a crossover of `parents` by the pipeline's crossover operator `method`."""
        from evomerge.crossover.genome import Genome

        return Genome(self.cfg.crossover.operator(method), tuple(self.store.member(p).name for p in parents),
                      self.num_layers(), depths=tuple(self.depth(p) for p in parents))

    def merge_config(self, record: MemberRecord):
        """A merged member's mergekit configuration, with its parents at their current paths (rebuilt if needed):
        valid after the run directory moved or a parent's weights were deleted."""
        return self.genome(record.parents, record.operator).merge_config(
            record.params["merge"], paths=self.paths(record.parents), base_path=self.base_path(), dtype=self.cfg.dtype)

    # ------------------------------------------------------------ rebuilding

    def build(self, record: MemberRecord, out: Path) -> None:
        """Write a merged or mutated member's model directory to `out` from its recipe."""
        if record.operator in CROSSOVERS:
            from evomerge.crossover.merge import merge_to_disk
            from evomerge.devices import resolve

            merge_to_disk(self.merge_config(record), out, seed=record.params["seed"], device=resolve(self.cfg.device))
        elif record.operator in MUTATION_OPERATORS:
            bench = self._bench()
            parent = self.store.member(record.parents[0])
            model = MUTATION_OPERATORS.get(record.operator).rebuild(bench, bench.load(self.source(parent)), record,
                                                                    self.dir)
            save_model_dir(model, bench.tokenizer, out)
        else:
            raise EvomergeError(
                f"member {record.name} was made by {record.operator!r}, which is not registered in this process "
                f"(merge methods: {', '.join(CROSSOVERS.names())}; mutation operators: "
                f"{', '.join(MUTATION_OPERATORS.names())}). Fix: list the module that registers it under the "
                "pipeline's `plugins`")

    def discard_rebuilt(self) -> None:
        """Delete the directories rebuilt for members outside the population (an export's ancestors)."""
        for path in self.rebuilt:
            shutil.rmtree(path, ignore_errors=True)
        self.rebuilt = []

    # ------------------------------------------------------------ checking

    def check(self) -> tuple[list[str], list[str]]:
        """(problems, notes) about the files the store's records need: what cannot be rebuilt is a problem."""
        import json

        problems, notes = [], []
        for m in self.store.members():
            path = self.where(m)
            if m.operator == "seed":
                source = resolve_model(json.loads(m.recipe)["source"]) if m.recipe else None
                if source is None or not (Path(source) / "config.json").is_file():
                    problems.append(f"seed {m.name}: its model directory {source} is gone")
            elif m.state is MemberState.ALIVE and (path is None or not (path / "config.json").is_file()):
                notes.append(f"{m.name}: weights missing; they are rebuilt from its recipe when needed")
            if m.operator in MUTATION_OPERATORS:
                problems += [f"{m.name}: {f} is gone, so it cannot be rebuilt" for f in
                             MUTATION_OPERATORS.get(m.operator).recipe_files(m, self.dir) if not f.exists()]
        if self.members_dir.is_dir():
            notes += [f"{p.name}: half-written, removed by the next resume" for p in self.members_dir.iterdir()
                      if p.name.startswith(".tmp-")]
        holder = self.holder()
        if holder:
            notes.append(f"{holder} is running this directory: what was checked is this moment's state")
        return problems, notes

    def holder(self) -> Optional[str]:
        """Who holds the run's lock now (None if nobody)."""
        path = self.dir / LOCK
        if not path.is_file():
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            return os.read(fd, 64).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)

    # ------------------------------------------------------------ the lock and tidying

    def lock(self) -> None:
        """Keep every other evomerge process out of this run directory until this process ends (kill -9 too)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise EvomergeError(f"{self.dir} is being run by {holder}. Fix: wait for it to finish, or stop it "
                                "(Ctrl-C or kill), then `evomerge resume` this directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"evomerge pid {os.getpid()}".encode())
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def tidy(self) -> None:
        """Remove half-written directories and the weights of members outside the population (needs the lock)."""
        if self._lock is None:
            raise RuntimeError("tidy() without the run's lock could delete another process's work")
        if not self.members_dir.is_dir():
            return
        keep = {p.resolve() for m in self.store.members(state=MemberState.ALIVE) if (p := self.where(m))}
        for child in self.members_dir.iterdir():
            if child.name.startswith(".tmp-") or child.resolve() not in keep:
                shutil.rmtree(child, ignore_errors=True)
