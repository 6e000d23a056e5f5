"""The workspace store: round trips, content keys, atomicity, resumption, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from partseg_cli.errors import StoreError, WriteError
from partseg_cli.pipeline import run_per_shape
from partseg_cli.records import Boxes, Mesh, Normalization, Shape
from partseg_cli.store import Workspace, shape_scope

BACKENDS = ["zarr", "hdf5"]


def make_shape(shape_id: str = "s", n: int = 50, seed: int = 0) -> Shape:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)).astype(np.float32)
    return Shape(
        shape_id=shape_id, points=points, normals=np.zeros_like(points),
        colors=np.full_like(points, 0.5), normalization=Normalization(np.ones(3), 2.5),
        part_names=["seat", "leg"], category="Chair",
        mesh=Mesh(points[:3].copy(), np.array([[0, 1, 2]], np.int32)),
        point_labels=rng.integers(-1, 2, n).astype(np.int32),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_keeps_every_field(tmp_path: Path, backend: str) -> None:
    workspace = Workspace.open(tmp_path / "ws", create=True, backend=backend)
    shape = make_shape()
    workspace.write(shape_scope("s"), "shape", shape, key="k1", params={"n": 1})
    back = workspace.read_record(shape_scope("s"), "shape", Shape)
    np.testing.assert_array_equal(back.points, shape.points)
    np.testing.assert_array_equal(back.point_labels, shape.point_labels)
    np.testing.assert_array_equal(back.mesh.faces, shape.mesh.faces)
    assert back.mesh.vertex_colors is None and back.point_instances is None
    assert back.part_names == ["seat", "leg"] and back.category == "Chair"
    assert back.normalization.scale == 2.5
    assert workspace.key(shape_scope("s"), "shape") == "k1"
    assert workspace.info(shape_scope("s"), "shape")["params"] == {"n": 1}
    partial = workspace.read(shape_scope("s"), "shape", names=["points", "mesh/faces"])
    assert sorted(partial.arrays) == ["mesh/faces", "points"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_arrays_round_trip(tmp_path: Path, backend: str) -> None:
    workspace = Workspace.open(tmp_path / "ws", create=True, backend=backend)
    boxes = Boxes(view=np.zeros(0, np.int32), xyxy=np.zeros((0, 4), np.float32),
                  part_probs=np.zeros((0, 3), np.float32), confidence=np.zeros(0, np.float32),
                  features=np.zeros((0, 8), np.float32), part_names=["a", "b", "c"])
    workspace.write(shape_scope("s"), "detect", boxes, key="k")
    back = workspace.read_record(shape_scope("s"), "detect", Boxes)
    assert len(back) == 0 and back.part_probs.shape == (0, 3) and back.labels.shape == (0,)


def test_reopen_keeps_backend_and_rejects_other(tmp_path: Path) -> None:
    Workspace.open(tmp_path / "ws", create=True, backend="hdf5")
    assert Workspace.open(tmp_path / "ws").backend_name == "hdf5"
    with pytest.raises(StoreError, match="hdf5 backend"):
        Workspace.open(tmp_path / "ws", backend="zarr")


def test_incompatible_or_missing_workspace_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.open(root, create=True)
    (root / "partseg.json").write_text(json.dumps({"format": 999, "backend": "zarr"}))
    with pytest.raises(StoreError, match="incompatible"):
        Workspace.open(root)
    with pytest.raises(StoreError, match="no such workspace"):
        Workspace.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        Workspace.open(tmp_path / "other", create=True)


def test_stage_skips_when_key_matches_and_invalidates_downstream(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws", create=True)
    calls: list[str] = []

    def compute_a(shape_id: str) -> dict:
        calls.append("a")
        return {"value": 1}

    def compute_b(shape_id: str) -> dict:
        calls.append("b")
        return {"value": 2}

    ids = ["s1", "s2"]
    first = run_per_shape(workspace, "render", ids, {"res": 8}, [], compute_a)
    assert first.computed == ids and calls == ["a", "a"]
    run_per_shape(workspace, "detect", ids, {}, ["render"], compute_b)
    assert calls.count("b") == 2

    again = run_per_shape(workspace, "render", ids, {"res": 8}, [], compute_a)
    assert again.skipped == ids and calls.count("a") == 2
    assert run_per_shape(workspace, "detect", ids, {}, ["render"], compute_b).skipped == ids

    # A changed parameter recomputes that stage, and the stage after it notices.
    run_per_shape(workspace, "render", ["s1"], {"res": 16}, [], compute_a)
    downstream = run_per_shape(workspace, "detect", ids, {}, ["render"], compute_b)
    assert downstream.computed == ["s1"] and downstream.skipped == ["s2"]
    forced = run_per_shape(workspace, "detect", ids, {}, ["render"], compute_b, force=True)
    assert forced.computed == ids


def test_missing_input_fails_that_shape_only(tmp_path: Path) -> None:
    workspace = Workspace.open(tmp_path / "ws", create=True)
    run_per_shape(workspace, "render", ["s1"], {}, [], lambda s: {"v": 1})
    report = run_per_shape(workspace, "detect", ["s1", "s2"], {}, ["render"],
                           lambda s: {"v": 2})
    assert report.computed == ["s1"]
    assert "no 'render' output yet" in report.failed["s2"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_write_leaves_previous_output_intact(tmp_path: Path, backend: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace.open(tmp_path / "ws", create=True, backend=backend)
    workspace.write(shape_scope("s"), "shape", make_shape(seed=1), key="old")

    def broken(path: Path, arrays: dict, attrs: dict) -> None:
        path.mkdir() if backend == "zarr" else path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(workspace._backend, "write", broken)
    with pytest.raises(WriteError, match="disk full"):
        workspace.write(shape_scope("s"), "shape", make_shape(seed=2), key="new")
    assert workspace.key(shape_scope("s"), "shape") == "old"
    back = workspace.read_record(shape_scope("s"), "shape", Shape)
    np.testing.assert_array_equal(back.points, make_shape(seed=1).points)
    assert list((tmp_path / "ws" / ".tmp").iterdir()) == []


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from partseg_cli.store import Workspace, shape_scope
    workspace = Workspace.open(sys.argv[1])
    original = workspace._backend.write
    def slow(path, arrays, attrs):
        original(path, arrays, attrs)
        print("written", flush=True)
        time.sleep(60)  # killed here: complete data in .tmp, never committed
    workspace._backend.write = slow
    workspace.write(shape_scope("s"), "shape", {"value": 2}, key="new",
                    extra_arrays={"x": np.ones(1000)})
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_run_is_invisible_and_cleaned_up(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "ws"
    workspace = Workspace.open(root, create=True, backend=backend)
    workspace.write(shape_scope("s"), "shape", {"value": 1}, key="old")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(root)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list((root / ".tmp").iterdir())) == 1  # the dead writer's leftovers
    reopened = Workspace.open(root)  # cleans up after dead writers on this host
    assert reopened.key(shape_scope("s"), "shape") == "old"
    assert reopened.read(shape_scope("s"), "shape").record_attrs["value"] == 1
    assert list((root / ".tmp").iterdir()) == []


def _write_many(root: str, prefix: str, count: int) -> None:
    workspace = Workspace.open(root)
    for i in range(count):
        shape = make_shape(f"{prefix}{i}", n=2000, seed=i)
        workspace.write(shape_scope(shape.shape_id), "shape", shape, key=f"k{i}")
        # Both processes also rewrite one shared artifact: the last commit wins whole.
        workspace.write(shape_scope("shared"), "shape", make_shape("shared", seed=i), key="x")


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_writing_at_once(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "ws"
    Workspace.open(root, create=True, backend=backend)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(str(root), p, 8)) for p in "ab"]
    start = time.time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert time.time() - start < 120
    workspace = Workspace.open(root)
    expected = sorted([f"a{i}" for i in range(8)] + [f"b{i}" for i in range(8)] + ["shared"])
    assert workspace.shape_ids() == expected
    for shape_id in expected[:-1]:
        shape = workspace.read_record(shape_scope(shape_id), "shape", Shape)
        index = int(shape_id[1:])
        np.testing.assert_array_equal(shape.points, make_shape(shape_id, 2000, index).points)
    shared = workspace.read_record(shape_scope("shared"), "shape", Shape)
    assert shared.points.shape == (50, 3)


def test_compaction_keeps_the_line_an_appender_waited_to_write(tmp_path: Path) -> None:
    """An appender that opened the log while a compaction held it must not write into
    the file the compaction is replacing (its line would vanish with that file)."""
    import threading

    from partseg_cli.store import compact_stage_log, log_commit, read_stage_log

    log = tmp_path / ".stages.jsonl"
    for i in range(3):
        log_commit(log, {"stage": f"old{i}", "sig": [i], "key": "k"})
    started = threading.Event()

    def slow_keep(entry: dict) -> bool:
        started.set()
        time.sleep(0.05)  # the compaction is under way: the append below must wait
        return entry["stage"] != "old0"

    appender = threading.Thread(target=lambda: (started.wait(5), log_commit(
        log, {"stage": "new", "sig": [9], "key": "k"})))
    appender.start()
    compact_stage_log(log, slow_keep, tmp_path / "tmp")
    appender.join(10)
    assert set(read_stage_log(log)) == {("old1", (1,)), ("old2", (2,)), ("new", (9,))}
    assert not (tmp_path / "tmp").exists()


def _commit_rounds(root: str, writer: str, rounds: int, limit: int) -> None:
    from partseg_cli import store

    store.STAGE_LOG_LIMIT = limit
    workspace = Workspace.open(root)
    for r in range(rounds):
        for stage in range(6):
            workspace.write(shape_scope("s"), f"{writer}{stage}", {"round": r}, key=f"k{r}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_writers_commit_log_is_compacted_and_keeps_current_lines(tmp_path: Path,
                                                                    backend: str) -> None:
    """The per-shape commit log stays bounded while two processes commit to one shape,
    and every artifact stored at the end still has its line (status reads no metadata)."""
    from partseg_cli.status import _artifact_infos
    from partseg_cli.store import STAGE_LOG, read_stage_log, stat_signature

    root = tmp_path / "ws"
    Workspace.open(root, create=True, backend=backend)
    limit = 3000  # ~12 lines: many compactions in 2 x 20 x 6 commits
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_commit_rounds, args=(str(root), w, 20, limit))
               for w in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    workspace = Workspace.open(root)
    folder = workspace.data_root / "shapes" / "s"
    log = folder / STAGE_LOG
    assert log.stat().st_size <= limit + 1000  # compacted (120 lines would be ~25 KB)
    lines = read_stage_log(log)
    suffix = ".h5" if backend == "hdf5" else ""
    for stage in [f"{w}{i}" for w in "ab" for i in range(6)]:
        meta = folder / (stage + suffix) if suffix else folder / stage / "zarr.json"
        line = lines.get((stage, tuple(stat_signature(meta))))
        assert line is not None and line["key"] == "k19", stage
    assert len(_artifact_infos(workspace, str(folder))) == 12
    assert not list(workspace.tmp_root.iterdir())


def _finished_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_killed_writes_leftovers_are_removed_at_open_and_reported(tmp_path: Path,
                                                                  capsys, monkeypatch
                                                                  ) -> None:
    """A write killed after moving an artifact aside leaves .tmp/trash-*, a model save
    killed between its renames leaves the model in .<name>.old-*: the next open removes
    the first and puts the model back, once their process is gone; a live process's and
    another host's are left alone; `status` lists both."""
    import socket

    from test_cli import partseg

    from partseg_cli.saved_model import MODEL_JSON

    root = tmp_path / "ws"
    workspace = Workspace.open(root, create=True)
    workspace.write(shape_scope("s"), "shape", make_shape(), key="k")
    host, dead, live = socket.gethostname(), _finished_pid(), os.getpid()
    script = textwrap.dedent(f"""
        import os
        from partseg_cli.store import Workspace, shape_scope
        rename = os.rename
        def killed_after_move_aside(source, target):
            rename(source, target)
            if "trash-" in str(target):
                os._exit(9)
        os.rename = killed_after_move_aside
        Workspace.open({str(root)!r}).write(shape_scope("s"), "vote", {{"n": 1}}, key="a")
        Workspace.open({str(root)!r}).write(shape_scope("s"), "vote", {{"n": 2}}, key="b")
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    killed = [p.name for p in (root / ".tmp").iterdir() if p.name.startswith("trash-")]
    assert len(killed) == 1
    kept = [f"trash-x{live}.0123abcd.{host}", f"trash-x{dead}.0123abcd.elsewhere"]
    for name in kept:
        (root / ".tmp" / name).mkdir()
    students = root / "students"
    (students / f".m.old-{dead}-0123abcd-{host}").mkdir(parents=True)
    (students / f".m.old-{dead}-0123abcd-{host}" / MODEL_JSON).write_text("{}")
    code, out, err = partseg(capsys, monkeypatch, "status", root, "--json")
    assert code == 0, err
    leftovers = json.loads(out)["leftovers"]
    assert sorted(p.name for p in (root / ".tmp").iterdir()) == sorted(kept)
    assert (students / "m" / MODEL_JSON).is_file() and [p.name for p in
                                                         students.iterdir()] == ["m"]
    assert any(killed[0] in line and "removed" in line for line in leftovers["removed"])
    assert any("restored" in line for line in leftovers["removed"])
    assert len(leftovers["kept"]) == 1 and "host elsewhere" in leftovers["kept"][0]
    code, out, _ = partseg(capsys, monkeypatch, "status", root)
    assert "leftover kept:" in out and "elsewhere" in out
