"""Exceptions that the CLI turns into one line and a non-zero exit."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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


class CorruptError(StoreError):
    """A stored artifact that fails its checksums or cannot be decoded: it is marked so
    that the next run of its stage recomputes it instead of trusting it."""


class WriteError(Exception):
    """The workspace or an output file cannot be written (read-only folder, full disk,
    no permission): every shape would fail alike, so the run stops at once. Deliberately
    not a PartsegError, which per-shape loops catch to go on with the next shape; the
    CLI prints it as one line with exit code 2 all the same."""

    exit_code = 2


class ModelError(PartsegError):
    """A model that cannot be found or loaded; the message says how to supply it."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): library
    errors can run to paragraphs, and ours must stay on one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def state_dict_mismatch(expected: Mapping[str, Any], state: Mapping[str, Any],
                        show: int = 3) -> str | None:
    """None when ``state`` has exactly the names and tensor shapes of ``expected``, else
    one line naming the differences (at most ``show`` of each kind; a big model's
    mismatch would otherwise list hundreds of weights)."""
    def some(names: list[str]) -> str:
        more = f" and {len(names) - show} more" if len(names) > show else ""
        return ", ".join(names[:show]) + more

    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    resized = [(name, tuple(getattr(state[name], "shape", ())), tuple(expected[name].shape))
               for name in sorted(expected.keys() & state.keys())]
    resized = [(name, got, want) for name, got, want in resized if got != want]
    problems = []
    if missing:
        problems.append(f"missing {some(missing)}")
    if unexpected:
        problems.append(f"unexpected {some(unexpected)}")
    problems += [f"{name} has shape {got}, expected {want}" for name, got, want in resized[:show]]
    if len(resized) > show:
        problems.append(f"{len(resized) - show} more differently shaped")
    return "; ".join(problems) or None


_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
}


def os_error_line(err: OSError, path: str | Path | None = None) -> str:
    """One line naming the path and the problem of a failed file operation."""
    where = path if path is not None else err.filename
    problem = _OS_PROBLEMS.get(err.errno or -1) or err.strerror or first_line(err)
    return f"{where}: {problem}" if where is not None else problem
