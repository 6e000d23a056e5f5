"""What a run needs when nobody watches it (a SLURM job, a nohup, a CI log).

Progress: every loop over shapes or epochs goes through `progress`. On a terminal it
draws a tqdm bar; when stderr is not a terminal it writes one line per finished item
instead (stage, count, item, outcome, rate, time left), so a batch log shows what
happens. ``--quiet`` silences both; ``--log-file`` also appends every line, with a
timestamp, to a file. ``PARTSEG_NO_PROGRESS=1`` (the test suite, CI) silences both on
stderr.

Stopping: SIGTERM (SLURM's time limit, preemption, scancel), SIGINT (Ctrl-C) and
SIGUSR2 (the warning SLURM sends ahead of a time limit for submitit,
``--signal=USR2@90``) do not kill the process in the middle of a shape. Inside a loop
the signal is noted and the loop stops at the next item boundary by raising `Stopped`,
which the CLI turns into one line naming what is done and exit code 143 / 130 / 140
(in a submitit task, executors.py then hands a SIGUSR2 stop on to submitit, which
checkpoints and requeues the task). Outside a loop (model loading, say), or on a second
signal (not the same one again within 2 s, as a batch shell that forwards SIGTERM to
its whole job also delivers), `Stopped` is raised at once; every write is atomic
(store.py), so nothing half-written is left either way.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGUSR2: 140}


class Stopped(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """A stop signal arrived; ``done`` names what was finished. A BaseException so
    that stages' ``except Exception`` never swallows it."""

    def __init__(self, signum: int, done: str):
        self.signum = signum
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 128 + signum)
        self.done = done
        super().__init__(f"stopped by {signal.Signals(signum).name}: {done}")


class _State:
    quiet = False
    log_file: TextIO | None = None
    pending: int | None = None  # the stop signal received, not yet acted on
    pending_at = 0.0
    depth = 0  # loops running now: a signal inside one waits for the item boundary
    finished: list[str] = []  # "detect 8/8" for each loop that ran to its end
    current: str = ""  # "detect 3/8" of the loop running now
    previous: dict[int, Any] = {}  # handlers before configure()
    last_said = ""


def configure(quiet: bool = False, log_file: Path | None = None) -> None:
    """Set up logging for this process and install the stop-signal handlers."""
    _State.quiet = quiet
    if _State.log_file is not None:
        _State.log_file.close()
    _State.log_file = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _State.log_file = open(log_file, "a", buffering=1)  # noqa: SIM115 - process-long
    _State.pending, _State.depth, _State.finished, _State.current = None, 0, [], ""
    for signum in EXIT_CODES:
        previous = signal.signal(signum, _on_signal)
        _State.previous.setdefault(signum, previous)


def release() -> None:
    """Put back the signal handlers configure() replaced and close the --log-file (the
    CLI calls this on exit; tests run many commands in one process)."""
    for signum, handler in _State.previous.items():
        signal.signal(signum, handler)
    _State.previous = {}
    _State.pending, _State.depth, _State.finished, _State.current = None, 0, [], ""
    if _State.log_file is not None:
        _State.log_file.close()
        _State.log_file = None


def log_path() -> str | None:
    """The --log-file of this process, if any."""
    return _State.log_file.name if _State.log_file is not None else None


def _lines_on_stderr() -> bool:
    return not (_State.quiet or sys.stderr.isatty() or os.environ.get("PARTSEG_NO_PROGRESS"))


def bar_enabled() -> bool:
    return not _State.quiet and sys.stderr.isatty() and not os.environ.get("PARTSEG_NO_PROGRESS")


def log(text: str, always: bool = False) -> None:
    """A batch-log line: on stderr when it is not a terminal (or ``always``, for stage
    summaries, unless --quiet) and in the --log-file."""
    if (always and not _State.quiet) or (not always and _lines_on_stderr()):
        print(text, file=sys.stderr, flush=True)
    if _State.log_file is not None:
        _State.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def said(text: str) -> None:
    """Note a line printed elsewhere (an error, a failed shape): into the --log-file, and
    kept as what a job reports last (`last_said`)."""
    _State.last_said = text
    if _State.log_file is not None:
        _State.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def last_said() -> str:
    return _State.last_said


def _on_signal(signum: int, frame: Any) -> None:
    now = time.monotonic()
    if _State.pending == signum and now - _State.pending_at < 2.0:
        return  # one stop delivered twice: to the process group and forwarded by a shell
    if _State.depth == 0 or _State.pending is not None:
        raise Stopped(signum, done_text())
    _State.pending, _State.pending_at = signum, now
    log(f"{signal.Signals(signum).name} received: stopping after the current item "
        f"({_State.current})", always=True)


def done_text() -> str:
    parts = list(_State.finished) + ([_State.current] if _State.current else [])
    return (", ".join(parts) + " done") if parts else "nothing done yet"


def check_stop() -> None:
    """Raise `Stopped` if a stop signal is pending (call at an item boundary)."""
    if _State.pending is not None:
        raise Stopped(_State.pending, done_text())


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"


class Progress:
    """Iterate ``items`` with a bar or batch lines, stopping at an item boundary on a
    stop signal. ``note(outcome)`` labels the current item (computed, cached, failed)
    in its log line and the counts."""

    def __init__(self, items: Iterable[Any], desc: str, total: int | None, unit: str):
        self.items, self.desc, self.unit = items, desc, unit
        self.total = total if total is not None else (
            len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
        self.counts: dict[str, int] = {}
        self._outcome = ""

    def note(self, outcome: str) -> None:
        self._outcome = outcome

    def __iter__(self) -> Iterator[Any]:
        from tqdm import tqdm

        bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False,
                   dynamic_ncols=True, disable=not bar_enabled())
        of = f"/{self.total}" if self.total is not None else ""
        start = time.perf_counter()
        done = 0
        _State.depth += 1
        try:
            for item in self.items:
                check_stop()
                _State.current = f"{self.desc} {done}{of}"
                self._outcome = ""
                began = time.perf_counter()
                yield item
                done += 1
                bar.update(1)
                _State.current = f"{self.desc} {done}{of}"
                self._line(item, done, of, start, began)
            _State.finished.append(f"{self.desc} {done}{of}")
            _State.current = ""
            check_stop()
        finally:
            _State.depth -= 1
            bar.close()

    def _line(self, item: Any, done: int, of: str, start: float, began: float) -> None:
        if self._outcome:
            self.counts[self._outcome] = self.counts.get(self._outcome, 0) + 1
        if not (_lines_on_stderr() or _State.log_file is not None):
            return
        elapsed = time.perf_counter() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = ""
        if self.total is not None and rate > 0 and done < self.total:
            left = f", {_duration((self.total - done) / rate)} left"
        shape_id = item if isinstance(item, str) else getattr(item, "shape_id", None)
        name = f" {shape_id}" if shape_id else ""
        outcome = f" {self._outcome}" if self._outcome else ""
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items())
        log(f"{self.desc} {done}{of}{name}{outcome} in {time.perf_counter() - began:.2f} s"
            f" ({counts + '; ' if counts else ''}{rate:.2f} {self.unit}/s{left})")
