"""Range checks of command-line values, by option name, for every command at once.

typer checks that ``--views`` is an int, not that it is at least 1; a value that parses
but makes no sense (``--views 0``, ``--resolution -5``, ``--lr nan``, ``--epochs 0``,
``--parts arm,arm,leg``) used to fail deep inside a stage with a
traceback, or to be accepted silently (``--device`` is checked by its own callback in
cli.py). `check_every_command` wraps each command of the
app so that its parsed values are checked here, before any work, and a bad one is one
line naming the command, the option and the value. A new command's options are
covered by their names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import typer

from .errors import PartsegError

# name -> (lowest, highest, lowest included); None: no bound
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    **dict.fromkeys(("views", "resolution", "points", "epochs", "batch_size", "input_size",
                     "width", "levels", "k", "size", "support_size"), (1, None, True)),
    **dict.fromkeys(("min_size", "min_pixels", "inner_steps", "adapt_steps", "blocks"),
                    (0, None, True)),
    **dict.fromkeys(("lr", "radius", "inner_lr", "adapt_lr", "null_lr"), (0, None, False)),
    **dict.fromkeys(("regularization", "color_weight", "tau"), (0, None, True)),
    "max_pictures": (0, None, True),  # 0: scores and the list of shapes, no pictures
    "threshold": (0, None, True),  # above 1 is allowed: "label nothing"
    "whole_object_fraction": (0, 1, False),
    "restarts": (1, None, True),
    "target_miou": (0, 1, False),
    "calibration_folds": (2, None, True),
}
_FLAGS = {"json_out": "--json", "csv_out": "--csv"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def problem(name: str, value: Any) -> str | None:
    """Why option ``name`` cannot take ``value`` (None when it can)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, list):
        return next((p for p in (problem(name, v) for v in value) if p), None)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if name in _RANGES and isinstance(value, int | float):
        low, high, closed = _RANGES[name]
        if low is not None and (value < low or (value == low and not closed)):
            return (f"must be at least {low}, got {value}" if closed
                    else f"must be more than {low}, got {value}")
        if high is not None and value > high:
            return f"must be at most {high}, got {value}"
    if name == "view" and isinstance(value, int) and value < 0:
        return f"views are numbered from 0, got {value}"
    if name == "convention" and isinstance(value, str):
        from .evaluate import CONVENTIONS  # `report` would otherwise show no scores, exit 0

        if value not in CONVENTIONS:
            return f"choose one of {', '.join(CONVENTIONS)}, not {value!r}"
    if name == "parts" and isinstance(value, str):
        names = [p.strip() for p in value.split(",") if p.strip()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            return f"part names must differ; {', '.join(repeated)} given more than once"
    return None


def checked(command: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with its keyword values checked first (typer sees the same
    signature through ``functools.wraps``)."""
    @functools.wraps(function)
    def wrapper(**kwargs: Any) -> Any:
        for name, value in kwargs.items():
            found = problem(name, value)
            if found:
                raise PartsegError(f"partseg {command}: {_flag(name)}: {found}")
        return function(**kwargs)

    return wrapper


def check_every_command(app: typer.Typer) -> None:
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        info.callback = checked(name, info.callback)
