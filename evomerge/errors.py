"""The errors a user sees: what is wrong, where, and how to fix it."""
from __future__ import annotations


class EvomergeError(Exception):
    """A failure the user can act on; the CLI prints it as one paragraph and exits with status 2."""


class ConfigError(EvomergeError):
    """A pipeline or population file that cannot be run, named down to the key."""

    def __init__(self, *, file: str, key: str, problem: str, fix: str) -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}. Fix: {fix}")
