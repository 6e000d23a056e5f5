"""Equal seeds, equal bytes: every stage that writes runs --repeats times (default 3) at
the default thread count, each time in a fresh copy of the workspace the stage starts
from, and what it stores (every artifact's key, record attributes and array bytes,
every saved model's files; `bench_crash.digest`) is compared between the runs.

The stages and commands are bench_crash's, on 2 toy chairs with the simulated teacher;
the size is larger than the crash sweep's by default so that torch's and numpy's
multi-threaded paths (which start at tens of thousands of elements) are taken.

Run: python bench/bench_determinism.py                        (about 5-10 min on 2 cores)
     python bench/bench_determinism.py --points 10000 --views 4 --resolution 200
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_crash import digest, fill, partseg, stage_commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=4000)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--backend", default="zarr")
    args = parser.parse_args()
    import torch

    threads = torch.get_num_threads()
    size = ["--views", str(args.views), "--resolution", str(args.resolution),
            "--points", str(args.points)]
    base = Path(tempfile.mkdtemp(prefix="determinism_"))
    chain = base / "chain"
    identical, differing, start = 0, [], time.time()
    for name, command in stage_commands(size).items():
        before = base / f"before-{name}"
        if chain.exists():
            shutil.copytree(chain, before)
        runs = []
        begun = time.time()
        for repeat in range(args.repeats):
            # the first run continues the chain; the others start from a copy of its state
            work = chain if repeat == 0 else base / f"{name}-{repeat}"
            if repeat and before.exists():
                shutil.copytree(before, work)
            result = partseg(fill(command, work, args.backend), threads=None)
            if result.returncode != 0:
                sys.exit(f"{name}: exit {result.returncode}: {result.stderr.strip()[-300:]}")
            found, corrupt = digest(work)
            assert not corrupt, corrupt
            runs.append(found)
        differ = sorted(k for k in runs[0] if any(r.get(k) != runs[0][k] for r in runs[1:]))
        if differ:
            differing.append(f"{name}: {', '.join(differ)}")
        else:
            identical += 1
        print(f"{name}: {args.repeats} runs {'identical' if not differ else 'DIFFER'} "
              f"({time.time() - begun:.0f} s){': ' + ', '.join(differ) if differ else ''}",
              flush=True)
    shutil.rmtree(base, ignore_errors=True)
    total = identical + len(differing)
    print(f"determinism: {identical} of {total} stages stored identical bytes in "
          f"{args.repeats} runs each at the default thread count (torch {threads} threads; "
          f"{args.points} points, {args.views} views of {args.resolution} px, "
          f"{args.backend}); {time.time() - start:.0f} s")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
