"""`partseg status` on a large synthetic workspace (target: <= 2 s for 10,000 shapes).

Writes a zarr workspace whose shapes hold the attribute files of six stages (render,
detect, superpoints, backproject, vote, plus the shape itself) with real keys chained
through their inputs, a few stale artifacts and recorded failures, then times
`status.collect`: the first call reads every artifact's attributes (no index yet), the
later ones re-read only shape folders that changed since (none here):

    .venv/bin/python bench/bench_status.py --shapes 10000 --work /tmp/bench_status
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from partseg_cli import journal
from partseg_cli.pipeline import STAGE_VERSIONS
from partseg_cli.status import collect, render_text
from partseg_cli.store import STAGE_LOG, Workspace, content_key, log_commit, stat_signature

CHAIN = {"render": ["shape"], "detect": ["shape", "render"], "superpoints": ["shape"],
         "backproject": ["shape", "render", "detect"],
         "vote": ["shape", "superpoints", "backproject"]}


def group(path: Path, partseg: dict | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    attrs = {"partseg": partseg, "part_names": ["back", "seat", "leg", "arm"]} \
        if partseg else {}
    (path / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": attrs}))


def artifact(base: Path, stage: str, partseg: dict, logged: bool) -> None:
    """One stage's attribute file and, unless ``logged`` is False (a workspace of an
    older partseg), the commit-log line Workspace.write appends."""
    group(base / stage, partseg)
    if logged:
        log_commit(base / STAGE_LOG, {"stage": stage, "key": partseg["key"],
                                      "inputs": partseg.get("inputs"), "id": None,
                                      "sig": stat_signature(base / stage / "zarr.json")})


def build(work: Path, shapes: int, logged: bool) -> None:
    shutil.rmtree(work, ignore_errors=True)
    workspace = Workspace.open(work, create=True)
    group(workspace.data_root, None)
    group(workspace.data_root / "shapes", None)
    for i in range(shapes):
        sid = f"Chair_{i:05d}"
        base = workspace.data_root / "shapes" / sid
        group(base, None)
        keys = {"shape": content_key("shape", 1, {"digest": sid}, [])}
        artifact(base, "shape", {"key": keys["shape"], "stage": "shape",
                                 "params": {"digest": sid}, "created": time.time()}, logged)
        for stage, inputs in CHAIN.items():
            params = {"seed": 0, "setting": stage}
            upstream = {name: keys[name] for name in inputs}
            keys[stage] = content_key(stage, STAGE_VERSIONS[stage], params,
                                      [f"{n}:{k}" for n, k in upstream.items()])
            if stage == "detect" and i % 1000 == 7:
                upstream["render"] = "changed-since"  # stale: its render was redone
            artifact(base, stage, {"key": keys[stage], "stage": stage, "params": params,
                                   "inputs": upstream, "created": time.time()}, logged)
        if i % 2000 == 3:
            journal.record_failure(work, "vote", sid, "no knowledge units")


def cli_seconds(work: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `partseg status WORK` in a new process (imports included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "partseg_cli.cli", "status", str(work)],
                   check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-log", action="store_true",
                        help="Artifacts without commit-log lines (an older workspace).")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_status")
    args = parser.parse_args()
    start = time.perf_counter()
    build(args.work, args.shapes, logged=not args.no_log)
    print(f"built {args.shapes} shapes x 6 artifacts in {time.perf_counter() - start:.1f} s"
          f"{' (no commit logs)' if args.no_log else ''}")
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        status = collect(args.work)
        times.append(time.perf_counter() - start)
    print(render_text(status, show=3))
    print(f"status in-process: {times[0]:.2f} s first, best {min(times[1:] or times):.2f} s "
          f"after (target <= 2 s for 10,000 shapes)")
    cli = [cli_seconds(args.work) for _ in range(args.repeats)]
    print(f"`partseg status` (new process): best {min(w for w, _ in cli):.2f} s wall, "
          f"{min(c for _, c in cli):.2f} s CPU")


if __name__ == "__main__":
    main()
