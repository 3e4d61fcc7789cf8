"""Errors raised on bad input or configuration: one clear message that names the file and the problem."""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad input data. The message starts with the offending path (when there is one)."""

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):  # the same error out of a worker process (multiprocessing pickles it)
        return type(self), (self.path, self.problem)


class ConfigError(ValueError):
    """Invalid configuration (unknown key, wrong type, inconsistent values)."""
