"""Many processes creating and filling one new workspace at once (a SLURM array that
starts together): each of --procs forked processes runs `partseg render` on the same
shapes into the same new --work folder, released together by a barrier. A try fails
when any process exits non-zero or the workspace does not then hold every shape
rendered and readable.

Run: python bench/bench_concurrent.py --tries 100 --procs 8     (about 2-5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

from partseg_cli import cli
from partseg_cli import render as _render  # noqa: F401  (imported before forking)
from partseg_cli.store import Workspace, shape_scope

CHAIRS = Path(__file__).resolve().parents[1] / "examples" / "toy_chairs" / "Chair"


def worker(work: str, barrier, results) -> None:
    import io
    from contextlib import redirect_stderr

    barrier.wait(60)
    err = io.StringIO()
    code = 0
    with redirect_stderr(err):
        try:
            cli.main(["render", str(CHAIRS / "chair0.off"),
                      "--work", work, "--views", "1", "--resolution", "16", "--points", "100"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    results.put((code, err.getvalue().strip().splitlines()[-1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=100)
    parser.add_argument("--procs", type=int, default=8)
    args = parser.parse_args()
    context = multiprocessing.get_context("fork")
    base = Path(tempfile.mkdtemp(prefix="concurrent_"))
    failures: list[str] = []
    start = time.time()
    for attempt in range(args.tries):
        work = base / f"ws{attempt}"
        barrier, results = context.Barrier(args.procs), context.Queue()
        procs = [context.Process(target=worker, args=(str(work), barrier, results))
                 for _ in range(args.procs)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=300) for _ in procs]
        for proc in procs:
            proc.join(60)
        failures += [f"try {attempt}: exit {code}: {line}" for code, line in outcomes if code]
        workspace = Workspace.open(work)
        ids = workspace.shape_ids()
        if ids != ["Chair_chair0"]:
            failures.append(f"try {attempt}: shapes {ids}")
        for sid in ids:
            workspace.read(shape_scope(sid), "render")
        shutil.rmtree(work)
    shutil.rmtree(base, ignore_errors=True)
    print("\n".join(failures[:20]))
    print(f"{args.procs} processes creating and filling one new workspace: "
          f"{len(failures)} failures in {args.tries} tries ({time.time() - start:.0f} s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
