"""`--executor slurm|local --jobs N` against one process: on a real one-node SLURM
cluster (.ci/slurm-cluster.sh starts it) and with submitit's local executor.

The cluster needs root and Debian's slurm-wlm and munge; without them the SLURM tests
skip and say why, except under CI=true, where they must run (.ci/run installs the
packages). A lock file keeps two test runs on this machine from starting clusters on
the same ports at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from shared_data import _in_ci, shared_data

from partseg_cli import journal
from partseg_cli.executors import (
    EXECUTOR_FLAGS,
    EXECUTOR_VALUES,
    ExecOptions,
    Step,
    _submit_step,
    plan,
    strip_options,
)
from partseg_cli.records import Labelling
from partseg_cli.status import KILLED
from partseg_cli.store import Workspace, shape_scope

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / ".ci" / "slurm-cluster.sh"
TINY = ["--teacher", "simulated", "--views", "2", "--resolution", "64", "--points", "400"]


def partseg(*args: object, env: dict[str, str] | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    full = {**os.environ, "PARTSEG_NO_PROGRESS": "1", **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "partseg_cli.cli", *map(str, args)],
                          capture_output=True, text=True, env=full, timeout=timeout)


def labels(work: Path, stage: str) -> dict[str, np.ndarray]:
    workspace = Workspace.open(work)
    return {sid: workspace.read_record(shape_scope(sid), stage, Labelling).point_labels
            for sid in workspace.shape_ids()}


def assert_same_labels(work: Path, reference: Path, stages: tuple[str, ...] = ("vote",)
                       ) -> None:
    for stage in stages:
        ours, theirs = labels(work, stage), labels(reference, stage)
        assert ours.keys() == theirs.keys() and len(ours) == 8
        for sid in ours:
            assert np.array_equal(ours[sid], theirs[sid]), (stage, sid)


def one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("partseg: error")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def eight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight shared LabeledDB chairs (the labels only feed the simulated teacher; the
    test compares labels between runs, it scores nothing)."""
    source = shared_data("labeleddb", "Chair")
    folder = tmp_path_factory.mktemp("eight") / "Chair"
    folder.mkdir()
    for mesh in sorted(source.glob("*.off"))[:8]:
        shutil.copy(mesh, folder)
        shutil.copy(mesh.with_name(f"{mesh.stem}_labels.txt"), folder)
    return folder.parent


@pytest.fixture(scope="module")
def reference(eight: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process: every stage, then a pre-aligned student over the eight shapes."""
    work = tmp_path_factory.mktemp("reference") / "ws"
    done = partseg("run", eight, "--work", work, *TINY, "--distill", "pre")
    assert done.returncode == 0, done.stderr
    return work


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root: the test cluster's daemons (munged, slurmctld, slurmd) need root"
    if not all(shutil.which(tool) for tool in ("sbatch", "slurmctld", "slurmd", "munged")):
        return ("SLURM is not installed (as root: .ci/slurm-cluster.sh install, which runs "
                "apt-get install slurm-wlm munge)")
    return None


@pytest.fixture(scope="module")
def slurm() -> Iterator[Path]:
    """A running one-node cluster; SLURM_CONF points at it while the tests run."""
    reason = _unavailable()
    if reason:
        if _in_ci():
            pytest.fail(f"{reason}; CI=true requires the SLURM tests to run")
        pytest.skip(reason)
    folder = Path("/tmp/partseg-slurm-test")
    folder.mkdir(exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run's cluster: wait for its end
        started = subprocess.run(["bash", str(CLUSTER), "start", str(folder)],
                                 capture_output=True, text=True, timeout=300)
        if started.returncode != 0:
            message = f"the test cluster did not start: {started.stderr.strip()[-800:]}"
            if _in_ci():
                pytest.fail(message)
            pytest.skip(message)
        previous = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
        try:
            yield folder
        finally:
            subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], capture_output=True,
                           timeout=120)
            if previous is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous


def status(work: Path) -> dict:
    done = partseg("status", work, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_slurm_array_then_pre_alignment_equals_one_process(
        slurm: Path, eight: Path, reference: Path, tmp_path: Path) -> None:
    work = tmp_path / "ws"
    done = partseg("run", eight, "--work", work, *TINY, "--distill", "pre", "--executor",
                   "slurm", "--jobs", "4", "--wait", "--slurm-time", "10", "--slurm-cpus", "1")
    assert done.returncode == 0, done.stderr
    assert "run: slurm array" in done.stderr and "(4 tasks)" in done.stderr, done.stderr
    array = done.stderr.split("slurm array ")[1].split()[0]
    # the collection's job waits on the array; its id is whatever SLURM hands out next,
    # not always array + 1 (array tasks may take ids first on a busy controller)
    after = re.search(rf"distill-pre: slurm job (\d+) after {array}\b", done.stderr)
    assert after and int(after.group(1)) > int(array), done.stderr
    assert_same_labels(work, reference, ("vote", "distill"))
    jobs = status(work)["jobs"]
    assert [j["shard"] for j in jobs] == ["0/4", "1/4", "2/4", "3/4", None]
    assert all(j["state"] == "done" and Path(j["log"]).is_file() for j in jobs), jobs
    entry = json.loads((work / "jobs" / "submissions.jsonl").read_text().splitlines()[-1])
    results = [json.loads(Path(j["result"]).read_text()) for j in entry["steps"][0]["jobs"]]
    workspace = Workspace.open(work)
    first_shape = min(workspace.info(shape_scope(sid), "shape")["created"]
                      for sid in workspace.shape_ids())
    started = min(r["started"] for r in results) - entry["time"]
    print(f"submission overhead: first task started {started:.2f} s, first shape stored "
          f"{first_shape - entry['time']:.2f} s after submitting")
    unknown = partseg("vote", work, "--executor", "slurm", "--slurm-partition", "gpu")
    one_error_line(unknown, "--slurm-partition gpu: no such partition", "debug")


def test_scancel_then_rerun_completes_identically(slurm: Path, eight: Path,
                                                  reference: Path, tmp_path: Path) -> None:
    work = tmp_path / "ws"
    done = partseg("run", eight, "--work", work, *TINY, "--executor", "slurm", "--jobs", "2",
                   "--slurm-time", "10")
    assert done.returncode == 0 and "submitted" in done.stderr, done.stderr
    array = done.stderr.split("slurm array ")[1].split()[0]
    logs = work / "jobs"
    deadline = time.time() + 240
    while time.time() < deadline:  # cancel once a task has stored its first render
        if any("render 1/" in p.read_text() for p in logs.glob("*/*_log.err")):
            break
        time.sleep(0.2)
    subprocess.run(["scancel", array], check=True)
    while time.time() < deadline and any(
            j["state"].startswith(("running", "pending", "completing"))
            for j in status(work)["jobs"]):
        time.sleep(0.5)
    jobs = status(work)["jobs"]
    # a running task stops at a shape boundary (143); one still pending never starts
    stopped = [j for j in jobs if j["code"] == 143]
    assert stopped and all(Path(j["log"]).is_file() for j in stopped), jobs
    assert all(j["state"] in ("failed", KILLED) for j in jobs), jobs
    text = partseg("status", work).stdout
    assert f"log {stopped[0]['log']}" in text and "stopped by SIGTERM" in text, text
    rerun = partseg("run", eight, "--work", work, *TINY, "--executor", "slurm", "--jobs",
                    "2", "--wait", "--slurm-time", "10")
    assert rerun.returncode == 0, rerun.stderr
    assert_same_labels(work, reference)


def test_failed_slurm_tasks_are_named_with_their_logs(slurm: Path, reference: Path,
                                                       tmp_path: Path) -> None:
    work = Path(shutil.copytree(reference, tmp_path / "ws"))
    done = partseg("detect", work, "--teacher", "owlv2", "--model", tmp_path / "no-model",
                   "--executor", "slurm", "--jobs", "2", "--wait")
    assert done.returncode == 2, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("partseg: error")]
    assert len(failed) == 2 and all("exited 2" in line and "log " in line for line in failed)
    jobs = status(work)["jobs"]
    assert [j["state"] for j in jobs] == ["failed", "failed"]
    assert "no-model" in jobs[0]["line"]


def test_local_executor_two_jobs_equal_one_process(eight: Path, reference: Path,
                                                   tmp_path: Path) -> None:
    work = tmp_path / "ws"
    done = partseg("run", eight, "--work", work, *TINY, "--executor", "local", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "run: local array" in done.stderr and "(2 tasks)" in done.stderr, done.stderr
    assert_same_labels(work, reference)
    assert [j["state"] for j in status(work)["jobs"]] == ["done", "done"]


# Imported by every Python process started with it on PYTHONPATH (here: the local
# executor's task): after the first detect output is stored, the task sends itself
# SIGUSR2 once, as SLURM does ahead of a time limit for submitit (--signal=USR2@90).
USR2_ONCE = """
import os, signal
if os.environ.get("PARTSEG_TEST_USR2"):
    from partseg_cli import store
    original = store.Workspace.write
    def write(self, scope, stage, *args, **kwargs):
        original(self, scope, stage, *args, **kwargs)
        sent = os.environ["PARTSEG_TEST_USR2"]
        if stage == "detect" and not os.path.exists(sent):
            open(sent, "w").close()
            os.kill(os.getpid(), signal.SIGUSR2)
    store.Workspace.write = write
"""


def test_sigusr2_stops_at_a_shape_boundary_then_submitit_requeues(
        eight: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(USR2_ONCE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PARTSEG_TEST_USR2", str(tmp_path / "sent"))
    work = tmp_path / "ws"
    done = partseg("run", eight, "--work", work, *TINY, "--executor", "local")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sent").exists()  # the signal was sent
    [job] = status(work)["jobs"]
    log = Path(job["log"]).read_text()
    # the shape being computed was finished and stored, then the task stopped ...
    assert "partseg: stopped by SIGUSR2: load 8/8, render 8/8, detect 1/8 done" in log, log
    # ... submitit checkpointed and requeued it (its log is the task's stdout), and the
    # requeued task resumed
    [entry] = journal.submissions(work)[-1]["steps"][0]["jobs"]
    submitit_log = Path(entry["stdout"]).read_text()
    assert "Calling checkpoint method" in submitit_log and "Requeued job" in submitit_log
    assert "detect: 7 computed, 1 cached" in log, log
    assert job["state"] == "done" and job["code"] == 0, job
    assert_same_labels(work, reference)


def test_the_sbatch_example_runs_as_written(slurm: Path, eight: Path, reference: Path,
                                           tmp_path: Path) -> None:
    work = tmp_path / "ws"
    done = subprocess.run(
        ["sbatch", "--wait", "--array=0-1", "--cpus-per-task=1", "--mem=1G",
         f"--output={tmp_path}/partseg-%A_%a.log",
         str(REPO / "examples" / "slurm" / "partseg_array.sbatch"), str(eight), str(work),
         *TINY], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PARTSEG": f"{sys.executable} -m partseg_cli.cli",
             "PYTHONPATH": str(REPO)})
    logs = "".join(p.read_text() for p in tmp_path.glob("partseg-*.log"))
    assert done.returncode == 0, done.stderr + logs
    assert "vote: 4 computed" in logs, logs
    assert_same_labels(work, reference)


def test_plans_put_collection_work_between_arrays() -> None:
    steps = plan("run", ["run", "d", "--work", "w", "--distill=pre"],
                 {"distill": "pre", "work": Path("w"), "seed": 3, "device": "cpu"}, 4)
    assert [(s.name, s.tasks) for s in steps] == [("run", 4), ("distill-pre", 1)]
    assert steps[0].argv[-2:] == ["--distill", "none"]  # the last value is the one used
    assert steps[1].argv == ["distill", "w", "--mode", "pre", "--seed", "3", "--device", "cpu"]
    argv = ["adapt", "w", "--train-ids", "Chair_1*", "--shape-id", "Chair*", "--force"]
    steps = plan("adapt", argv, {"train_ids": ["Chair_1*"]}, 3)
    assert [(s.name, s.tasks) for s in steps] == [("adapt-train", 1), ("adapt-apply", 3)]
    assert steps[0].argv == ["adapt", "w", "--train-ids", "Chair_1*", "--force",
                             "--shape-id=Chair_1*"]
    assert steps[1].argv == ["adapt", "w", "--train-ids", "Chair_1*", "--shape-id", "Chair*"]
    assert [s.tasks for s in plan("distill", ["distill", "w", "--mode", "pre"],
                                  {"mode": "pre"}, 5)] == [1]
    assert strip_options(["vote", "w", "--jobs=4", "--executor", "slurm", "--wait", "-q"],
                         EXECUTOR_VALUES, EXECUTOR_FLAGS) == ["vote", "w", "-q"]


def test_executor_bad_input_is_one_line(reference: Path, tmp_path: Path) -> None:
    no_slurm = {"PATH": str(tmp_path)}  # no sbatch on it (python is run by full path)
    one_error_line(partseg("vote", reference, "--executor", "slurm", env=no_slurm),
                   "sbatch is not on PATH")
    one_error_line(partseg("vote", reference, "--executor", "local", "--jobs", "0"),
                   "--jobs: need at least 1 job, got 0")
    one_error_line(partseg("vote", reference, "--executor", "cloud"), "--executor")
    one_error_line(partseg("vote", reference, "--executor", "local", "--jobs", "2",
                           "--shard", "0/2"), "--shard")
    one_error_line(partseg("vote", reference, "--executor", "local", "--slurm-param", "qos"),
                   "--slurm-param", "KEY=VALUE")


def test_a_task_that_cannot_see_the_workspace_says_so(tmp_path: Path) -> None:
    """As on a cluster whose nodes do not mount the workspace (here: it is not there)."""
    unseen, folder = tmp_path / "unseen", tmp_path / "jobs"
    [job] = _submit_step(Step("vote", ["vote", str(unseen)], 1), ExecOptions("local"),
                         unseen, folder, None)
    deadline = time.time() + 120
    while not job["job"].done() and time.time() < deadline:
        time.sleep(0.2)
    result = json.loads(Path(job["result"]).read_text())
    assert result["code"] == 2, result
    assert "not visible from" in result["line"] and "compute nodes mount" in result["line"]
