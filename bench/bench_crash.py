"""Crash-point sweep: kill -9 just before and just after every rename the store does,
in every stage, on both backends, then rerun and compare with an uninterrupted run;
and --random kill -9 at random moments of a whole `partseg run`.

A trial fails when the rerun exits non-zero, any stored artifact fails its checksums
(corrupt), or the stored arrays differ from the uninterrupted run's (bit-identical).

Run: python bench/bench_crash.py --random 50      (about 10-20 min on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from partseg_cli.store import Workspace, shape_scope

REPO = Path(__file__).resolve().parents[1]
CHAIR = REPO / "examples" / "toy_chairs" / "Chair" / "chair0.off"
SMALL = ["--views", "2", "--resolution", "48", "--points", "400"]
STAGES = [["render", str(CHAIR), "--work", "{w}", *SMALL, "--backend", "{b}"],
          ["detect", "{w}", "--teacher", "simulated", "--parts", "back,seat,leg,arm"],
          ["superpoints", "{w}"], ["backproject", "{w}"], ["vote", "{w}"],
          ["distill", "{w}", "--epochs", "3"]]

# Runs one command; kills itself just before or after rename number K of the store.
CHILD = """
import os, signal, sys
from partseg_cli import store
k, when = int(sys.argv[1]), sys.argv[2]
count = [0]
def hooked(real):
    def call(*args, **kwargs):
        count[0] += 1
        if count[0] == k and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if count[0] == k and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return call
for name in ("rename", "replace", "link"):
    setattr(store.os, name, hooked(getattr(os, name)))
from partseg_cli import cli
try:
    cli.main(sys.argv[3:])
finally:
    print(f"renames={count[0]}", file=sys.stderr)
"""


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PARTSEG_NO_PROGRESS="1", PYTHONPATH=str(REPO))


def child(k: int, when: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(k), when, *args], env=env(),
                          capture_output=True, text=True, timeout=600)


def partseg(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "partseg_cli.cli", *args], env=env(),
                          capture_output=True, text=True, timeout=600)


def digest(work: Path) -> tuple[str, int]:
    """Hash of every stored array (and record attribute but provenance); the number of
    artifacts that fail their checksums."""
    workspace = Workspace.open(work)
    h, corrupt = hashlib.sha256(), 0
    for sid in workspace.shape_ids():
        for stage in workspace.stages(shape_scope(sid)):
            try:
                artifact = workspace.read(shape_scope(sid), stage)
            except Exception:
                corrupt += 1
                continue
            h.update(f"{sid}/{stage}/{sorted(artifact.record_attrs.items())}".encode())
            for name in sorted(artifact.arrays):
                h.update(name.encode() + np.ascontiguousarray(artifact.arrays[name]).tobytes())
    return h.hexdigest(), corrupt


def fill(args: list[str], work: Path, backend: str) -> list[str]:
    return [a.replace("{w}", str(work)).replace("{b}", backend) for a in args]


def sweep(base: Path, backend: str, failures: list[str]) -> int:
    """Every stage, every rename, before and after; returns the number of trials."""
    ref = base / f"ref-{backend}"
    states = []  # the workspace before each stage
    for args in STAGES:
        states.append(base / f"before-{backend}-{args[0]}")
        if ref.exists():
            shutil.copytree(ref, states[-1])
        result = child(0, "never", fill(args, ref, backend))
        assert result.returncode == 0, result.stderr
    expected = digest(ref)[0]
    trials = 0
    for args, state in zip(STAGES, states, strict=True):
        probe = base / "probe"
        shutil.rmtree(probe, ignore_errors=True)
        if state.exists():
            shutil.copytree(state, probe)
        result = child(0, "never", fill(args, probe, backend))
        renames = int(result.stderr.rsplit("renames=", 1)[1].split()[0])
        for k in range(1, renames + 1):
            for when in ("before", "after"):
                trials += 1
                work = base / "trial"
                shutil.rmtree(work, ignore_errors=True)
                if state.exists():
                    shutil.copytree(state, work)
                killed = child(k, when, fill(args, work, backend))
                if killed.returncode != -signal.SIGKILL:
                    failures.append(f"{backend} {args[0]} rename {k} {when}: not killed "
                                    f"({killed.returncode})")
                    continue
                problem = finish(work, backend, expected)
                if problem:
                    failures.append(f"{backend} {args[0]} rename {k} {when}: {problem}")
        print(f"{backend} {args[0]}: {renames} renames swept", flush=True)
    return trials


def finish(work: Path, backend: str, expected: str) -> str | None:
    """Rerun every stage after a kill; None when all is as an uninterrupted run left it."""
    for args in STAGES:
        rerun = partseg(fill(args, work, backend))
        if rerun.returncode != 0:
            return f"rerun of {args[0]} exit {rerun.returncode}: {rerun.stderr.strip()[-200:]}"
    found, corrupt = digest(work)
    if corrupt:
        return f"{corrupt} corrupt artifacts"
    return None if found == expected else "results differ from the uninterrupted run"


def random_kills(base: Path, count: int, failures: list[str], seed: int = 0) -> None:
    ref = base / "ref-zarr"
    expected = digest(ref)[0]
    rng = random.Random(seed)
    start = time.time()
    one = time.time()
    probe = base / "random-probe"
    for args in STAGES:
        partseg(fill(args, probe, "zarr"))
    duration = time.time() - one
    for i in range(count):
        work = base / "random"
        shutil.rmtree(work, ignore_errors=True)
        # kill somewhere in a chain of all stages (killed stages leave what they left)
        delay = rng.uniform(0.2, duration)
        begun = time.time()
        for args in STAGES:
            proc = subprocess.Popen([sys.executable, "-m", "partseg_cli.cli",
                                     *fill(args, work, "zarr")], env=env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=max(0.01, delay - (time.time() - begun)))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
        problem = finish(work, "zarr", expected) if work.exists() else None
        if problem:
            failures.append(f"random kill {i} at {delay:.1f}s: {problem}")
    print(f"{count} random kills in {time.time() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=50, help="random kill -9 trials")
    parser.add_argument("--backends", default="zarr,hdf5")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="crash_"))
    failures: list[str] = []
    start = time.time()
    trials = sum(sweep(base, b, failures) for b in args.backends.split(","))
    if args.random:
        random_kills(base, args.random, failures)
    print("\n".join(failures[:30]))
    print(f"crash-point sweep: {trials} kills at renames ({args.backends}), "
          f"{args.random} random kill -9; {len(failures)} failed (failed rerun, corrupt "
          f"artifact or results not bit-identical); {time.time() - start:.0f} s")
    shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
