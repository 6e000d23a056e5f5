"""SIGTERM during each stage, then a rerun: are the results those of an uninterrupted run?

For every stage of `partseg run --distill tta` (load, render, detect, superpoints,
backproject, vote, distill) a child process sends itself SIGTERM right after storing
that stage's first shape (as scancel or a time limit would); the run must stop at the
shape boundary with exit 143, and a rerun must complete with labels (vote and distill)
equal to an uninterrupted run's, bit for bit:

    .venv/bin/python bench/bench_signals.py --shapes 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from partseg_cli.records import Labelling
from partseg_cli.store import Workspace, shape_scope

REPO = Path(__file__).resolve().parents[1]
STAGES = ["shape", "render", "detect", "superpoints", "backproject", "vote", "distill"]
STOP = """
import os, signal, sys
from partseg_cli import store
original = store.Workspace.write
def write(self, scope, stage, *args, **kwargs):
    original(self, scope, stage, *args, **kwargs)
    if stage == os.environ["STOP_STAGE"]:
        os.kill(os.getpid(), signal.SIGTERM)
store.Workspace.write = write
from partseg_cli.cli import main
main(sys.argv[1:])
"""


def run(args: list[str], stop: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PARTSEG_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    code = ["-m", "partseg_cli.cli"]
    if stop:
        env["STOP_STAGE"] = stop
        code = ["-c", STOP]
    return subprocess.run([sys.executable, *code, *args], capture_output=True, text=True,
                          env=env)


def labels(work: Path) -> dict[tuple[str, str], np.ndarray]:
    workspace = Workspace.open(work)
    return {(sid, stage): workspace.read_record(shape_scope(sid), stage, Labelling).point_labels
            for sid in workspace.shape_ids() for stage in ("vote", "distill")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_signals_"))
    data = root / "data" / "Chair"
    data.mkdir(parents=True)
    for i in range(args.shapes):
        for suffix in (".off", "_labels.txt"):
            shutil.copy(REPO / "examples" / "toy_chairs" / "Chair" / f"chair{i}{suffix}", data)
    common = ["run", str(data.parent), "--teacher", "simulated", "--parts", "back,seat,leg,arm",
              "--views", "2", "--resolution", "64", "--points", "500", "--distill", "tta"]
    reference = run([*common, "--work", str(root / "reference")])
    assert reference.returncode == 0, reference.stderr
    expected = labels(root / "reference")
    ok = True
    for stage in STAGES:
        work = root / stage
        start = time.perf_counter()
        stopped = run([*common, "--work", str(work)], stop=stage)
        line = stopped.stderr.strip().splitlines()[-1] if stopped.stderr.strip() else ""
        rerun = run([*common, "--work", str(work)])
        same = rerun.returncode == 0 and all(
            np.array_equal(a, expected[k]) for k, a in labels(work).items())
        ok &= stopped.returncode == 143 and same
        print(f"{stage:<12} exit {stopped.returncode}, rerun exit {rerun.returncode}, "
              f"identical: {same}  ({time.perf_counter() - start:.1f} s)  {line}")
    shutil.rmtree(root, ignore_errors=True)
    print("every stage: stopped with 143 and resumed identically" if ok else "FAILED")


if __name__ == "__main__":
    main()
