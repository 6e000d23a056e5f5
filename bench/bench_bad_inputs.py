"""Bad inputs across every command, run as a user would (one `partseg` process each).

A case passes when the exit code is the one expected (the README's: 2 bad usage or no
usable input, 1 some shapes failed and the others are done), stderr holds no traceback
and exactly the lines expected (one for a usage or input error; a partial failure's
report has one line per failed shape), and the workspace the command pointed at is
byte for byte what it was (every file's SHA-256 before and after: partseg.json, the
store and saved models; not .tmp/, .locks/ or the jobs/ journal, which records
failures by design). A command pointed at a new workspace must not create it. Cases
that damage a store on purpose work on their own copy, where the corrupt notes that a
read leaves beside the damaged artifact are the only change allowed. Every command of
`partseg --help` has at least one case (checked). Read-only and full-disk cases need
root (a tmpfs mount) and are left out otherwise.

Prints a markdown table: case, command, exit (expected), stderr lines, store unchanged,
ok, and the line partseg printed.

Run: python bench/bench_bad_inputs.py [--keep DIR] [-k TEXT]    (about 3-5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
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
    name: str
    command: list[str]
    expected: int
    store: Path | None = None  # a workspace that must come out unchanged (or not exist)
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    lines: int = 1  # stderr lines expected: one for an error, a partial report has more
    allowed: tuple[str, ...] = ()  # name suffixes of files the command may add or change


def partseg(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PARTSEG_NO_PROGRESS="1",
               PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "partseg_cli.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


NOT_STORED = {".tmp", ".locks", "jobs"}  # scratch, locks, the failure journal


def snapshot(root: Path | None, allowed: tuple[str, ...] = ()) -> dict[str, str] | None:
    """SHA-256 of every stored file of the workspace ``root`` (None when it does not exist)."""
    if root is None or not root.exists():
        return None
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and not NOT_STORED & set(p.relative_to(root).parts[:1])
            and not p.name.endswith(allowed)}


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
    f["pred_strings"] = d / "pred_strings.npy"
    np.save(f["pred_strings"], np.array(["seat"] * 500))
    f["pred_text_float"] = d / "pred_float.txt"
    f["pred_text_float"].write_text("0\n1.5\n" * 250)
    f["pred_npz2"] = d / "pred_npz2.npy"
    np.savez(d / "pred_npz2_src.npz", a=np.zeros(500, np.int64), b=np.zeros(500, np.int64))
    os.replace(d / "pred_npz2_src.npz", f["pred_npz2"])
    f["pred_dir"] = d / "pred_dir"
    f["pred_dir"].mkdir()
    (f["pred_dir"] / "Chair_chair0.txt").write_text("0\n1\n")
    f["garbage_pt"] = d / "encoder.pt"
    f["garbage_pt"].write_bytes(b"not a checkpoint at all" * 20)
    f["random_pt"] = d / "random.pt"
    f["random_pt"].write_bytes(np.random.default_rng(2).bytes(3000))
    f["empty_pt"] = d / "empty.pt"
    f["empty_pt"].write_bytes(b"")
    f["pickle_pt"] = d / "objects.pt"
    with open(f["pickle_pt"], "wb") as handle:
        pickle.dump(Evil(str(f["pwned"])), handle, protocol=4)
    f["garbage_model"] = d / "garbage_model"
    f["garbage_model"].mkdir()
    for name in ("model.json", "weights.safetensors"):
        (f["garbage_model"] / name).write_bytes(np.random.default_rng(3).bytes(2000))
    f["a_file"] = d / "a_file"
    f["a_file"].write_text("x")
    f["not_ws"] = d / "not_a_workspace"
    f["not_ws"].mkdir()
    (f["not_ws"] / "notes.txt").write_text("mine")
    return f


def cases(d: Path, w: Path, f: dict[str, Path], root_ok: bool) -> list[Case]:
    new = d / "new_ws"  # must never be created by a refused command
    n = str(new)
    chair = str(CHAIRS / "chair0.off")

    def render(name: str, *args: str) -> Case:
        return Case(name, ["render", *args], 2, new)

    def on_w(name: str, *args: str, expected: int = 2) -> Case:
        return Case(name, list(args), expected, w)

    c = [
        render("missing input file", str(d / "missing.off"), "--work", n),
        render("empty OFF", str(f["empty_off"]), "--work", n),
        render("random bytes as PLY", str(f["garbage_ply"]), "--work", n),
        render("zero-byte .npy", str(f["zero_npy"]), "--work", n),
        render("empty (0, 3) cloud", str(f["empty_npy"]), "--work", n),
        render("empty .npz", str(f["empty_npz"]), "--work", n),
        render("coordinates near 1e300", str(f["huge_xyz"]), "--work", n),
        render("all points equal", str(f["flat_xyz"]), "--work", n),
        render("PartNetE label.npy pickle that runs code", str(f["partnete"]), "--work", n),
        render("string-valued label.npy", str(f["strings"]), "--work", n),
        render("--views 0", chair, "--work", n, "--views", "0"),
        render("--views not a number", chair, "--work", n, "--views", "four"),
        render("--resolution 0", chair, "--work", n, "--resolution", "0"),
        render("--resolution negative", chair, "--work", n, "--resolution", "-5"),
        render("--points 0", chair, "--work", n, "--points", "0"),
        render("--radius nan", chair, "--work", n, "--radius", "nan"),
        render("--elevations of the wrong count", chair, "--work", n, "--views", "3",
               "--elevations", "1,2"),
        render("--azimuths not numbers", chair, "--work", n, "--azimuths", "a,b"),
        render("unknown --backend", chair, "--work", n, "--backend", "sqlite"),
        render("unknown --device", chair, "--work", n, "--device", "foo"),
        render("--shard out of range", chair, "--work", n, "--shard", "5/2"),
        render("unknown option", chair, "--work", n, "--no-such-option"),
        Case("--work is a folder that is not a workspace",
             ["render", chair, "--work", str(f["not_ws"])], 2, f["not_ws"]),
        Case("--work is a file", ["render", chair, "--work", str(f["a_file"])], 2),
        on_w("--backend other than the workspace's", "render", chair, "--work", str(w),
             "--backend", "hdf5"),
        Case("one bad shape among good ones (partial failure)",
             ["render", str(f["mixed"]), "--work", str(d / "mixed_ws"), *SMALL], 1, lines=4),
        on_w("--threshold not a number", "detect", str(w), "--threshold", "abc"),
        on_w("unknown teacher", "detect", str(w), "--teacher", "gpt5"),
        on_w("unknown --preset", "detect", str(w), "--teacher", "simulated", "--preset",
             "noisy"),
        on_w("--parts empty names", "detect", str(w), "--teacher", "simulated", "--parts", ",,"),
        on_w("--parts duplicate names", "detect", str(w), "--teacher", "simulated", "--parts",
             "arm,arm,leg"),
        on_w("--parts matching none of the shape's", "detect", str(w), "--teacher",
             "simulated", "--parts", "foo,bar"),
        on_w("--batch-size 0", "detect", str(w), "--teacher", "simulated", "--batch-size", "0"),
        on_w("--model folder missing", "detect", str(w), "--teacher", "owlv2", "--model",
             str(d / "no_model")),
        on_w("trained teacher: random bytes as model folder", "detect", str(w), "--teacher",
             "trained", "--model", str(f["random_pt"])),
        on_w("trained teacher: model folder of garbage", "detect", str(w), "--teacher",
             "trained", "--model", str(f["garbage_model"])),
        Case("workspace missing", ["detect", str(d / "missing_ws")], 2),
        on_w("--shape-id matching nothing", "detect", str(w), "--shape-id", "nothing*"),
        on_w("missing SAM model", "sam-refine", str(w), "--model", str(d / "no_sam")),
        on_w("SAM checkpoint of random bytes", "sam-refine", str(w), "--checkpoint",
             str(f["random_pt"])),
        on_w("--k 0", "superpoints", str(w), "--k", "0"),
        on_w("--regularization nan", "superpoints", str(w), "--regularization", "nan"),
        on_w("unknown --source", "backproject", str(w), "--source", "lasers"),
        on_w("--whole-object-fraction 2", "backproject", str(w), "--whole-object-fraction", "2"),
        on_w("--threshold nan", "vote", str(w), "--threshold", "nan"),
        on_w("--threshold negative", "vote", str(w), "--threshold", "-0.5"),
        on_w("--epochs 0", "distill", str(w), "--epochs", "0"),
        on_w("--lr nan", "distill", str(w), "--lr", "nan"),
        on_w("unknown --mode", "distill", str(w), "--mode", "best"),
        on_w("encoder checkpoint of text", "distill", str(w), "--encoder", "pointnet",
             "--encoder-checkpoint", str(f["garbage_pt"])),
        on_w("encoder checkpoint of random bytes", "distill", str(w), "--encoder", "pointnet",
             "--encoder-checkpoint", str(f["random_pt"])),
        on_w("encoder checkpoint of zero bytes", "distill", str(w), "--encoder", "pointnet",
             "--encoder-checkpoint", str(f["empty_pt"])),
        on_w("encoder checkpoint pickling objects", "distill", str(w), "--encoder", "pointnet",
             "--encoder-checkpoint", str(f["pickle_pt"])),
        on_w("student: a file of random bytes", "distill", str(w), "--mode", "pre",
             "--student", str(f["random_pt"])),
        on_w("student: model folder of garbage", "distill", str(w), "--mode", "pre",
             "--student", str(f["garbage_model"])),
        on_w("unknown --bd-weighting", "distill", str(w), "--bd-weighting", "mean"),
        on_w("--tau negative", "distill", str(w), "--tau", "-1"),
        on_w("--device cuda:7 without a GPU", "distill", str(w), "--device", "cuda:7"),
        on_w("an option it does not have", "rescore", str(w), "--epochs", "-1"),
        on_w("unknown --method", "adapt", str(w), "--method", "magic"),
        on_w("--epochs 0", "adapt", str(w), "--epochs", "0", "--train-ids", "*"),
        on_w("--apply a file of random bytes", "adapt", str(w), "--method", "bipart",
             "--apply", str(f["random_pt"])),
        on_w("unknown --method", "evaluate", str(w), "--method", "nosuch"),
        on_w("--pred missing", "evaluate", str(w), "--pred", str(d / "missing.npy")),
        on_w("--pred npz of one array named .npy (read by content)", "evaluate", str(w),
             "--pred", str(f["pred_npz"]), expected=0),
        on_w("--pred npz of two arrays named .npy", "evaluate", str(w), "--pred",
             str(f["pred_npz2"])),
        on_w("--pred fractions", "evaluate", str(w), "--pred", str(f["pred_float"])),
        on_w("--pred fractions in text", "evaluate", str(w), "--pred",
             str(f["pred_text_float"])),
        on_w("--pred strings", "evaluate", str(w), "--pred", str(f["pred_strings"])),
        on_w("--pred of the wrong length", "evaluate", str(w), "--pred", str(f["pred_short"])),
        on_w("--pred folder, file of the wrong length", "evaluate", str(w), "--pred",
             str(f["pred_dir"])),
        on_w("--json into a missing folder", "evaluate", str(w), "--json",
             str(d / "no_dir" / "r.json")),
        on_w("unknown --convention", "evaluate", str(w), "--convention", "coco"),
        on_w("--out is a file", "export", str(w), "--out", str(f["a_file"])),
        on_w("unknown --method", "export", str(w), "--out", str(d / "exp"), "--method",
             "nosuch"),
        on_w("--size 0", "show", str(w), "--out", str(d / "pics"), "--size", "0"),
        on_w("--view the shape lacks", "show", str(w), "--out", str(d / "pics"), "--view",
             "99"),
        on_w("unknown --method", "show", str(w), "--out", str(d / "pics"), "--method",
             "nosuch"),
        on_w("unknown --convention", "report", str(w), "--out", str(d / "r.html"),
             "--convention", "coco"),
        on_w("--max-pictures negative", "report", str(w), "--out", str(d / "r.html"),
             "--max-pictures", "-1"),
        on_w("--out is a folder", "report", str(w), "--out", str(f["not_ws"])),
        on_w("unknown --method", "report", str(w), "--out", str(d / "r.html"), "--method",
             "nosuch"),
        Case("workspace missing", ["report", str(d / "missing_ws"), "--out",
                                   str(d / "r.html")], 2),
        Case("workspace missing", ["status", str(d / "missing_ws")], 2),
        Case("a folder that is not a workspace", ["status", str(f["not_ws"])], 2, f["not_ws"]),
        Case("workspace missing", ["inspect", str(d / "missing_ws")], 2),
        Case("--epochs 0", ["train-teacher", str(CHAIRS), "--out", str(d / "teacher"),
                            "--epochs", "0"], 2),
        Case("--input-size 0", ["train-teacher", str(CHAIRS), "--out", str(d / "teacher"),
                                "--input-size", "0"], 2),
        on_w("--distill not a mode", "run", chair, "--work", str(w), "--distill", "maybe"),
        Case("unknown command", ["segment", str(w)], 2, w),
        Case("no command", [], 2),
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

    corrupt = (".corrupt",)  # the note a read leaves beside a damaged artifact
    c.append(Case("a deleted zarr chunk", ["vote", str(chunked), "--force"], 2, chunked,
                  setup=delete_chunk, allowed=corrupt))
    c.append(Case("a corrupt zarr.json", ["evaluate", str(corrupt_meta)], 2, corrupt_meta,
                  setup=corrupt_zarr_json, allowed=corrupt))
    c.append(Case("a corrupt zarr.json (listed, exit 1)", ["inspect", str(corrupt_meta)], 1,
                  corrupt_meta, allowed=corrupt))
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

        c.append(Case("full disk", ["render", chair, "--work", str(mount / "full_ws"),
                                    "--views", "6", "--resolution", "256"], 2,
                      setup=full_disk, teardown=unmount))
        c.append(Case("read-only workspace", ["vote", str(mount / "ro_ws"), "--force"], 2,
                      mount / "ro_ws", setup=read_only))
        c.append(Case("--json into a read-only folder",
                      ["evaluate", str(mount / "ro_ws"), "--json",
                       str(mount / "ro_ws" / "r.json")], 2, mount / "ro_ws"))
        c.append(Case("--out on a read-only file system",
                      ["export", str(mount / "ro_ws"), "--out", str(mount / "exp")], 2,
                      mount / "ro_ws"))
        c.append(Case("new workspace on a read-only file system",
                      ["render", chair, "--work", str(mount / "new_ws")], 2,
                      mount / "new_ws", teardown=unmount))
    return c


def commands() -> list[str]:
    """The commands `partseg --help` lists (from the typer app it is made from)."""
    import typer

    sys.path.insert(0, str(REPO))
    from partseg_cli import cli

    return sorted(typer.main.get_command(cli.app).commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("-k", dest="only", help="run only the cases whose name or command "
                        "contains this text (while fixing one)")
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
    uncovered = sorted(set(commands()) - {c.command[0] for c in all_cases if c.command})
    if uncovered:
        sys.exit(f"no case for the command(s) {', '.join(uncovered)}: add some")
    if args.only:
        all_cases = [c for c in all_cases if args.only in f"{c.name} {' '.join(c.command)}"]

    def short(text: str) -> str:
        return text.replace(str(d), "D").replace(str(REPO), ".").replace("|", "\\|")

    rows, passed = [], 0
    for i, case in enumerate(all_cases, 1):
        if case.setup:
            case.setup()
        before = snapshot(case.store, case.allowed)
        result = partseg(case.command)
        after = snapshot(case.store, case.allowed)
        if case.teardown:
            case.teardown()
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        shown = lines[0] if len(lines) == 1 else " / ".join(lines[-2:])
        problems = []
        if result.returncode != case.expected:
            problems.append(f"exit {result.returncode}")
        if "Traceback" in result.stderr:
            problems.append("traceback")
        if len(lines) != (case.lines if case.expected else 0):
            problems.append(f"{len(lines)} lines")
        unchanged = before == after
        if not unchanged:
            problems.append("store changed" if before is not None else "workspace created")
        if files["pwned"].exists():
            problems.append("pickle ran code")
        passed += not problems
        command = short("partseg " + " ".join(case.command))
        store = "n/a" if case.store is None else "yes" if unchanged else "NO"
        rows.append(f"| {i} | {case.name} | `{command}` | {result.returncode} "
                    f"({case.expected}) | {len(lines)} | {store} | "
                    f"{'ok' if not problems else 'FAIL: ' + ', '.join(problems)} | "
                    f"{short(shown)} |")
    print("| # | case | command | exit (expected) | stderr lines | store unchanged | ok | "
          "what partseg printed |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    covered = len({c.command[0] for c in all_cases if c.command})
    print(f"\n{passed}/{len(all_cases)} cases pass (exit code, stderr lines, no traceback, "
          f"store unchanged) over {covered} commands and bare `partseg`; "
          f"{time.time() - start:.0f} s; D = {d}, . = the repository")
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
