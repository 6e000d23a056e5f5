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
import shutil
import tempfile
import time
from pathlib import Path

from partseg_cli import journal
from partseg_cli.pipeline import STAGE_VERSIONS
from partseg_cli.status import collect, render_text
from partseg_cli.store import Workspace, content_key

CHAIN = {"render": ["shape"], "detect": ["shape", "render"], "superpoints": ["shape"],
         "backproject": ["shape", "render", "detect"],
         "vote": ["shape", "superpoints", "backproject"]}


def group(path: Path, partseg: dict | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    attrs = {"partseg": partseg, "part_names": ["back", "seat", "leg", "arm"]} \
        if partseg else {}
    (path / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": attrs}))


def build(work: Path, shapes: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    workspace = Workspace.open(work, create=True)
    group(workspace.data_root, None)
    group(workspace.data_root / "shapes", None)
    for i in range(shapes):
        sid = f"Chair_{i:05d}"
        base = workspace.data_root / "shapes" / sid
        group(base, None)
        keys = {"shape": content_key("shape", 1, {"digest": sid}, [])}
        group(base / "shape", {"key": keys["shape"], "stage": "shape",
                               "params": {"digest": sid}, "created": time.time()})
        for stage, inputs in CHAIN.items():
            params = {"seed": 0, "setting": stage}
            upstream = {name: keys[name] for name in inputs}
            keys[stage] = content_key(stage, STAGE_VERSIONS[stage], params,
                                      [f"{n}:{k}" for n, k in upstream.items()])
            if stage == "detect" and i % 1000 == 7:
                upstream["render"] = "changed-since"  # stale: its render was redone
            group(base / stage, {"key": keys[stage], "stage": stage, "params": params,
                                 "inputs": upstream, "created": time.time()})
        if i % 2000 == 3:
            journal.record_failure(work, "vote", sid, "no knowledge units")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_status")
    args = parser.parse_args()
    start = time.perf_counter()
    build(args.work, args.shapes)
    print(f"built {args.shapes} shapes x 6 artifacts in {time.perf_counter() - start:.1f} s")
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        status = collect(args.work)
        times.append(time.perf_counter() - start)
    print(render_text(status, show=3))
    print(f"status: {times[0]:.2f} s first (every artifact read), best "
          f"{min(times[1:] or times):.2f} s after (index) (target <= 2 s for 10,000 shapes)")


if __name__ == "__main__":
    main()
