"""Start-up cost: `--help`, `inspect`, a fully cached `run` and a cached `distill` (test-time
or pre-alignment) never import the heavy libraries (torch, transformers, open3d, scipy,
cc3d, zarr); only stages that compute do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "open3d", "scipy", "cc3d", "trimesh", "cv2", "zarr")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "toy_chairs"
# Runs the CLI in this process, then prints which heavy modules it had imported.
PROBE = ("import sys\nfrom partseg_cli import cli\ntry:\n    cli.main(sys.argv[1:])\n"
         "except SystemExit as exc:\n    code = exc.code\n"
         f"print('HEAVY', *sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
         "sys.exit(code)\n")


def imported_heavy(*args: str) -> tuple[list[str], str]:
    env = dict(os.environ, PARTSEG_NO_PROGRESS="1")
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stdout.splitlines() if x.startswith("HEAVY")][-1]
    return line.split()[1:], done.stderr


def test_help_inspect_and_cached_run_import_no_heavy_library(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "ws"
    shutil.copytree(EXAMPLES, data)
    run = ["run", str(data), "--work", str(work), "--teacher", "simulated", "--views", "2",
           "--resolution", "96", "--points", "1000"]
    first, _ = imported_heavy(*run)
    assert "scipy" in first  # computing does need them: the probe sees imports
    assert imported_heavy("--help")[0] == []
    assert imported_heavy("inspect", str(work))[0] == []
    cached, err = imported_heavy(*run)
    assert "vote: 0 computed, 4 cached" in err
    assert cached == []
    distill = ["distill", str(work), "--epochs", "1", "--no-backward"]
    assert "torch" in imported_heavy(*distill)[0]
    cached, err = imported_heavy(*distill)
    assert "distill: 0 computed, 4 cached" in err and cached == []
    # pre-alignment: the saved student's model.json tells it is current, no weights load
    pre = ["distill", str(work), "--mode", "pre", "--epochs", "1", "--no-backward",
           "--output", "pre"]
    assert "torch" in imported_heavy(*pre)[0]
    cached, err = imported_heavy(*pre)
    assert "distill.pre (student): 0 computed, 4 cached" in err and cached == [], err
    [student] = (work / "students").iterdir()
    apply = ["distill", str(work), "--mode", "pre", "--student", str(student), "--output",
             "applied"]  # a saved student applied as it is
    assert "torch" in imported_heavy(*apply)[0]
    cached, err = imported_heavy(*apply)
    assert "distill.applied: 0 computed, 4 cached" in err and cached == [], err
