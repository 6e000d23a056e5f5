"""Exceptions that the CLI turns into one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class PartsegError(Exception):
    """A problem the user can fix; its message is printed as is, without a traceback."""

    exit_code = 2


class InputError(PartsegError):
    """A bad input file or folder: the message names the path and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class StoreError(PartsegError):
    """A workspace that is missing, incompatible or lacks a stage's input."""


class ModelError(PartsegError):
    """A model that cannot be found or loaded; the message says how to supply it."""
