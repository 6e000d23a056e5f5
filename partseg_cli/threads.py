"""Torch CPU thread use, where it decides speed or repeatability."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0: unchanged), restoring the setting after."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_threaded(function: F) -> F:
    """Run ``function`` on one torch CPU thread. With several, the order in which the
    threads' partial sums of a reduction are added varies from run to run: three equal-
    seed `distill --mode tta` runs at the default thread count gave probabilities
    differing by up to 4e-4 and flipped face labels (issue 13.5); on one thread they are
    bit-identical. The student's tensors are small, so little speed is lost."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads(1):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
