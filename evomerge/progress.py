"""Live progress on the terminal (rich): one bar for the run, one for the step under way, each with an ETA."""
from __future__ import annotations

import threading
from typing import Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Progress bars and log lines; quiet=True prints nothing (tests, library use)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"),
                                  TimeRemainingColumn(), console=self.console, transient=False)
        self._steps: dict[int, TaskID] = {}  # per thread: children bred at once each have a bar

    def __enter__(self) -> "Reporter":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def phase(self, description: str, total: int, completed: int = 0) -> TaskID:
        return self._progress.add_task(description, total=total, completed=completed)

    def step(self, description: str, total: int, completed: int = 0) -> TaskID:
        """The step under way (a crossover, a fine-tune): replaces this thread's previous step bar."""
        previous = self._steps.get(threading.get_ident())
        if previous is not None:
            self._progress.remove_task(previous)
        task = self._steps[threading.get_ident()] = self._progress.add_task(description, total=total,
                                                                            completed=completed)
        return task

    def advance(self, task: TaskID, n: int = 1, *, description: Optional[str] = None) -> None:
        if description is None:
            self._progress.advance(task, n)
        else:
            self._progress.update(task, advance=n, description=description)

    def log(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
