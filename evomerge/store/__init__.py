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

__all__ = ["NotInTransaction", "Store", "StoreConflict", "create_store", "open_store"]


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
