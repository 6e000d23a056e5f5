"""Atomic writes of files outside the workspace store (reports, exports, pictures).

A file is written under a hidden temporary name in its own folder and renamed over
the target, so a reader (or a killed run) sees the old file or the new one, never half
of one. A failed write raises WriteError naming the path and the problem. The store
has its own mechanism for artifacts (store.py); this one is for single files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import PartsegError, WriteError, os_error_line


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (by any library that takes
    a file name); renamed over ``path`` when the block ends without an error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        named = exc.filename
        where = path if named is None or str(named) == str(tmp) else named
        raise WriteError(f"cannot write {os_error_line(exc, where)}") from exc
    finally:
        # on a read-only file system the unlink of the never-made file fails too (EROFS,
        # not "missing"), and would replace the WriteError naming ``path``
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that could not be written: a folder, or
    one in a folder that does not exist (the report would be lost after the run)."""
    if path.is_dir():
        raise PartsegError(f"{option} {path}: is a folder, not a file")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "no such folder"
        raise PartsegError(f"{option} {path}: {parent} {what}")


def check_output_folder(path: Path, option: str) -> None:
    """Refuse, before any work, an output folder that is a file (or lies below one)."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise PartsegError(f"{option} {path}: {folder} is a file, not a folder")
            return
