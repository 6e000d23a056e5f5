"""Few-shot and cross-category adaptation methods behind `partseg adapt --method ...`.

Every method is a module here (``partstad``, ``bipart``) with a
``run(workspace, shape_ids, config: AdaptConfig, force) -> list[StageReport]`` that
either trains on ``config.train_ids`` (labelled shapes of the workspace) and saves the
network as ``config.model_name``, or applies a saved network (``config.apply``), and
stores a `records.Labelling` per shape under the method's name, so that
``partseg evaluate --method <method>`` scores it. Options shared by all methods live in
`AdaptConfig`; a method's own options arrive in ``AdaptConfig.options`` and the method
validates them.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import PartsegError

if TYPE_CHECKING:
    from ..pipeline import StageReport
    from ..store import Workspace

METHODS = ("partstad", "bipart")
T = TypeVar("T")


@dataclass
class AdaptConfig:
    """Options of `partseg adapt` common to every method (see its --help)."""

    train_ids: list[str] | None = None  # glob patterns of the labelled training shapes
    model_name: str | None = None  # where to save the trained network (name or path)
    apply: str | None = None  # a saved network to apply (name in the workspace or path)
    epochs: int | None = None  # None: the method's paper value
    lr: float | None = None  # None: the method's paper value
    batch_size: int | None = None  # None: the method's paper value
    seed: int = 0
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # the method's own options


def method_config(cls: type[T], common: AdaptConfig, method: str) -> T:
    """A method's config dataclass ``cls`` from `partseg adapt`'s options: its own
    defaults (the paper's values), then seed and device, the common epochs / lr / batch
    size when given, then the method's own options; an option ``cls`` lacks is refused."""
    config = cls(seed=common.seed, device=common.device)
    known = {f.name for f in dataclasses.fields(cls)}
    common_values = {"epochs": common.epochs, "lr": common.lr,
                     "batch_size": common.batch_size}
    for name, value in {**common_values, **common.options}.items():
        if name not in known:
            raise PartsegError(f"--method {method}: unknown option {name!r}")
        if value is not None:
            setattr(config, name, value)
    return config


def method_module(method: str) -> Any:
    """The module implementing ``method``; one line naming the choices otherwise."""
    if method not in METHODS:
        raise PartsegError(f"--method: choose one of {', '.join(METHODS)}, not {method!r}")
    try:
        return importlib.import_module(f"{__name__}.{method}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{method}":
            raise
        raise PartsegError(f"--method {method}: not available in this partseg") from None


def run(method: str, workspace: Workspace, shape_ids: list[str], config: AdaptConfig,
        force: bool = False) -> list[StageReport]:
    """Train or apply ``method`` over ``shape_ids``; the stage reports to print."""
    return method_module(method).run(workspace, shape_ids, config, force)
