"""Runs nobody watches: batch log lines, --quiet, --log-file, stopping on SIGTERM/SIGINT
at a shape boundary, and `partseg status`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from partseg_cli import journal
from partseg_cli.records import Labelling
from partseg_cli.status import collect, render_text
from partseg_cli.store import (
    STAGE_LOG,
    Workspace,
    read_stage_log,
    shape_scope,
    stat_signature,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "toy_chairs"
TINY = ["--teacher", "simulated", "--parts", "back,seat,leg,arm", "--views", "2",
        "--resolution", "64", "--points", "500"]

# Runs the CLI; after the first shape of stage $STOP_STAGE is stored it sends itself
# the signal $STOP_SIGNAL, as SLURM's scancel or a time limit would.
STOP_AFTER_FIRST = """
import os, signal, sys
from partseg_cli import store
original = store.Workspace.write
def write(self, scope, stage, *args, **kwargs):
    original(self, scope, stage, *args, **kwargs)
    if stage == os.environ["STOP_STAGE"]:
        os.kill(os.getpid(), getattr(signal, os.environ["STOP_SIGNAL"]))
store.Workspace.write = write
from partseg_cli.cli import main
sys.argv = ["partseg", *sys.argv[1:]]
main()
"""


def partseg(*args: object, stop: tuple[str, str] | None = None, quiet_env: bool = False
            ) -> subprocess.CompletedProcess:
    """The CLI in a child process whose stderr is a pipe (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if k != "PARTSEG_NO_PROGRESS"}
    if quiet_env:
        env["PARTSEG_NO_PROGRESS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    code = ["-m", "partseg_cli.cli"]
    if stop:
        env["STOP_STAGE"], env["STOP_SIGNAL"] = stop
        code = ["-c", STOP_AFTER_FIRST]
    return subprocess.run([sys.executable, *code, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def two_chairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "Chair"
    folder.mkdir(parents=True)
    for name in ("chair0", "chair1"):
        for suffix in (".off", "_labels.txt"):
            shutil.copy(EXAMPLES / "Chair" / f"{name}{suffix}", folder)
    return folder.parent


def labels(work: Path, stage: str = "vote") -> dict[str, np.ndarray]:
    workspace = Workspace.open(work)
    return {sid: workspace.read_record(shape_scope(sid), stage, Labelling).point_labels
            for sid in workspace.shape_ids()}


@pytest.fixture(scope="module")
def reference(two_chairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that nothing interrupted (tests copy it before changing it)."""
    work = tmp_path_factory.mktemp("reference") / "ws"
    done = partseg("run", two_chairs, "--work", work, *TINY, quiet_env=True)
    assert done.returncode == 0, done.stderr
    return work


def test_batch_lines_quiet_and_log_file(two_chairs: Path, tmp_path: Path) -> None:
    work, log = tmp_path / "ws", tmp_path / "logs" / "render.log"
    done = partseg("render", two_chairs, "--work", work, "--views", "2", "--resolution",
                   "64", "--points", "500")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("render 1/2 Chair_chair0 computed in ") for line in lines)
    assert any(line.startswith("render 2/2 Chair_chair1 computed") and "2 computed" in line
               for line in lines), done.stderr
    assert "render: 2 computed, 0 cached" in lines
    quiet = partseg("render", two_chairs, "--work", work, "--views", "2", "--resolution",
                    "64", "--points", "500", "--quiet", "--log-file", log)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    text = log.read_text()
    assert "render 2/2 Chair_chair1 cached" in text and "render: 0 computed, 2 cached" in text


@pytest.mark.parametrize(("stage", "signal_name", "code"),
                         [("detect", "SIGTERM", 143), ("vote", "SIGINT", 130)])
def test_stop_signal_ends_at_a_shape_boundary_and_rerun_is_identical(
        two_chairs: Path, tmp_path: Path, reference: Path, stage: str, signal_name: str,
        code: int) -> None:
    work = tmp_path / "ws"
    stopped = partseg("run", two_chairs, "--work", work, *TINY, stop=(stage, signal_name))
    assert stopped.returncode == code, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"partseg: stopped by {signal_name}: ") and "Traceback" not in \
        stopped.stderr, stopped.stderr
    assert "load 2/2, render 2/2, detect" in last, last
    assert f"{stage} 1/2 done" in last, last
    workspace = Workspace.open(work)
    stored = [sid for sid in workspace.shape_ids() if workspace.exists(shape_scope(sid), stage)]
    assert len(stored) == 1  # the shape being computed was finished and stored, not more
    assert not any((work / ".tmp").iterdir())  # nothing half-written left behind
    rerun = partseg("run", two_chairs, "--work", work, *TINY, quiet_env=True)
    assert rerun.returncode == 0 and f"{stage}: 1 computed, 1 cached" in rerun.stderr
    ours, theirs = labels(work), labels(reference)
    assert ours.keys() == theirs.keys()
    for sid in ours:
        assert np.array_equal(ours[sid], theirs[sid])


def test_status_counts_stale_failed_and_reads_json(two_chairs: Path, reference: Path,
                                                   tmp_path: Path) -> None:
    reference = Path(shutil.copytree(reference, tmp_path / "ws"))
    status = collect(reference)
    assert status["shapes"] == 2
    assert list(status["stages"])[:3] == ["shape", "render", "detect"]
    assert all(c["done"] == 2 and c["stale"] == 0 for c in status["stages"].values())
    # re-render one shape with other settings: what was computed from it goes stale
    rerender = partseg("render", two_chairs / "Chair" / "chair0.off", "--work", reference,
                       "--views", "2", "--resolution", "48", "--points", "500",
                       quiet_env=True)
    assert rerender.returncode == 0, rerender.stderr
    journal.record_failure(reference, "vote", "Chair_chair1", "no knowledge units\nmore")
    status = collect(reference)
    for stage in ("detect", "backproject"):
        assert status["stages"][stage]["stale_shapes"] == ["Chair_chair0"], stage
    assert status["stages"]["superpoints"]["stale"] == 0  # it reads the shape only
    assert status["failed"] == [{"stage": "vote", "shape": "Chair_chair1",
                                 "reason": "no knowledge units", "job": None, "log": None}]
    text = render_text(status)
    assert "stale detect" in text and "vote Chair_chair1: no knowledge units" in text
    done = partseg("status", reference, "--json", quiet_env=True)
    assert done.returncode == 0 and json.loads(done.stdout)["stages"]["vote"]["failed"] == 1
    # a later success of the stage clears the failure
    again = partseg("vote", reference, "--force", "--shape-id", "Chair_chair1", quiet_env=True)
    assert again.returncode == 0, again.stderr
    assert collect(reference)["failed"] == []


def test_status_reads_the_commit_logs_and_falls_back_to_the_artifacts(
        tmp_path: Path) -> None:
    """`status` takes each artifact's key and inputs from its shape's commit log where a
    line names the artifact's metadata file as it is now (the latest such line), else
    from the file."""
    work = tmp_path / "ws"
    workspace = Workspace.open(work, create=True)
    for sid in ("a", "b"):
        workspace.write(f"shapes/{sid}", "shape", {}, key="s")
        workspace.write(f"shapes/{sid}", "render", {}, key="r", inputs={"shape": "s"})
        workspace.write(f"shapes/{sid}", "detect", {}, key="d",
                        inputs={"shape": "s", "render": "r"})
    workspace.write("shapes/a", "render", {}, key="r2", inputs={"shape": "s"})  # redone
    expected = collect(work)
    assert expected["stages"]["detect"]["stale_shapes"] == ["a"]
    shape_dir = workspace.data_root / "shapes" / "a"
    log = shape_dir / STAGE_LOG
    assert len(log.read_text().splitlines()) == 4  # one line per commit
    assert {(stage, sig) for stage, sig in read_stage_log(log)} >= {
        (entry.name, tuple(stat_signature(entry / "zarr.json")))
        for entry in shape_dir.iterdir() if entry.is_dir()}
    index = work / journal.JOBS / "status-index.json"
    render = stat_signature(shape_dir / "render" / "zarr.json")
    index.unlink()
    with open(log, "a") as handle:  # a line about another file is ignored
        handle.write(json.dumps({"stage": "render", "key": "r",
                                 "sig": [render[0] + 1, *render[1:]]}) + "\n")
    assert collect(work)["stages"] == expected["stages"]
    index.unlink()
    with open(log, "a") as handle:  # the latest line about the file wins: it is read
        handle.write(json.dumps({"stage": "render", "key": "r", "sig": render}) + "\n")
    assert collect(work)["stages"]["detect"]["stale"] == 0
    # a copy (new inodes) or a workspace of an older partseg (no logs): artifacts are read
    copy = Path(shutil.copytree(work, tmp_path / "copy"))
    (copy / journal.JOBS / "status-index.json").unlink()
    assert collect(copy)["stages"] == expected["stages"]
    for shape_log in (work / "store.zarr" / "shapes").glob(f"*/{STAGE_LOG}"):
        shape_log.unlink()
    index.unlink()
    assert collect(work)["stages"] == expected["stages"]


def test_the_same_signal_twice_still_waits_for_the_shape_boundary() -> None:
    """A batch shell that forwards SIGTERM to its job delivers it twice; the shape being
    computed still finishes. A different second signal stops at once."""
    import signal

    from partseg_cli import batch

    seen: list[str] = []
    batch.configure()
    try:
        with pytest.raises(batch.Stopped) as info:
            for item in batch.Progress(["a", "b", "c"], "unit", None, "shape"):
                seen.append(item)
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                seen.append(f"{item} finished")
        assert seen == ["a", "a finished"] and info.value.exit_code == 143
        assert "unit 1/3 done" in info.value.done
        batch.configure()
        with pytest.raises(batch.Stopped) as info:
            for _item in batch.Progress(["a", "b"], "unit", None, "shape"):
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                seen.append("not reached")
        assert info.value.exit_code == 130 and "not reached" not in seen
    finally:
        batch.release()
