"""Bad inputs across every command, run as a user would (one `partseg` process each).

For each case it prints the command, the exit code (and the one expected), and the one
line partseg printed; a case passes when the exit code is the expected one, stderr has
no traceback, a usage or input error is exactly one line, and the workspace the
command pointed at is unchanged (the cases that damage a store on purpose use their
own copy). The README's exit codes: 2 bad usage or no usable input, 1 some shapes
failed and the others are done. Read-only and full-disk cases need root (a tmpfs mount)
and are left out otherwise.

Run: python bench/bench_bad_inputs.py [--keep DIR]    (about 2-4 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHAIRS = REPO / "examples" / "toy_chairs" / "Chair"
SMALL = ["--views", "2", "--resolution", "64", "--points", "500"]


@dataclass
class Case:
    command: list[str]
    expected: int
    store: Path | None = None  # a workspace that must come out unchanged
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None


def partseg(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PARTSEG_NO_PROGRESS="1",
               PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "partseg_cli.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(root: Path | None) -> dict[str, tuple[int, int]]:
    if root is None or not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts}


class Evil:
    """A pickle that would create a file when loaded (it must never run)."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def make_files(d: Path) -> dict[str, Path]:
    f: dict[str, Path] = {}
    f["empty_off"] = d / "empty.off"
    f["empty_off"].write_text("")
    f["garbage_ply"] = d / "garbage.ply"
    f["garbage_ply"].write_bytes(np.random.default_rng(0).bytes(4000))
    f["zero_npy"] = d / "zero_bytes.npy"
    f["zero_npy"].write_bytes(b"")
    f["empty_npy"] = d / "empty_cloud.npy"
    np.save(f["empty_npy"], np.zeros((0, 3), np.float32))
    f["empty_npz"] = d / "empty.npz"
    np.savez(f["empty_npz"])
    f["huge_xyz"] = d / "huge.xyz"
    rng = np.random.default_rng(1)
    np.savetxt(f["huge_xyz"], rng.normal(size=(200, 3)) * 1e300)
    f["flat_xyz"] = d / "one_point.xyz"
    np.savetxt(f["flat_xyz"], np.ones((50, 3)))
    partnete = d / "partnete" / "Chair" / "1"
    partnete.mkdir(parents=True)
    pts = rng.normal(size=(100, 3))
    (partnete / "pc.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 100\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n" + "\n".join(" ".join(map(str, p)) for p in pts) + "\n")
    f["pwned"] = d / "pwned"
    with open(partnete / "label.npy", "wb") as handle:
        pickle.dump({"semantic_seg": Evil(str(f["pwned"]))}, handle)
    f["partnete"] = d / "partnete"
    strings = d / "strings" / "Chair" / "1"
    strings.mkdir(parents=True)
    shutil.copy(partnete / "pc.ply", strings / "pc.ply")
    np.save(strings / "label.npy", np.array(["a"] * 100))
    f["strings"] = d / "strings"
    mixed = d / "mixed"
    mixed.mkdir()
    shutil.copy(CHAIRS / "chair0.off", mixed / "chair0.off")
    (mixed / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n")
    f["mixed"] = mixed
    f["pred_float"] = d / "pred_float.npy"
    np.save(f["pred_float"], np.full(500, 0.7))
    f["pred_npz"] = d / "pred_npz.npy"
    np.savez(d / "pred_npz_src.npz", labels=np.zeros(500, np.int64))
    os.replace(d / "pred_npz_src.npz", f["pred_npz"])
    f["pred_short"] = d / "pred_short.npy"
    np.save(f["pred_short"], np.zeros(7, np.int64))
    f["garbage_pt"] = d / "encoder.pt"
    f["garbage_pt"].write_bytes(b"not a checkpoint at all" * 20)
    f["a_file"] = d / "a_file"
    f["a_file"].write_text("x")
    f["not_ws"] = d / "not_a_workspace"
    f["not_ws"].mkdir()
    (f["not_ws"] / "notes.txt").write_text("mine")
    return f


def cases(d: Path, w: Path, f: dict[str, Path], root_ok: bool) -> list[Case]:
    new = str(d / "new_ws")
    chair = str(CHAIRS / "chair0.off")
    c = [
        Case(["render", str(d / "missing.off"), "--work", new], 2),
        Case(["render", str(f["empty_off"]), "--work", new], 2),
        Case(["render", str(f["garbage_ply"]), "--work", new], 2),
        Case(["render", str(f["zero_npy"]), "--work", new], 2),
        Case(["render", str(f["empty_npy"]), "--work", new], 2),
        Case(["render", str(f["empty_npz"]), "--work", new], 2),
        Case(["render", str(f["huge_xyz"]), "--work", new], 2),
        Case(["render", str(f["flat_xyz"]), "--work", new], 2),
        Case(["render", str(f["partnete"]), "--work", new], 2),
        Case(["render", str(f["strings"]), "--work", new], 2),
        Case(["render", chair, "--work", new, "--views", "0"], 2),
        Case(["render", chair, "--work", new, "--views", "four"], 2),
        Case(["render", chair, "--work", new, "--resolution", "0"], 2),
        Case(["render", chair, "--work", new, "--resolution", "-5"], 2),
        Case(["render", chair, "--work", new, "--points", "0"], 2),
        Case(["render", chair, "--work", new, "--radius", "nan"], 2),
        Case(["render", chair, "--work", new, "--views", "3", "--elevations", "1,2"], 2),
        Case(["render", chair, "--work", new, "--azimuths", "a,b"], 2),
        Case(["render", chair, "--work", new, "--backend", "sqlite"], 2),
        Case(["render", chair, "--work", new, "--device", "foo"], 2),
        Case(["render", chair, "--work", str(f["not_ws"])], 2),
        Case(["render", chair, "--work", str(f["a_file"])], 2),
        Case(["render", chair, "--work", new, "--shard", "5/2"], 2),
        Case(["render", chair, "--work", str(w), "--backend", "hdf5"], 2, w),
        Case(["render", str(f["mixed"]), "--work", str(d / "mixed_ws"), *SMALL], 1),
        Case(["detect", str(w), "--threshold", "abc"], 2, w),
        Case(["detect", str(w), "--teacher", "gpt5"], 2, w),
        Case(["detect", str(w), "--teacher", "simulated", "--preset", "noisy"], 2, w),
        Case(["detect", str(w), "--teacher", "simulated", "--parts", ",,"], 2, w),
        Case(["detect", str(w), "--teacher", "simulated", "--parts", "arm,arm,leg"], 2, w),
        Case(["detect", str(w), "--teacher", "simulated", "--parts", "foo,bar"], 2, w),
        Case(["detect", str(w), "--teacher", "simulated", "--batch-size", "0"], 2, w),
        Case(["detect", str(w), "--teacher", "owlv2", "--model", str(d / "no_model")], 2, w),
        Case(["detect", str(d / "missing_ws")], 2),
        Case(["detect", str(w), "--shape-id", "nothing*"], 2, w),
        Case(["sam-refine", str(w), "--model", str(d / "no_sam")], 2, w),
        Case(["superpoints", str(w), "--k", "0"], 2, w),
        Case(["superpoints", str(w), "--regularization", "nan"], 2, w),
        Case(["backproject", str(w), "--source", "lasers"], 2, w),
        Case(["backproject", str(w), "--whole-object-fraction", "2"], 2, w),
        Case(["vote", str(w), "--threshold", "nan"], 2, w),
        Case(["vote", str(w), "--threshold", "-0.5"], 2, w),
        Case(["distill", str(w), "--epochs", "0"], 2, w),
        Case(["distill", str(w), "--lr", "nan"], 2, w),
        Case(["distill", str(w), "--mode", "best"], 2, w),
        Case(["distill", str(w), "--encoder", "pointnet", "--encoder-checkpoint",
              str(f["garbage_pt"])], 2, w),
        Case(["distill", str(w), "--bd-weighting", "mean"], 2, w),
        Case(["distill", str(w), "--tau", "-1"], 2, w),
        Case(["distill", str(w), "--device", "cuda:7"], 2, w),
        Case(["rescore", str(w), "--epochs", "-1"], 2, w),
        Case(["adapt", str(w), "--method", "magic"], 2, w),
        Case(["adapt", str(w), "--epochs", "0", "--train-ids", "*"], 2, w),
        Case(["evaluate", str(w), "--method", "nosuch"], 2, w),
        Case(["evaluate", str(w), "--pred", str(d / "missing.npy")], 2, w),
        Case(["evaluate", str(w), "--pred", str(f["pred_npz"])], 2, w),
        Case(["evaluate", str(w), "--pred", str(f["pred_float"])], 2, w),
        Case(["evaluate", str(w), "--pred", str(f["pred_short"])], 2, w),
        Case(["evaluate", str(w), "--json", str(d / "no_dir" / "r.json")], 2, w),
        Case(["evaluate", str(w), "--convention", "coco"], 2, w),
        Case(["export", str(w), "--out", str(f["a_file"])], 2, w),
        Case(["export", str(w), "--out", str(d / "exp"), "--method", "nosuch"], 2, w),
        Case(["show", str(w), "--out", str(d / "pics"), "--size", "0"], 2, w),
        Case(["inspect", str(d / "missing_ws")], 2),
        Case(["train-teacher", str(CHAIRS), "--out", str(d / "teacher"), "--epochs", "0"], 2),
        Case(["train-teacher", str(CHAIRS), "--out", str(d / "teacher"),
              "--input-size", "0"], 2),
        Case(["run", chair, "--work", str(w), "--distill", "maybe"], 2, w),
        Case(["segment", str(w)], 2, w),
        Case([], 2),
    ]
    # damaged stores (their own copies): one line, and the next run recomputes
    chunked = d / "chunk_ws"
    corrupt_meta = d / "meta_ws"

    def delete_chunk() -> None:
        shutil.copytree(w, chunked)
        chunk = next((chunked / "store.zarr" / "shapes").glob("*/backproject/labels/c/*"))
        chunk.unlink()

    def corrupt_zarr_json() -> None:
        shutil.copytree(w, corrupt_meta)
        meta = next((corrupt_meta / "store.zarr" / "shapes").glob("*/vote/zarr.json"))
        meta.write_text("{ not json")

    c.append(Case(["vote", str(chunked), "--force"], 2, setup=delete_chunk))
    c.append(Case(["evaluate", str(corrupt_meta)], 2, setup=corrupt_zarr_json))
    c.append(Case(["inspect", str(corrupt_meta)], 1))
    if root_ok:
        mount = d / "mnt"
        mount.mkdir()

        def full_disk() -> None:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                           check=True)

        def read_only() -> None:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                           check=True)
            shutil.copytree(w, mount / "ro_ws")
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

        def unmount() -> None:
            subprocess.run(["umount", str(mount)], check=True)

        c.append(Case(["render", chair, "--work", str(mount / "full_ws"), "--views", "6",
                       "--resolution", "256"], 2, setup=full_disk, teardown=unmount))
        c.append(Case(["vote", str(mount / "ro_ws"), "--force"], 2, mount / "ro_ws",
                      setup=read_only))
        c.append(Case(["evaluate", str(mount / "ro_ws"), "--json",
                       str(mount / "ro_ws" / "r.json")], 2, mount / "ro_ws"))
        c.append(Case(["export", str(mount / "ro_ws"), "--out", str(mount / "exp")], 2,
                       mount / "ro_ws"))
        c.append(Case(["render", chair, "--work", str(mount / "new_ws")], 2,
                      teardown=unmount))
    return c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    d = args.keep or Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    d.mkdir(parents=True, exist_ok=True)
    w = d / "ws"
    start = time.time()
    made = partseg(["run", str(CHAIRS / "chair0.off"), "--work", str(w), "--teacher",
                    "simulated", "--parts", "back,seat,leg,arm", *SMALL])
    if made.returncode != 0:
        sys.exit(f"could not make the workspace: {made.stderr}")
    files = make_files(d)
    all_cases = cases(d, w, files, os.geteuid() == 0)
    rows, passed = [], 0
    for i, case in enumerate(all_cases, 1):
        if case.setup:
            case.setup()
        before = snapshot(case.store)
        result = partseg(case.command)
        after = snapshot(case.store)
        if case.teardown:
            case.teardown()
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        shown = lines[0] if len(lines) == 1 else " / ".join(lines[-2:])
        problems = []
        if result.returncode != case.expected:
            problems.append(f"exit {result.returncode}")
        if "Traceback" in result.stderr:
            problems.append("traceback")
        if case.expected == 2 and len(lines) != 1:
            problems.append(f"{len(lines)} lines")
        if before != after:
            problems.append("store changed")
        if files["pwned"].exists():
            problems.append("pickle ran code")
        passed += not problems
        command = "partseg " + " ".join(a.replace(str(d), "D").replace(str(REPO), ".")
                                        for a in case.command)
        shown = shown.replace(str(d), "D").replace(str(REPO), ".")
        rows.append(f"| {i} | `{command}` | {result.returncode} | {case.expected} | "
                    f"{'ok' if not problems else 'FAIL: ' + ', '.join(problems)} | {shown} |")
    print("| # | command | exit | expected | check | what partseg printed |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{passed}/{len(all_cases)} cases pass (exit code, one line, no traceback, "
          f"store unchanged); {time.time() - start:.0f} s; D = {d}")
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
