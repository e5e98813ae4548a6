"""Progress that shows in a terminal and in a log.

On a terminal (rich): live bars, one for the run and one for each step under way, with an ETA. Anywhere, a
terminal or a pipe (`| tee run.log`, nohup, CI): a line when a step starts and one when it ends, with its
duration, and, while a step runs, a line at least every `EVOMERGE_PROGRESS_SECONDS` (30 by default) with its count
and ETA (on a terminal the live bar says as much). Lines go to standard output, where the leaderboards go, and
are never wrapped: a command in a hint stays one piece to copy.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
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


def progress_seconds() -> float:
    return float(os.environ.get("EVOMERGE_PROGRESS_SECONDS", "30"))


def duration(seconds: float) -> str:
    """A span of time as people say it: 41 s, 3 min 05 s, 1 h 02 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass
class _Step:
    description: str
    total: int
    completed: int
    started: float = field(default_factory=time.monotonic)
    said: float = field(default_factory=time.monotonic)  # when its last line was printed
    start_count: int = 0                                  # done before this process took it up (a resume)

    def eta(self) -> Optional[float]:
        done = self.completed - self.start_count
        if done <= 0 or self.total <= self.completed:
            return None
        return (time.monotonic() - self.started) / done * (self.total - self.completed)


class Reporter:
    """Progress bars and lines; quiet=True prints nothing (tests, library use)."""

    def __init__(self, *, quiet: bool = False, file=None) -> None:
        self.console = Console(file=file or sys.stdout, quiet=quiet, soft_wrap=True)
        self.live = self.console.is_terminal and not quiet
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"),
                                  TimeRemainingColumn(), console=self.console, transient=False,
                                  disable=not self.live)
        self._steps: dict[int, TaskID] = {}  # per thread: children bred at once each have a bar
        self._state: dict[TaskID, _Step] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()

    def __enter__(self) -> "Reporter":
        self._progress.start()
        if not self.live and not self.console.quiet:  # a log: a line every so often even if a step takes long
            self._stop.clear()
            threading.Thread(target=self._ticker, name="evomerge-progress", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._progress.stop()

    def _ticker(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                for state in list(self._state.values()):
                    self._say(state, time.monotonic())

    def phase(self, description: str, total: int, completed: int = 0) -> TaskID:
        """A long phase (the whole run): a bar, and lines while it goes; no start line (the run says it)."""
        return self._add(description, total, completed, announce=False)

    def step(self, description: str, total: int, completed: int = 0) -> TaskID:
        """The step under way (a crossover, a fine-tune): replaces this thread's previous step bar; says it starts."""
        previous = self._steps.get(threading.get_ident())
        if previous is not None:
            self._progress.remove_task(previous)
            self._state.pop(previous, None)
        task = self._steps[threading.get_ident()] = self._add(description, total, completed, announce=True)
        return task

    def _add(self, description: str, total: int, completed: int, *, announce: bool) -> TaskID:
        task = self._progress.add_task(description, total=total, completed=completed)
        self._state[task] = _Step(description, total, completed, start_count=completed)
        if announce:
            resumed = f", {completed} done before" if completed else ""
            self.log(f"{_clock()} start  {description} ({total} {'step' if total == 1 else 'steps'}{resumed})")
        return task

    def advance(self, task: TaskID, n: int = 1, *, description: Optional[str] = None) -> None:
        if description is None:
            self._progress.advance(task, n)
        else:
            self._progress.update(task, advance=n, description=description)
        state = self._state.get(task)
        if state is None:
            return
        with self._lock:
            state.completed += n
            if description is not None:
                state.description = description
            now = time.monotonic()
            if state.completed >= state.total:
                self.log(f"{_clock()} done   {state.description} in {duration(now - state.started)}")
                self._state.pop(task, None)
            else:
                self._say(state, now)

    def _say(self, state: _Step, now: float) -> None:
        """A progress line for a log, if the last one is old enough (a terminal has the live bar)."""
        if self.live or now - state.said < progress_seconds():
            return
        state.said = now
        eta = state.eta()
        self.log(f"{_clock()}        {state.description}: {state.completed}/{state.total}, "
                 f"{duration(now - state.started)} so far" + ("" if eta is None else f", about {duration(eta)} left"))

    def log(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False, soft_wrap=True)


def _clock() -> str:
    return time.strftime("%H:%M:%S")
