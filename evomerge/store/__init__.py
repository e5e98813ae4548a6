"""A run's records behind one contract (base.py), with a SQLite backend (runs on disk) and an in-memory one.

    store = create_store("sqlite", run_dir, config=...)   # a new run
    store = open_store(run_dir)                           # an existing run, whichever backend holds it
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from evomerge.errors import EvomergeError
from evomerge.registry import STORES
from evomerge.store.base import NotInTransaction, Store, StoreConflict

__all__ = ["NotInTransaction", "Store", "StoreConflict", "check_new_run_dir", "create_store", "open_store"]


def create_store(kind: str, location: Optional[Path], *, config: dict) -> Store:
    return STORES.get(kind).create(location, config=config)


def open_store(location: Path) -> Store:
    """The store of an existing run directory."""
    for kind in STORES.names():
        backend = STORES.get(kind)
        if backend.exists(Path(location)):
            return backend.open(Path(location))
    raise EvomergeError(f"{location} is not an evomerge run directory (no run database in it). "
                        "Fix: give the directory that `evomerge run` printed, e.g. runs/demo-20261123-120000")


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a directory a new run cannot use, with the advice that fits: a run there already is resumed, anything
    else needs another directory."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise EvomergeError(f"{run_dir} is a file. Fix: give --run-dir a new or empty directory")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if any(STORES.get(kind).exists(run_dir) for kind in STORES.names()):
        raise EvomergeError(f"{run_dir} holds a run already. Fix: `evomerge resume {run_dir}` to continue it, or "
                            "give --run-dir a new or empty directory")
    raise EvomergeError(f"{run_dir} is not empty and is not an evomerge run directory. Fix: give --run-dir a new or "
                        "empty directory")
