"""Crash-point sweep: kill -9 just before and just after every rename of a run, in
every stage that writes, on both backends, then rerun and compare with an
uninterrupted run; and --random kill -9 at random moments of a whole `partseg run`.

The crash points are found without a hook in partseg: the killed command runs in a
child that wraps os.rename / os.replace / os.link as called by partseg (the store's
commits, the manifest's creation, group metadata, corrupt notes, saved models, the
failure journal) and SIGKILLs itself just before or just after the k-th call; a probe
run of the stage counts its calls first.

A trial fails when the rerun of the killed command exits non-zero, any stored artifact
fails its checksums on read (corrupt), or the stored outputs (every artifact's key,
record attributes and array bytes, and every saved model's files) differ from the
uninterrupted run's (not bit-identical). The input is tiny (2 toy chairs, 2 views of
48 px, 400 points, simulated teacher) so one stage runs in seconds.

Run: python bench/bench_crash.py --random 0                     (the sweep alone)
     python bench/bench_crash.py --no-sweep --random 50          (random kills alone)
     python bench/bench_crash.py --stages render,detect --backends hdf5 --random 0
     python bench/bench_crash.py --replace --random 0   (killed while replacing outputs)
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from partseg_cli.saved_model import MODEL_JSON
from partseg_cli.store import Workspace

REPO = Path(__file__).resolve().parents[1]
CHAIRS = [str(REPO / "examples" / "toy_chairs" / "Chair" / f"chair{i}.off") for i in (0, 1)]
TINY = ["--views", "2", "--resolution", "48", "--points", "400"]
TEACHER = ["--teacher", "simulated", "--parts", "back,seat,leg,arm"]


def stage_commands(size: list[str] = TINY) -> dict[str, list[str]]:
    """Every command that writes, in pipeline order, on shapes sampled and rendered at
    ``size``; {w} is the workspace, {b} the backend."""
    return {
        "render": ["render", *CHAIRS, "--work", "{w}", *size, "--backend", "{b}"],
        "detect": ["detect", "{w}", *TEACHER],
        "sam-refine": ["sam-refine", "{w}", "--model", "sam-oracle"],
        "superpoints": ["superpoints", "{w}"],
        "backproject": ["backproject", "{w}"],
        "vote": ["vote", "{w}"],
        "distill": ["distill", "{w}", "--epochs", "3"],
        "rescore": ["rescore", "{w}"],
        "distill-pre": ["distill", "{w}", "--mode", "pre", "--epochs", "2", "--output",
                        "pre"],
        "partstad": ["adapt", "{w}", "--method", "partstad", "--train-ids", "*chair0",
                     "--model-name", "stad", "--epochs", "2"],
        "bipart": ["adapt", "{w}", "--method", "bipart", "--train-ids", "*chair0",
                   "--model-name", "bp", "--epochs", "1", "--support-size", "2",
                   "--inner-steps", "1", "--adapt-steps", "1"],
    }


STAGES = stage_commands()
# a saved model's measurements of its training run (wall-clock time, peak memory)
MEASURED = ("train_seconds", "peak_rss_mb")
# A whole `run` for the random kills (render ... vote, sam-refine and distill included).
RUN = ["run", *CHAIRS, "--work", "{w}", *TINY, "--backend", "{b}", *TEACHER,
       "--sam", "sam-oracle", "--distill", "tta"]

# Runs one command; kills itself just before or after the K-th rename partseg does
# (called from partseg_cli, directly or through pathlib). zarr's own moves of chunk files
# inside an artifact's temporary folder are not counted: a kill there is a kill before
# the store's commit, and the random kills reach them.
CHILD = """
import os, sys, signal
k, when = int(sys.argv[1]), sys.argv[2]
count = [0]
def ours():
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith("pathlib.py"):
        frame = frame.f_back
    return frame is not None and "partseg_cli" in frame.f_code.co_filename
def hooked(real):
    def call(*args, **kwargs):
        if not ours():
            return real(*args, **kwargs)
        count[0] += 1
        if count[0] == k and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            return real(*args, **kwargs)
        finally:  # a rename that failed (the target exists) is killed after, too
            if count[0] == k and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
    return call
for name in ("rename", "replace", "link"):
    setattr(os, name, hooked(getattr(os, name)))
from partseg_cli import cli
try:
    cli.main(sys.argv[3:])
finally:
    print(f"renames={count[0]}", file=sys.stderr)
"""


def env(threads: str | None = "1") -> dict[str, str]:
    """The children's environment; ``threads`` None keeps the default thread count."""
    extra = {"PARTSEG_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    if threads is not None:
        extra["OMP_NUM_THREADS"] = threads
    return dict(os.environ, **extra)


def child(k: int, when: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(k), when, *args], env=env(),
                          capture_output=True, text=True, timeout=600)


def partseg(args: list[str], threads: str | None = "1") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "partseg_cli.cli", *args],
                          env=env(threads), capture_output=True, text=True, timeout=900)


def digest(work: Path) -> tuple[dict[str, str], list[str]]:
    """Per stored stage (over every shape and collection) and per saved model folder, a
    hash of what a run leaves: each artifact's key, record attributes and array bytes
    (not the write's id and time), each model's weights and model.json (not its
    training run's measured time and memory). Also the artifacts that fail their checksums on read
    (corrupt)."""
    workspace = Workspace.open(work)
    hashes: dict[str, hashlib._Hash] = {}
    corrupt: list[str] = []
    scopes = [f"shapes/{sid}" for sid in workspace.shape_ids()]
    collections = workspace.data_root / "collections"
    if collections.is_dir():
        scopes += sorted(f"collections/{p.name}" for p in collections.iterdir() if p.is_dir())
    for scope in scopes:
        for stage in workspace.stages(scope):
            try:
                artifact = workspace.read(scope, stage)
            except Exception as exc:
                corrupt.append(f"{scope}/{stage}: {str(exc).splitlines()[0][-160:]}")
                continue
            h = hashes.setdefault(stage, hashlib.sha256())
            h.update(f"{scope}/{stage}/{artifact.key}/".encode())
            h.update(json.dumps(artifact.record_attrs, sort_keys=True, default=str).encode())
            for name in sorted(artifact.arrays):
                value = np.ascontiguousarray(artifact.arrays[name])
                h.update(f"{name}{value.dtype.str}{value.shape}".encode() + value.tobytes())
    for model in sorted(work.rglob(MODEL_JSON)):
        folder = model.parent
        if folder.name.startswith("."):
            continue  # a save's temporary or old copy, never read
        h = hashes.setdefault(f"model:{folder.relative_to(work)}", hashlib.sha256())
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p != model):
            h.update(path.name.encode() + path.read_bytes())
        document = json.loads(model.read_text())
        for name in MEASURED:
            document.get("meta", {}).pop(name, None)
        h.update(json.dumps(document, sort_keys=True).encode())
    return {name: h.hexdigest() for name, h in sorted(hashes.items())}, corrupt


def fill(args: list[str], work: Path, backend: str) -> list[str]:
    return [a.replace("{w}", str(work)).replace("{b}", backend) for a in args]


class Failures:
    """Failed trials by kind: rerun (exit non-zero), corrupt, differ, not-killed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # trials run in threads (--jobs)
        self.lines: list[str] = []
        self.kinds: dict[str, int] = {"rerun": 0, "corrupt": 0, "differ": 0, "not-killed": 0}

    def add(self, kind: str, line: str) -> None:
        with self.lock:
            self.kinds[kind] += 1
            self.lines.append(f"{kind}: {line}")

    def __len__(self) -> int:
        return len(self.lines)

    def summary(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.kinds.items())


def compare(work: Path, expected: dict[str, str]) -> tuple[str, str] | None:
    """None when ``work`` holds exactly ``expected``, whole; else (kind, what)."""
    found, corrupt = digest(work)
    if corrupt:
        return "corrupt", f"{len(corrupt)} corrupt artifacts ({corrupt[0]})"
    if found != expected:
        differ = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        return "differ", f"not bit-identical to the uninterrupted run: {', '.join(differ)}"
    return None


def references(base: Path, backend: str, stages: list[str]
               ) -> tuple[list[Path], list[Path], list[dict[str, str]]]:
    """An uninterrupted run, stage by stage: the workspace before and after each stage
    (copies) and the digest after it."""
    ref = base / f"ref-{backend}"
    before, after, expected = [], [], []
    last = max(list(STAGES).index(name) for name in stages)
    for name in list(STAGES)[: last + 1]:
        if name in stages:
            before.append(base / f"before-{backend}-{name}")
            if ref.exists():
                shutil.copytree(ref, before[-1])
        result = partseg(fill(STAGES[name], ref, backend))
        assert result.returncode == 0, f"{name}: {result.stderr}"
        if name in stages:
            expected.append(digest(ref)[0])
            after.append(base / f"after-{backend}-{name}")
            shutil.copytree(ref, after[-1])
    return before, after, expected


def sweep(base: Path, backend: str, stages: list[str], failures: Failures,
          replace: bool = False, jobs: int = 1) -> int:
    """Every stage, every rename, before and after; returns the number of kills. With
    ``replace`` the killed command is the stage with --force over its own complete
    output (each commit then moves the old artifact or model aside first)."""
    befores, afters, expected = references(base, backend, stages)
    kills = 0
    for name, before, done, after in zip(stages, befores, afters, expected, strict=True):
        args, state = STAGES[name], before
        killed_args = args
        if replace:
            killed_args, state = [*args, "--force"], done
        probe = base / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        if state.exists():
            shutil.copytree(state, probe)
        result = child(0, "never", fill(killed_args, probe, backend))
        assert result.returncode == 0, result.stderr
        renames = int(result.stderr.rsplit("renames=", 1)[1].split()[0])
        problem = compare(probe, after)
        if problem:  # the stage itself is not repeatable: every trial would fail
            failures.add(problem[0], f"{backend} {name} uninterrupted: {problem[1]}")
        failed, begun = len(failures), time.time()
        points = [(k, when) for k in range(1, renames + 1) for when in ("before", "after")]
        label = f"{backend} {name}{' --force' * replace} rename {{k}}/{renames} {{when}}"
        trial = functools.partial(kill_trial, base, backend, state, killed_args, args, after,
                                  label, failures)
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(trial, points))
        kills += len(points)
        print(f"{backend} {name}{' --force' * replace}: {renames} renames, {2 * renames} "
              f"kills, {len(failures) - failed} failed ({time.time() - begun:.0f} s)",
              flush=True)
    return kills


def kill_trial(base: Path, backend: str, state: Path, killed_args: list[str],
               args: list[str], expected: dict[str, str], label: str, failures: Failures,
               point: tuple[int, str]) -> None:
    """From a copy of ``state``: run ``killed_args`` killed at ``point`` (rename number,
    before/after), then rerun ``args``; a failure is added under ``label``."""
    k, when = point
    work = base / f"trial-{k}-{when}"
    shutil.rmtree(work, ignore_errors=True)
    if state.exists():
        shutil.copytree(state, work)
    where = label.format(k=k, when=when)
    killed = child(k, when, fill(killed_args, work, backend))
    if killed.returncode != -signal.SIGKILL:
        failures.add("not-killed", f"{where}: exit {killed.returncode}: "
                     f"{killed.stderr.strip()[-200:]}")
    else:
        problem = rerun(work, args, backend, expected)
        if problem:
            failures.add(problem[0], f"{where}: {problem[1]}")
    shutil.rmtree(work, ignore_errors=True)


def rerun(work: Path, args: list[str], backend: str, expected: dict[str, str]
          ) -> tuple[str, str] | None:
    """Rerun the killed command; None when all is as an uninterrupted run left it."""
    again = partseg(fill(args, work, backend))
    if again.returncode != 0:
        return "rerun", f"exit {again.returncode}: {again.stderr.strip()[-200:]}"
    return compare(work, expected)


def random_kills(base: Path, count: int, backends: list[str], failures: Failures,
                 seed: int = 0, jobs: int = 1) -> None:
    """``count`` kill -9 of a whole `run` at a random moment (backends in turn), each
    followed by a rerun that must leave what an uninterrupted `run` leaves."""
    expected, duration = {}, {}
    for backend in backends:
        ref = base / f"run-{backend}"
        shutil.rmtree(ref, ignore_errors=True)
        begun = time.time()
        result = partseg(fill(RUN, ref, backend))
        assert result.returncode == 0, result.stderr
        duration[backend] = time.time() - begun
        expected[backend] = digest(ref)[0]
    start, failed = time.time(), len(failures)

    def trial(i: int) -> int:
        """Kill number ``i``; returns how many runs finished before their kill."""
        rng, backend, early = random.Random(seed * 100_000 + i), backends[i % len(backends)], 0
        work = base / f"random-{i}"
        while True:
            shutil.rmtree(work, ignore_errors=True)
            delay = rng.uniform(0.1, duration[backend])
            proc = subprocess.Popen([sys.executable, "-m", "partseg_cli.cli",
                                     *fill(RUN, work, backend)], env=env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
                early += 1  # finished before the kill (the machine was faster this time)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
        problem = rerun(work, RUN, backend, expected[backend])
        if problem:
            failures.add(problem[0], f"random kill {i} ({backend}) at {delay:.1f} s: "
                         f"{problem[1]}")
        shutil.rmtree(work, ignore_errors=True)
        return early

    with ThreadPoolExecutor(jobs) as pool:
        early = sum(pool.map(trial, range(count)))
    took = ", ".join(f"{b} {d:.0f} s" for b, d in duration.items())
    print(f"random kill -9 of `run`: {count} killed ({early} more finished before their "
          f"kill; an uninterrupted run takes {took}), {len(failures) - failed} failed "
          f"({time.time() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=50, help="random kill -9 trials")
    parser.add_argument("--backends", default="zarr,hdf5")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"stages to sweep (of {', '.join(STAGES)})")
    parser.add_argument("--no-sweep", action="store_true", help="random kills only")
    parser.add_argument("--replace", action="store_true",
                        help="sweep each stage run with --force over its own output "
                        "(commits that replace), not on a workspace without it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    parser.add_argument("--jobs", type=int, default=1, help="trials run at once")
    args = parser.parse_args()
    backends, stages = args.backends.split(","), args.stages.split(",")
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}")
    base = Path(tempfile.mkdtemp(prefix="crash_"))
    failures = Failures()
    start = time.time()
    kills = 0 if args.no_sweep else sum(sweep(base, b, stages, failures, args.replace,
                                              args.jobs) for b in backends)
    if args.random:
        random_kills(base, args.random, backends, failures, args.seed, args.jobs)
    print("\n".join(failures.lines[:30]))
    swept = f"{','.join(stages)}{' --force' * args.replace}" if kills else "-"
    print(f"crash-point sweep: {kills} kills at renames ({swept}; {args.backends}), "
          f"{args.random} random kill -9 of `run`; {len(failures)} "
          f"failed ({failures.summary()}); {time.time() - start:.0f} s")
    shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
