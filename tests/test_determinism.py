"""Equal seeds give equal bytes at any thread count: the student runs on one torch
thread, whose reductions add in a fixed order (issue 13.5)."""

from __future__ import annotations

import pytest

from partseg_cli import distill
from partseg_cli.threads import single_threaded


class Seen(Exception):
    pass


@pytest.mark.parametrize("entry", ["distill_tta", "distill_pre"])
def test_the_student_runs_on_one_thread_and_restores_the_setting(monkeypatch,
                                                                 entry: str) -> None:
    torch = pytest.importorskip("torch")
    assert hasattr(getattr(distill, entry), "__wrapped__")  # the stage's entry is wrapped
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []

    def body(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Seen

    monkeypatch.setattr(distill, entry, single_threaded(body))
    try:
        with pytest.raises(Seen):
            getattr(distill, entry)()
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
