"""Many processes creating and filling one new workspace at once (a SLURM array that
starts together): --procs forked processes, released together by a barrier, each run
`partseg render` into the same new --work folder, process i on toy chair i mod 4 (so
some create the workspace and write different shapes, some write the same shape at
once), the zarr and hdf5 backends in turn. A try fails when any process exits non-zero
or the workspace does not then hold every shape rendered and readable.

Run: python bench/bench_concurrent.py --tries 100 --procs 8     (about 5 min on 2 cores)
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
from partseg_cli.errors import PartsegError
from partseg_cli.store import BACKENDS, Workspace, shape_scope

CHAIRS = Path(__file__).resolve().parents[1] / "examples" / "toy_chairs" / "Chair"


def render(work: str, chair: Path, backend: str = "zarr") -> tuple[int, list[str]]:
    """`partseg render` in this process: its exit code and last line of output."""
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    code = 0
    with redirect_stderr(err):
        try:
            cli.main(["render", str(chair),
                      "--work", work, "--backend", backend, "--views", "1", "--resolution", "16",
                      "--points", "100"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue().strip().splitlines()[-1:]


def worker(work: str, chair: Path, backend: str, barrier, results) -> None:
    barrier.wait(60)
    results.put(render(work, chair, backend))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=100)
    parser.add_argument("--procs", type=int, default=8)
    args = parser.parse_args()
    context = multiprocessing.get_context("fork")
    base = Path(tempfile.mkdtemp(prefix="concurrent_"))
    failures: list[str] = []
    # one render before forking imports what rendering needs (zarr, open3d, ...): the
    # processes then race on the workspace, not on a 6-second import
    render(str(base / "warm-up"), CHAIRS / "chair0.off")
    start = time.time()
    for attempt in range(args.tries):
        work = base / f"ws{attempt}"
        barrier, results = context.Barrier(args.procs), context.Queue()
        procs = [context.Process(target=worker,
                                 args=(str(work), CHAIRS / f"chair{i % 4}.off",
                                       BACKENDS[attempt % 2], barrier, results))
                 for i in range(args.procs)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=300) for _ in procs]
        for proc in procs:
            proc.join(60)
        failures += [f"try {attempt}: exit {code}: {line}" for code, line in outcomes if code]
        try:
            workspace = Workspace.open(work)
            ids = workspace.shape_ids()
            wanted = [f"Chair_chair{i}" for i in range(min(4, args.procs))]
            if ids != wanted:
                failures.append(f"try {attempt}: shapes {ids}, not {wanted}")
            for sid in ids:
                workspace.read(shape_scope(sid), "render")
        except PartsegError as exc:
            failures.append(f"try {attempt}: {exc}")
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    print("\n".join(failures[:20]))
    print(f"{args.procs} processes creating and filling one new workspace: "
          f"{len(failures)} failures in {args.tries} tries ({time.time() - start:.0f} s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
