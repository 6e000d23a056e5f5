"""Store integrity: reads return the committed artifact whole or fail in one line; a
corrupt artifact is recomputed by the next run, which says so; creating one workspace
from many processes at once is race-free; write failures are one WriteError."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from partseg_cli.errors import CorruptError, StoreError, WriteError
from partseg_cli.pipeline import run_per_shape
from partseg_cli.store import Workspace, shape_scope

BACKENDS = ["zarr", "hdf5"]
SCOPE = shape_scope("s")


def _store(root: Path, backend: str, value: float = 1.0) -> Workspace:
    workspace = Workspace.open(root, create=True, backend=backend)
    labels = np.arange(3000, dtype=np.int64) % 7
    workspace.write(SCOPE, "vote", {"n": 3}, key="k",
                    extra_arrays={"labels": labels, "score": np.full(500, value, np.float32)})
    return workspace


def _damage_in_place(workspace: Workspace, backend: str) -> None:
    """Change stored values without touching the metadata (a bit flip, an overwrite)."""
    path = workspace._path(SCOPE, "vote")
    if backend == "zarr":
        import zarr

        array = zarr.open_array(store=str(path / "labels"), mode="r+")
        array[:10] = 5
        # the chunk file keeps its size: only the checksum can tell
        meta = json.loads((path / "zarr.json").read_text())
        chunk = "labels/c/0"
        meta["attributes"]["partseg"]["files"][chunk] = (path / chunk).stat().st_size
        (path / "zarr.json").write_text(json.dumps(meta))
    else:
        import h5py

        with h5py.File(path, "r+") as handle:
            handle["labels"][:10] = 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_changed_values_fail_the_read_and_are_recomputed(tmp_path: Path, backend: str
                                                         ) -> None:
    workspace = _store(tmp_path / "ws", backend)
    _damage_in_place(workspace, backend)
    with pytest.raises(CorruptError, match="labels does not match its checksum") as info:
        workspace.read(SCOPE, "vote")
    assert "\n" not in str(info.value) and "partseg vote" in str(info.value)
    # no longer trusted as cached: the next run recomputes it, and says so
    reopened = Workspace.open(tmp_path / "ws")
    with pytest.warns(UserWarning, match="was corrupt.*recomputing"):
        report = run_per_shape(reopened, "vote", ["s"], {}, [], lambda s: {"n": 4},
                               force=False)
    assert report.computed == ["s"]
    assert reopened.read(SCOPE, "vote").record_attrs["n"] == 4


def test_a_deleted_zarr_chunk_is_found_without_reading(tmp_path: Path) -> None:
    workspace = _store(tmp_path / "ws", "zarr")
    (workspace._path(SCOPE, "vote") / "labels" / "c" / "0").unlink()
    with pytest.raises(CorruptError, match="file labels/c/0 is missing"):
        workspace.key(SCOPE, "vote")  # a cache check alone notices
    with pytest.raises(CorruptError):
        workspace.read(SCOPE, "vote")
    assert workspace.cached_key.__name__  # the skip check treats it as absent:
    with pytest.warns(UserWarning, match="recomputing"):
        assert workspace.cached_key(SCOPE, "vote") is None


def test_corrupt_metadata_is_not_reported_as_missing(tmp_path: Path) -> None:
    workspace = _store(tmp_path / "ws", "zarr")
    (workspace._path(SCOPE, "vote") / "zarr.json").write_text("{not json")
    # the message names the damaged file, not only the artifact
    with pytest.raises(CorruptError, match=r"metadata \S+/vote/zarr\.json is unreadable"):
        workspace.info(SCOPE, "vote")
    with pytest.raises(CorruptError, match="corrupt"):
        workspace.read(SCOPE, "vote")


@pytest.mark.parametrize("backend", BACKENDS)
def test_replaced_while_read_reads_the_new_version(tmp_path: Path, backend: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = _store(tmp_path / "ws", backend, value=1.0)
    original = workspace._backend.read
    calls = []

    def torn(path: Path, names: list[str] | None = None):
        arrays, attrs = original(path, names)
        if not calls:  # the first read sees a mix of two versions
            calls.append(1)
            other = Workspace.open(tmp_path / "ws")
            other.write(SCOPE, "vote", {"n": 3}, key="k2", extra_arrays={
                "labels": np.zeros(3000, np.int64), "score": np.full(500, 2.0, np.float32)})
            arrays["score"] = np.full(500, 2.0, np.float32)
        return arrays, attrs

    monkeypatch.setattr(workspace._backend, "read", torn)
    artifact = workspace.read(SCOPE, "vote")
    assert artifact.key == "k2" and float(artifact.arrays["score"][0]) == 2.0
    assert not artifact.arrays["labels"].any()


def test_unreadable_artifact_fails_inspect(tmp_path: Path, capsys, monkeypatch) -> None:
    import sys

    from partseg_cli import cli

    workspace = _store(tmp_path / "ws", "zarr")
    (workspace._path(SCOPE, "vote") / "zarr.json").write_text("[]")
    monkeypatch.setattr(sys, "argv", ["partseg", "inspect", str(tmp_path / "ws")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert "CORRUPT" in out and "ago" not in out.split("CORRUPT")[1]
    assert "1 stored output(s) corrupt" in err


def _create_and_fill(root: str, index: int, barrier: multiprocessing.synchronize.Barrier,
                     results: multiprocessing.queues.Queue) -> None:
    try:
        barrier.wait(30)
        workspace = Workspace.open(root, create=True)
        for shape in ("a", "b"):
            workspace.write(shape_scope(shape), "shape", {"n": 1}, key="same",
                            extra_arrays={"x": np.arange(100)})
        workspace.read(shape_scope("a"), "shape")
        results.put(None)
    except Exception as exc:  # reported to the test, which names the failure
        results.put(f"{index}: {type(exc).__name__}: {exc}")


def test_eight_processes_create_one_workspace_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    failures = []
    for attempt in range(5):
        root = tmp_path / f"ws{attempt}"
        barrier, results = context.Barrier(8), context.Queue()
        workers = [context.Process(target=_create_and_fill, args=(str(root), i, barrier,
                                                                  results))
                   for i in range(8)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(30)
        failures += [o for o in outcomes if o is not None]
        assert Workspace.open(root).shape_ids() == ["a", "b"]
    assert failures == []


def test_leftovers_of_a_killed_creation_do_not_block(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / ".tmp").mkdir(parents=True)
    # a creator killed between writing the manifest's temporary file and linking it
    (root / ".tmp" / "m999999999.abc.host").write_text('{"format": 1')
    workspace = Workspace.open(root, create=True)
    assert workspace.backend_name == "zarr"
    assert sorted(p.name for p in root.iterdir()) == [".tmp", "partseg.json"]
    assert Workspace.open(root, create=True).backend_name == "zarr"  # idempotent
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        Workspace.open(tmp_path / "mine", create=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_disk_and_read_only_give_one_write_error(tmp_path: Path, backend: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = _store(tmp_path / "ws", backend)

    def full(path: Path, arrays: dict, attrs: dict) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(workspace._backend, "write", full)
    with pytest.raises(WriteError, match="no space left on the device"):
        workspace.write(SCOPE, "vote", {"n": 9}, key="k9")
    monkeypatch.undo()
    assert workspace.read(SCOPE, "vote").record_attrs["n"] == 3  # nothing stored harmed
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    os.chmod(tmp_path / "ws" / ".tmp", 0o555)
    try:
        with pytest.raises(WriteError, match="permission denied"):
            workspace.write(SCOPE, "vote", {"n": 9}, key="k9")
    finally:
        os.chmod(tmp_path / "ws" / ".tmp", 0o755)
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    with pytest.raises(WriteError, match="permission denied"):
        Workspace.open(readonly / "new", create=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_waits_out_another_writers_replacement(tmp_path: Path, backend: str) -> None:
    import threading

    workspace = _store(tmp_path / "ws", backend)
    final = workspace._path(SCOPE, "vote")
    aside = workspace.tmp_root / "trash-replacing"
    os.rename(final, aside)  # a concurrent commit between moving aside and renaming in
    timer = threading.Timer(0.2, os.rename, (aside, final))
    timer.start()
    try:
        assert workspace.read(SCOPE, "vote").record_attrs["n"] == 3
    finally:
        timer.join()
    workspace.delete(SCOPE, "vote")
    with pytest.raises(StoreError, match="no 'vote' output yet"):
        workspace.read(SCOPE, "vote")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_torn_by_a_replacement_in_progress_reads_the_new_version(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race eight concurrent writers hit: a reader has opened the artifact, another
    process moves it aside to rename its own copy in, and the reader's next file is gone.
    The reader must wait for the new copy, not call the artifact corrupt."""
    import shutil
    import threading

    workspace = _store(tmp_path / "ws", backend, value=1.0)
    newer = _store(tmp_path / "other", backend, value=2.0)  # the other writer's version
    final = workspace._path(SCOPE, "vote")
    staged = workspace.tmp_root / "w-staged"
    shutil.move(newer._path(SCOPE, "vote"), staged)
    original, timers = workspace._backend.read, []

    def torn(path: Path, names: list[str] | None = None):
        if not timers:
            os.rename(final, workspace.tmp_root / "trash-replacing")
            timers.append(threading.Timer(0.2, os.rename, (staged, final)))
            timers[0].start()
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return original(path, names)

    monkeypatch.setattr(workspace._backend, "read", torn)
    try:
        artifact = workspace.read(SCOPE, "vote")
    finally:
        timers[0].join()
    assert float(artifact.arrays["score"][0]) == 2.0
    assert not final.with_name(final.name + ".corrupt").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_missing_for_a_moment_is_looked_at_again(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replacement can fall between finding the artifact and reading its metadata (the
    folder moved aside, another renamed in before we look whether it exists): not corrupt."""
    workspace = _store(tmp_path / "ws", backend)
    original, calls = workspace._backend.read_attrs, []

    def racing(path: Path):
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return original(path)

    monkeypatch.setattr(workspace._backend, "read_attrs", racing)
    assert workspace.info(SCOPE, "vote")["key"] == "k"
    final = workspace._path(SCOPE, "vote")
    assert not final.with_name(final.name + ".corrupt").exists()
    monkeypatch.setattr(workspace._backend, "read_attrs", lambda path: {})
    with pytest.raises(CorruptError, match="no partseg metadata"):
        workspace.info(SCOPE, "vote")  # a lasting problem still is one


def _flip_a_byte(workspace: Workspace, backend: str) -> None:
    """Damage stored data in place, metadata untouched (zarr: a chunk keeps its size)."""
    if backend == "hdf5":
        _damage_in_place(workspace, backend)
        return
    chunk = workspace._path(SCOPE, "vote") / "labels" / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_verify_finds_damage_in_place(tmp_path: Path, backend: str, capsys,
                                             monkeypatch) -> None:
    """`status` stats metadata and misses a chunk changed in place; `status --verify`
    reads everything against its checksums: one line per damaged artifact, exit 1, and
    the artifact is counted corrupt from then on."""
    from test_cli import partseg

    from partseg_cli.status import collect

    root = tmp_path / "ws"
    workspace = _store(root, backend)
    workspace.write(shape_scope("t"), "vote", {"n": 1}, key="k",
                    extra_arrays={"labels": np.zeros(10, np.int64)})
    code, out, _ = partseg(capsys, monkeypatch, "status", root, "--verify")
    assert code == 0 and "verify: 2 stored output(s) read whole, 0 damaged" in out, out
    _flip_a_byte(workspace, backend)
    assert collect(root)["stages"]["vote"]["corrupt"] == 0  # what --verify is for
    code, out, err = partseg(capsys, monkeypatch, "status", root, "--verify")
    damaged = [line for line in out.splitlines() if line.startswith("damaged ")]
    assert code == 1 and len(damaged) == 1, (out, err)
    assert str(workspace._path(SCOPE, "vote")) in damaged[0] and "corrupt" in damaged[0]
    assert collect(root)["stages"]["vote"]["corrupt_shapes"] == ["s"]


def test_status_verify_rewrites_damaged_zarr_group_metadata(tmp_path: Path) -> None:
    import zarr

    from partseg_cli.status import collect

    root = tmp_path / "ws"
    workspace = _store(root, "zarr")
    group = workspace.data_root / "shapes" / "s" / "zarr.json"
    group.write_text("{ not json")
    (workspace.data_root / "shapes" / "zarr.json").unlink()
    assert collect(root)["stages"]["vote"]["done"] == 1  # unnoticed without --verify
    found = collect(root, check=True)["verify"]
    assert found["damaged"] == [] and len(found["groups"]) == 2
    assert any(str(group) in line and "rewritten" in line for line in found["groups"])
    assert "s" in zarr.open_group(str(workspace.data_root / "shapes"), mode="r")
    assert collect(root, check=True)["verify"]["groups"] == []
