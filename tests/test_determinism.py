"""Equal seeds give equal bytes at any thread count: the student runs on one torch
thread, whose reductions add in a fixed order (issue 13.5); the torch stages' stored
outputs are compared run against run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_cli import partseg
from test_partstad import toy_workspace

from partseg_cli import distill
from partseg_cli.store import Workspace, shape_scope
from partseg_cli.threads import single_threaded


class Seen(Exception):
    pass


@pytest.mark.parametrize("entry", ["distill_tta", "train_student", "apply_student"])
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


def stored_bytes(work: Path, stage: str) -> dict[str, bytes]:
    """Every array of ``stage`` over the shapes, and the files of the saved models."""
    workspace = Workspace.open(work)
    found = {}
    for sid in workspace.shape_ids():
        artifact = workspace.read(shape_scope(sid), stage)
        for name, value in artifact.arrays.items():
            found[f"{sid}/{name}"] = np.ascontiguousarray(value).tobytes()
    for path in sorted(work.glob("*/weights.safetensors")):
        found[str(path.relative_to(work))] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def toy_work(tmp_path_factory) -> Path:
    return toy_workspace(tmp_path_factory.mktemp("determinism"))


@pytest.mark.parametrize("stage,args", [
    ("distill", ["distill", "--epochs", "3"]),
    ("partstad", ["adapt", "--method", "partstad", "--train-ids", "*chair[01]",
                  "--model-name", "m", "--epochs", "2"]),
    ("bipart", ["adapt", "--method", "bipart", "--train-ids", "*chair[01]", "--model-name",
                "m", "--epochs", "1", "--support-size", "2", "--inner-steps", "1",
                "--adapt-steps", "2"]),
])
def test_torch_stages_store_equal_bytes_twice_on_two_threads(capsys, monkeypatch,
                                                             toy_work: Path, tmp_path: Path,
                                                             stage: str, args: list[str]):
    """The outputs themselves, not only the thread setting: two runs of a torch stage
    with torch set to 2 threads store identical arrays and model weights."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outputs = []
        for run in ("a", "b"):
            work = tmp_path / run
            shutil.copytree(toy_work, work)
            code, _, err = partseg(capsys, monkeypatch, args[0], work, *args[1:])
            assert code == 0, err
            assert torch.get_num_threads() == 2  # the stage restored the setting
            outputs.append(stored_bytes(work, stage))
    finally:
        torch.set_num_threads(before)
    assert outputs[0].keys() == outputs[1].keys() and len(outputs[0]) > 2
    assert [k for k in outputs[0] if outputs[0][k] != outputs[1][k]] == []


def test_pre_alignment_trains_and_applies_on_one_thread(monkeypatch):
    # The stage calls train_student / apply_student directly (not distill_pre): both must
    # be repeatable, which needs one thread, and leave the caller's thread count alone.
    import torch

    from partseg_cli.distill import DistillConfig, PointCloud, apply_student, train_student
    from partseg_cli.models.student import Head
    from partseg_cli.records import KnowledgeUnits

    seen = []
    forward = Head.forward
    monkeypatch.setattr(Head, "forward",
                        lambda self, f: (seen.append(torch.get_num_threads()), forward(self, f))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rng = np.random.default_rng(0)
        pts = rng.normal(size=(600, 3)).astype(np.float32)
        shape = PointCloud(pts, np.zeros_like(pts), np.full_like(pts, 0.5))
        masks = np.stack([pts[:, 0] < 0, pts[:, 0] >= 0])
        units = KnowledgeUnits(np.array([0, 1], np.int32), masks, np.ones(2, np.float32),
                               np.zeros(2, np.int32), np.arange(2, dtype=np.int32))
        trained = train_student([(shape, units)], 2,
                                DistillConfig(mode="pre", device="cpu", epochs=2, n_sample=256,
                                              backward=False))
        apply_student(trained.student, shape)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
