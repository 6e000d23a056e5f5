"""The workspace's record of failed shapes and submitted jobs, read by `partseg status`.

    jobs/failed/<stage>/<shape_id>.json   one per shape whose stage failed last time:
                                          the one-line reason, when, the job and its log
    jobs/submissions.jsonl                one line per `--executor` submission: the
                                          command, and per step its job ids and logs
    jobs/<submission>/                    submitit's pickles and the jobs' logs

A failure file is written by the process that failed the shape and removed when the
stage later succeeds for it, so many array tasks write different files and never the
same one. Writes are atomic (a temporary file renamed into place).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

JOBS = "jobs"
LOG_ENV = "PARTSEG_JOB_LOG"  # set by executors.py in a job: the path of its log


def _failure_path(root: Path, stage: str, shape_id: str) -> Path:
    return root / JOBS / "failed" / stage / f"{shape_id}.json"


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload))


def current_job() -> str | None:
    """The SLURM job (array task) this process runs in, if any."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def record_failure(root: Path, stage: str, shape_id: str, reason: str) -> None:
    from .batch import log_path

    lines = reason.strip().splitlines()
    write_json_atomic(_failure_path(root, stage, shape_id), {
        "stage": stage, "shape": shape_id, "reason": lines[0] if lines else "failed",
        "time": time.time(), "job": current_job(),
        "log": os.environ.get(LOG_ENV) or log_path()})


def clear_failure(root: Path, stage: str, shape_id: str) -> None:
    _failure_path(root, stage, shape_id).unlink(missing_ok=True)


def failures(root: Path) -> list[dict[str, Any]]:
    """Every recorded failure, by stage then shape."""
    base = root / JOBS / "failed"
    found = []
    if base.is_dir():
        for path in sorted(base.glob("*/*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # removed or replaced while we listed it
    return found


def add_submission(root: Path, entry: dict[str, Any]) -> None:
    """Append a submission (only the submitting process writes this file)."""
    path = root / JOBS / "submissions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def submissions(root: Path) -> list[dict[str, Any]]:
    path = root / JOBS / "submissions.jsonl"
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash while appending
    return entries
