"""Start-up time of the CLI: `partseg --help`, `inspect` and a fully cached `run` over
20 shapes (target: each <= 1 s), as a user's shell sees it (a new process each time).

The shapes are 20 procedural dev chairs (bench/dev_shapes.py) written as ShapeNetPart
text files, so the run has ground truth and its cached rerun also evaluates. They are
made and run once (small: 2000 points, 3 views at 160 px, simulated teacher), then
each command is timed best of --repeats.

Run: python bench/bench_startup.py [--repeats 3] [--shapes 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dev_shapes import make_shape  # noqa: E402

from partseg_cli.shapes import SHAPENETPART_OFFSETS  # noqa: E402

CLI = [sys.executable, "-m", "partseg_cli.cli"]


def write_chairs(folder: Path, count: int) -> Path:
    """``count`` dev chairs as ShapeNetPart normal-release files (x y z nx ny nz label)."""
    synset = folder / "03001627"  # the Chair synset: the loader names the category
    synset.mkdir(parents=True)
    for index in range(count):
        shape = make_shape("chair", index, seed=0, n_points=2000)
        rows = np.column_stack([shape.points, shape.normals,
                                shape.point_labels + SHAPENETPART_OFFSETS["Chair"]])
        np.savetxt(synset / f"chair{index:03d}.txt", rows, fmt=["%.6f"] * 6 + ["%d"])
    return folder


def timed(args: list[str], repeats: int, env: dict[str, str]) -> tuple[float, float]:
    """Fastest wall and CPU (user + system) seconds of ``repeats`` runs (the machine is
    shared: the minimum is the least disturbed figure, CPU time the less load-bound)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(CLI + args, check=True, env=env, capture_output=True)
        wall = min(wall, time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", type=int, default=20)
    args = parser.parse_args()
    env = dict(os.environ, PARTSEG_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_chairs(Path(tmp) / "data", args.shapes)
        work = str(Path(tmp) / "work")
        run = ["run", str(data), "-w", work, "--teacher", "simulated", "--views", "3",
               "--resolution", "160", "--points", "2000", "--device", "cpu"]
        start = time.perf_counter()
        subprocess.run(CLI + run, check=True, env=env, capture_output=True)
        print(f"first run over {args.shapes} shapes: {time.perf_counter() - start:.1f} s")
        for name, command in (("--help", ["--help"]), ("inspect", ["inspect", work]),
                              ("status", ["status", work]),
                              (f"cached run ({args.shapes} shapes)", run)):
            if name == "status" and subprocess.run(CLI + command, env=env,
                                                   capture_output=True).returncode:
                continue  # no `status` command in this version
            wall, cpu = timed(command, args.repeats, env)
            print(f"{name:<26} {wall:5.2f} s wall, {cpu:5.2f} s CPU  "
                  f"({'ok' if wall <= 1 else 'over'} target 1 s)")


if __name__ == "__main__":
    main()
