"""`--executor local|slurm --jobs N`: a command's shapes as N array tasks, through submitit.

A command becomes a plan of steps (`plan`). A per-shape command is one step: a job
array of N tasks, task K running the same command with ``--shard K/N`` (the shards of
cli.py, so a task's shapes and results are exactly those of a ``--shard`` run).
Collection-level work is a job that depends on the array feeding it (SLURM
``afterok``), followed again by a fan-out where there is one:

- ``run --distill pre``: the per-shape stages as an array, then one pre-alignment job
  (``distill --mode pre`` over every shape);
- ``adapt --train-ids P`` and ``distill --mode pre --train-ids P``: one training job
  (on the training shapes), then an array that labels every shape with the network or
  student it stored (training is keyed, so the tasks reuse it, never train again);
- ``distill --mode pre`` (transductive): one job, one student over all the shapes.

On SLURM every step is submitted at once (dependencies order them) and partseg
returns with the job ids, unless ``--wait``. The local executor runs the tasks as
processes on this machine, step after step, and always waits. Submissions are kept in
the workspace (journal.py): job ids, logs, and per task a small result file that
`partseg status` reads. A task is a `Task` object: on preemption or time-out (SIGUSR2
ahead of the limit) it stops at the next shape boundary, then submitit calls its
``checkpoint`` and requeues it; the rerun skips what was stored.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import journal
from .errors import PartsegError, first_line
from .status import KILLED
from .status import jobs as job_states
from .store import MANIFEST, Workspace

EXECUTORS = ("local", "slurm")
# the executor options of cli.py, which a task's command line must not repeat
EXECUTOR_VALUES = {"--executor", "--jobs", "--slurm-partition", "--slurm-time", "--slurm-gres",
                   "--slurm-cpus", "--slurm-mem", "--slurm-account", "--slurm-param"}
EXECUTOR_FLAGS = {"--wait"}


@dataclass
class ExecOptions:
    """The executor options of a command (cli.py's EXECUTOR_OPTIONS)."""

    executor: str
    jobs: int = 1
    wait: bool = False
    partition: str | None = None
    time_min: int = 60
    gres: str | None = None
    cpus: int | None = None
    mem: str | None = None
    account: str | None = None
    params: list[str] = field(default_factory=list)


@dataclass
class Step:
    name: str
    argv: list[str]  # a partseg command line, without executor options or --shard
    tasks: int  # array tasks; 1 for a collection-level job


def strip_options(argv: list[str], options: set[str], flags: set[str]) -> list[str]:
    """``argv`` without the given options (with their value, as ``--o v`` or ``--o=v``)
    and flags."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if token in flags or (name in options and "=" in token):
            continue
        if token in options:
            skip = True
            continue
        out.append(token)
    return out


def plan(command: str, argv: list[str], params: dict[str, Any], jobs: int) -> list[Step]:
    """The steps that run ``argv`` (a ``command`` whose parsed options are ``params``)."""
    if command == "run" and params.get("distill") == "pre":
        return [Step("run", [*argv, "--distill", "none"], jobs),
                Step("distill-pre", ["distill", str(params["work"]), "--mode", "pre",
                                     "--seed", str(params["seed"]), "--device",
                                     str(params["device"])], 1)]
    if command in ("adapt", "distill") and params.get("train_ids"):
        train = strip_options(argv, {"--shape-id"}, set())
        train += [f"--shape-id={pattern}" for pattern in params["train_ids"]]
        return [Step(f"{command}-train", train, 1),
                Step(f"{command}-apply", strip_options(argv, set(), {"--force"}), jobs)]
    if command == "distill" and params.get("mode") == "pre":
        return [Step("distill-pre", argv, 1)]
    return [Step(command, argv, jobs)]


class Task:
    """One array task (or job): ``partseg ARGV [--shard K/N]`` in the job's process.

    It records its start and its outcome (exit code, last line said) in ``result``,
    and fails the SLURM task only when partseg could not do its work (exit 2, a
    signal): shapes that failed (exit 1) are reported, not a reason to hold back the
    jobs that depend on this one, as a local run also carries on without them."""

    def __init__(self, argv: list[str], shard: str | None, work: Path, folder: Path):
        self.argv, self.shard, self.work, self.folder = argv, shard, work, folder

    def __call__(self) -> int:
        import submitit

        from . import batch
        from .cli import main

        # submitit's SIGUSR2 handler checkpoints and requeues at once, wherever the run
        # is; partseg's own (batch.py) takes SIGUSR2 while it runs and stops at the next
        # shape boundary, and the stop is then handed back to submitit's (see below)
        requeue = signal.getsignal(signal.SIGUSR2)
        env = submitit.JobEnvironment()
        result = self.folder / f"{env.job_id}.json"
        os.environ[journal.LOG_ENV] = str(env.paths.stderr)
        os.environ.pop("PARTSEG_NO_PROGRESS", None)  # a job log wants its lines
        started = time.time()
        if not (self.work / MANIFEST).is_file():
            line = (f"{self.work}: not visible from {os.uname().nodename} (no {MANIFEST}); "
                    "the workspace must be on a file system the compute nodes mount")
            self._result(result, {"code": 2, "line": line, "started": started})
            raise PartsegError(line)
        self._result(result, {"started": started, "host": os.uname().nodename})
        argv = [*self.argv, *(["--shard", self.shard] if self.shard else [])]
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            if exc.code == -1:  # submitit requeued the job and exits: not our outcome
                raise
            code = exc.code if isinstance(exc.code, int) else 2
        line = batch.last_said()
        if code == batch.EXIT_CODES[signal.SIGUSR2] and callable(requeue):
            # no exit code yet: `status` asks squeue about the requeued task
            self._result(result, {"line": line, "started": started, "requeued": time.time()})
            try:
                requeue(signal.SIGUSR2, None)  # checkpoint(), requeue, exit as submitit does
            except Exception:  # submitit would not requeue (timed out too often): failed
                self._result(result, {"code": code, "line": line, "started": started,
                                      "ended": time.time()})
                raise
        self._result(result, {"code": code, "line": line, "started": started,
                              "ended": time.time()})
        if code not in (0, 1):
            raise RuntimeError(f"partseg {' '.join(argv[:1])} exited {code}: {line}")
        return code

    def checkpoint(self) -> Any:
        """submitit's requeue hook: the same task again; the rerun skips stored shapes."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)

    @staticmethod
    def _result(path: Path, payload: dict[str, Any]) -> None:
        journal.write_json_atomic(path, payload)


def check(options: ExecOptions) -> None:
    """Refuse options that cannot work before anything is submitted."""
    if options.executor not in EXECUTORS:
        raise PartsegError(f"--executor: choose local or slurm, not {options.executor!r}")
    if options.jobs < 1:
        raise PartsegError(f"--jobs: need at least 1 job, got {options.jobs}")
    if options.time_min < 1:
        raise PartsegError(f"--slurm-time: need at least 1 minute, got {options.time_min}")
    for item in options.params:
        if "=" not in item or not item.split("=", 1)[0]:
            raise PartsegError(f"--slurm-param: expected KEY=VALUE (an sbatch option "
                               f"without its dashes), got {item!r}")
    if options.executor != "slurm":
        return
    if shutil.which("sbatch") is None:
        raise PartsegError("--executor slurm: sbatch is not on PATH (run this on a SLURM "
                           "login node, or use --executor local)")
    if options.partition:
        known = _partitions()
        if known is not None and options.partition not in known:
            raise PartsegError(f"--slurm-partition {options.partition}: no such partition "
                               f"(sinfo lists: {', '.join(known) or 'none'})")


def _partitions() -> list[str] | None:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None  # no sinfo: let sbatch judge
    if out.returncode != 0:
        raise PartsegError(f"sinfo failed: {first_line(Exception(out.stderr or out.stdout))}"
                           " (is the SLURM controller reachable?)")
    return sorted({p.strip().rstrip("*") for p in out.stdout.split() if p.strip()})


def _executor(options: ExecOptions, folder: Path, name: str, tasks: int,
              after: str | None) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=options.executor)
    executor.update_parameters(name=f"partseg-{name}", timeout_min=options.time_min)
    if options.executor == "slurm":
        extra = dict(item.split("=", 1) for item in options.params)
        if after:
            extra.setdefault("kill_on_invalid_dep", "yes")  # a failed input ends the chain
        slurm = {"slurm_partition": options.partition, "slurm_gres": options.gres,
                 "cpus_per_task": options.cpus, "slurm_mem": options.mem,
                 "slurm_account": options.account, "slurm_array_parallelism": tasks,
                 "slurm_dependency": f"afterok:{after}" if after else None,
                 "slurm_additional_parameters": extra or None}
        executor.update_parameters(**{k: v for k, v in slurm.items() if v is not None})
    elif options.cpus:
        executor.update_parameters(cpus_per_task=options.cpus)
    return executor


def _submit_step(step: Step, options: ExecOptions, work: Path, folder: Path,
                 after: str | None) -> list[dict[str, Any]]:
    """Submit one step; its jobs as the journal records them (with the submitit job)."""
    executor = _executor(options, folder, step.name, step.tasks, after)
    shards = [f"{k}/{step.tasks}" for k in range(step.tasks)] if step.tasks > 1 else [None]
    try:
        with executor.batch():
            jobs = [executor.submit(Task(step.argv, shard, work, folder)) for shard in shards]
    except Exception as exc:  # submitit wraps sbatch's refusal in its own errors
        raise PartsegError(f"{options.executor}: could not submit {step.name}: "
                           f"{_sbatch_problem(exc)}") from exc
    return [{"id": str(job.job_id), "shard": shard, "stdout": str(job.paths.stdout),
             "stderr": str(job.paths.stderr), "result": str(folder / f"{job.job_id}.json"),
             "job": job} for job, shard in zip(jobs, shards, strict=True)]


def _sbatch_problem(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "error" in line.lower() and "sbatch" in line.lower():
            return line.strip()
    return first_line(exc)


def submit(command: str, argv: list[str], params: dict[str, Any], options: ExecOptions,
           work: Path) -> int:
    """Submit ``argv`` as its plan; returns the exit code (0 once submitted, or the
    jobs' outcome when waiting)."""
    from . import batch

    check(options)
    if params.get("shard"):
        raise PartsegError("--shard: give --jobs N (the executor makes the shards) or "
                           "--shard K/N, not both")
    # made here, before any task could race to create it; the tasks then find it
    Workspace.open(work, create="inputs" in params, backend=params.get("backend"))
    steps = plan(command, argv, params, options.jobs)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}"
    folder = (work / journal.JOBS / name).absolute()
    entry: dict[str, Any] = {"time": time.time(), "executor": options.executor,
                             "command": argv, "folder": str(folder), "steps": []}
    after: str | None = None
    submitted: list[Any] = []
    worst = 0
    for step in steps:
        jobs = _submit_step(step, options, work, folder, after)
        entry["steps"].append({"name": step.name, "after": after,
                               "jobs": [{k: v for k, v in j.items() if k != "job"}
                                        for j in jobs]})
        _save(work, entry, first=step is steps[0])
        first = jobs[0]["id"].split("_")[0]
        what = f"array {first} ({len(jobs)} tasks)" if len(jobs) > 1 else f"job {first}"
        batch.log(f"{step.name}: {options.executor} {what}"
                  f"{f' after {after}' if after else ''}; logs {folder}/", always=True)
        after = first
        submitted += [j["job"] for j in jobs]
        if options.executor == "local":  # no scheduler orders the steps: wait for each
            worst = max(worst, _wait(work, [j["job"] for j in jobs], options))
            if worst >= 2:
                return worst  # what depends on a failed step does not start
    if options.executor == "local":
        return worst
    if not options.wait:
        batch.log(f"submitted; follow with `partseg status {work}`", always=True)
        return 0
    return _wait(work, submitted, options)


def _save(work: Path, entry: dict[str, Any], first: bool) -> None:
    """Add the submission to the journal, or update its line as steps are added."""
    if first:
        journal.add_submission(work, entry)
        return
    path = work / journal.JOBS / "submissions.jsonl"
    lines = path.read_text().splitlines()
    lines[-1] = json.dumps(entry)
    journal.write_text_atomic(path, "\n".join(lines) + "\n")


def _wait(work: Path, all_jobs: list[Any], options: ExecOptions) -> int:
    """Block until every job in ``all_jobs`` has ended; report failed ones; exit code."""
    from . import batch

    ids = {str(j.job_id) for j in all_jobs}
    # a job squeue does not list yet reads as gone: trust that only after a while
    settle = time.time() + 10
    try:
        while True:
            if options.executor == "local":
                running = [j for j in all_jobs if not j.done()]
            else:
                running = [j for j in job_states(work) if j["id"] in ids and j["code"] is None
                           and (j["state"] != KILLED or time.time() < settle)]
            if not running:
                break
            time.sleep(1.0)
    except batch.Stopped:
        if options.executor == "local":
            for job in all_jobs:
                job.cancel(check=False)  # SIGINT: each stops at its next shape boundary
            for job in all_jobs:
                _join(job)
        else:
            batch.log(f"the jobs go on; cancel them with `scancel {' '.join(sorted(ids))}`",
                      always=True)
        raise
    return _outcome(work, ids)


def _join(job: Any, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not job.done() and time.time() < end:
        time.sleep(0.2)


def _outcome(work: Path, ids: set[str] | None = None) -> int:
    """One line per failed task of the last submission; the worst exit code."""

    worst = 0
    for job in job_states(work):
        if ids is not None and job["id"] not in ids:
            continue
        code = job["code"]
        if code is None:  # killed without a word, or its node never saw the workspace
            log = Path(job["log"])
            hint = (" (no log written: check that the workspace is on a file system the "
                    "compute nodes mount)" if not log.exists() else "")
            print(f"partseg: error: {job['step']} {job['id']}: {KILLED}{hint}; log {log}",
                  file=sys.stderr)
            worst = max(worst, 2)
        elif code not in (0, 1):
            print(f"partseg: error: {job['step']} {job['id']} exited {code}: {job['line']}; "
                  f"log {job['log']}", file=sys.stderr)
            worst = max(worst, 2 if code < 100 else code)
        else:
            worst = max(worst, code)
    return worst
