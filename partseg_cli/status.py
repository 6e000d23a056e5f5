"""`partseg status`: what a (large) workspace holds and lacks, and its jobs.

Per stage: how many shapes hold a fresh output, a stale one (an input it was computed
from changed since), none, or a recorded failure
(journal.py, with its one-line reason and log). Then the jobs of the last submission
(`--executor`): done, failed (with their log), running or pending (squeue, where
SLURM is there), ended without a word (killed).

Speed: per shape folder it reads the commit log (store.py: one line per commit with
the artifact's key, inputs and the identity of its metadata file) and stats each
artifact's metadata file; only an artifact no line matches (older partseg, a copied
workspace, a changed file) has its small JSON attribute file read, never an array. It
compares each artifact's recorded input keys with the keys stored now. An index
(jobs/status-index.json) keeps what it read per shape folder and its mtime, so a later
status re-reads only the shapes that changed (bench/bench_status.py: 10,000 shapes,
60,000 artifacts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import journal
from .errors import CorruptError, StoreError, first_line
from .pipeline import STAGE_VERSIONS
from .store import CORRUPT_SUFFIX, STAGE_LOG, Workspace, read_stage_log, shape_scope

KILLED = "ended without a result (killed or cancelled; see the log)"


@dataclass
class StageCounts:
    done: int = 0
    stale: list[str] = field(default_factory=list)
    missing: int = 0
    failed: int = 0
    corrupt: list[str] = field(default_factory=list)


# the info of an artifact whose metadata cannot be decoded or that a read found corrupt:
# it exists, so it is not "missing", and its stage recomputes it
CORRUPT = {"corrupt": True}


def _read_small(path: str) -> bytes:
    # os.open/os.read: a third of io.open's cost, which dominates at 10,000 shapes
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def _artifact_infos(workspace: Workspace, shape_dir: str) -> dict[str, dict[str, Any]]:
    """stage -> provenance of one shape folder's artifacts: from its commit log
    (store.py) where a line matches the artifact's metadata file (inode, size, mtime),
    else from that file itself; CORRUPT where it cannot be decoded or a read marked it."""
    logged = read_stage_log(f"{shape_dir}/{STAGE_LOG}")
    suffix = ".h5" if workspace.backend_name == "hdf5" else ""
    infos, marked = {}, {}
    with os.scandir(shape_dir) as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(CORRUPT_SUFFIX):  # rare: read only when there
                stage = name.removesuffix(CORRUPT_SUFFIX).removesuffix(suffix)
                marked[stage] = _read_json(entry.path)
                continue
            if suffix:
                if not name.endswith(suffix) or not entry.is_file():
                    continue
                stage, meta_path = name[: -len(suffix)], entry.path
            elif entry.is_dir():
                stage, meta_path = name, f"{entry.path}/zarr.json"
            else:
                continue  # the group's zarr.json, the commit log
            try:
                st = os.stat(meta_path)
            except OSError:
                continue  # being replaced right now: counts as missing
            line = logged.get((stage, (st.st_ino, st.st_size, st.st_mtime_ns)))
            if line is not None:
                infos[stage] = line
            elif suffix:  # hdf5: one small attribute read, slower but the same answer
                infos[stage] = _hdf5_info(workspace, f"shapes/{os.path.basename(shape_dir)}",
                                          stage)
            else:
                try:
                    data = _read_small(meta_path)
                except OSError:
                    continue
                try:
                    infos[stage] = json.loads(data).get("attributes", {}).get("partseg") or {}
                except (ValueError, AttributeError):
                    # committed folders are renamed into place whole, so this is damage,
                    # not a write in progress
                    infos[stage] = CORRUPT
    for stage, note in marked.items():  # as Workspace.info: a note about an older version
        if stage in infos and (not isinstance(note, dict)  # does not apply, an unreadable
                               or note.get("id") == infos[stage].get("id")):  # one does
            infos[stage] = CORRUPT
    return {stage: CORRUPT if i.get("corrupt") else {"key": i.get("key"),
                                                     "inputs": i.get("inputs")}
            for stage, i in infos.items()}


def _read_json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _is_stale(info: dict[str, Any], keys: dict[str, str | None],
              unknown: Collection[str] = ()) -> bool:
    """Whether an input the artifact was computed from has changed since (artifacts
    written before inputs were recorded, or by collection stages, never count; nor do
    inputs in ``unknown``, corrupt ones whose key cannot be read)."""
    inputs = info.get("inputs")
    return inputs is not None and any(keys.get(name) != key for name, key in inputs.items()
                                      if name not in unknown)


def _hdf5_info(workspace: Workspace, scope: str, stage: str) -> dict[str, Any]:
    try:
        return workspace.info(scope, stage) or {}
    except CorruptError:
        return CORRUPT


def _read_index(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _shapes(workspace: Workspace) -> dict[str, dict[str, dict[str, Any]]]:
    """shape id -> stage -> {key, inputs}, re-read only for the shapes whose folder
    changed since the last status: committing or replacing an artifact renames entries
    in its shape's folder, which changes that folder's mtime. Entries younger than two
    seconds are not trusted to the index (file systems with coarse mtimes)."""
    base = workspace.data_root / "shapes"
    if not base.is_dir():
        return {}
    index_path = workspace.root / journal.JOBS / "status-index.json"
    index = _read_index(index_path)
    fresh_before = (time.time() - 2) * 1e9
    shapes, kept, changed = {}, {}, False
    with os.scandir(base) as entries:
        for entry in entries:
            if not entry.is_dir():
                continue
            mtime = entry.stat().st_mtime_ns
            cached = index.get(entry.name)
            if cached is not None and cached["m"] == mtime:
                infos = cached["s"]
            else:
                infos = _artifact_infos(workspace, entry.path)
                changed = True
            shapes[entry.name] = infos
            if mtime < fresh_before:
                kept[entry.name] = {"m": mtime, "s": infos}
            else:
                changed = True
    if changed or kept.keys() != index.keys():
        try:
            journal.write_json_atomic(index_path, kept)
        except OSError:
            pass  # a read-only workspace: status still works, only slower next time
    return dict(sorted(shapes.items()))


def verify(workspace: Workspace) -> dict[str, Any]:
    """Read every stored artifact whole, each array checked against the checksum its
    writer recorded (`Workspace.read`): what `status` alone, which stats metadata
    files, cannot see (a chunk changed in place keeps its size). A damaged artifact is
    marked corrupt, so its stage recomputes it and status counts it; missing or damaged
    zarr group metadata is rewritten (`Workspace.check_groups`). Returns how many
    artifacts were read and one line per damaged one."""
    scopes = [shape_scope(s) for s in workspace.shape_ids()]
    collections = workspace.data_root / "collections"
    if collections.is_dir():
        scopes += [f"collections/{p.name}" for p in sorted(collections.iterdir())
                   if p.is_dir()]
    checked, damaged = 0, []
    for scope in scopes:
        for stage in workspace.stages(scope):
            checked += 1
            try:
                workspace.read(scope, stage)
            except (CorruptError, StoreError) as exc:
                damaged.append(first_line(exc))
    return {"artifacts": checked, "damaged": damaged, "groups": workspace.check_groups()}


def collect(root: Path, check: bool = False) -> dict[str, Any]:
    """The status of the workspace at ``root`` as a JSON-ready dict; with ``check`` a
    `verify` pass first (its findings under "verify")."""
    workspace = Workspace.open(root)
    verified = verify(workspace) if check else None
    shapes = _shapes(workspace)
    counts: dict[str, StageCounts] = {}
    held: dict[str, int] = {}
    for shape_id, infos in shapes.items():
        corrupt = {stage for stage, info in infos.items() if info.get("corrupt")}
        keys = {stage: info.get("key") for stage, info in infos.items()}
        for stage, info in infos.items():
            entry = counts.setdefault(stage, StageCounts())
            held[stage] = held.get(stage, 0) + 1
            if stage in corrupt:
                entry.corrupt.append(shape_id)
            elif _is_stale(info, keys, corrupt):
                entry.stale.append(shape_id)
            else:
                entry.done += 1
    failed = journal.failures(root)
    for failure in failed:
        counts.setdefault(failure["stage"], StageCounts()).failed += 1
    order = {name: i for i, name in enumerate(STAGE_VERSIONS)}
    stages = {}
    for stage in sorted(counts, key=lambda s: (order.get(s.split(".")[0], 99), s)):
        entry = counts[stage]
        stages[stage] = {"done": entry.done, "stale": len(entry.stale),
                         "missing": len(shapes) - held.get(stage, 0),
                         "failed": entry.failed, "stale_shapes": entry.stale,
                         "corrupt": len(entry.corrupt), "corrupt_shapes": entry.corrupt}
    collections = workspace.data_root / "collections"
    return {
        "workspace": str(root), "backend": workspace.backend_name,
        "shapes": len(shapes), "stages": stages,
        "failed": [{k: f.get(k) for k in ("stage", "shape", "reason", "job", "log")}
                   for f in failed],
        "collections": {p.name: workspace.stages(f"collections/{p.name}")
                        for p in sorted(collections.iterdir()) if p.is_dir()}
        if collections.is_dir() else {},
        "jobs": jobs(root),
        "leftovers": workspace.leftovers,
        **({"verify": verified} if verified is not None else {}),
    }


def _squeue(job_ids: list[str]) -> dict[str, str] | None:
    """State (and reason) of each queued or running job/array task, None without SLURM."""
    if not job_ids or shutil.which("squeue") is None:
        return None
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %r", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    states = {}
    for line in out.splitlines():
        fields = line.split(None, 2)
        if len(fields) >= 2:
            reason = fields[2] if len(fields) > 2 and fields[2] != "None" else ""
            states[fields[0]] = fields[1].lower() + (f" ({reason})" if reason else "")
    return states


def jobs(root: Path) -> list[dict[str, Any]]:
    """The jobs of the last submission with their states."""
    entries = journal.submissions(root)
    if not entries:
        return []
    last = entries[-1]
    all_ids = [job["id"] for step in last["steps"] for job in step["jobs"]]
    queued = _squeue(all_ids) if last.get("executor") == "slurm" else None
    listed = []
    for step in last["steps"]:
        for job in step["jobs"]:
            result = _result(Path(job["result"]))
            if result is not None and "code" in result:
                state = "done" if result["code"] in (0, 1) else "failed"
            elif queued is not None:  # SLURM: what squeue says, else gone without a word
                state = queued.get(job["id"], KILLED)
            else:
                state = "running (or killed)" if result else "not started (or killed)"
            listed.append({"step": step["name"], "id": job["id"], "shard": job.get("shard"),
                           "state": state, "log": job["stderr"],
                           "line": (result or {}).get("line"),
                           "code": (result or {}).get("code")})
    return listed


def _result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def render_text(status: dict[str, Any], show: int = 10) -> str:
    """The status as the table and lists a person reads."""
    lines = [f"workspace {status['workspace']} ({status['backend']}): "
             f"{status['shapes']} shape(s)"]
    if status["stages"]:
        lines.append(f"  {'stage':<14}{'done':>8}{'stale':>8}{'missing':>9}{'failed':>8}"
                     f"{'corrupt':>9}")
    for stage, c in status["stages"].items():
        lines.append(f"  {stage:<14}{c['done']:>8}{c['stale']:>8}{c['missing']:>9}"
                     f"{c['failed']:>8}{c['corrupt']:>9}")
    for stage, c in status["stages"].items():
        if c["corrupt_shapes"]:
            more = f" and {c['corrupt'] - show} more" if c["corrupt"] > show else ""
            lines.append(f"corrupt {stage} (stored output unreadable; `partseg inspect` "
                         f"says why, rerunning the stage recomputes it): "
                         f"{', '.join(c['corrupt_shapes'][:show])}{more}")
    for stage, c in status["stages"].items():
        if c["stale_shapes"]:
            more = f" and {c['stale']- show} more" if c["stale"] > show else ""
            lines.append(f"stale {stage} (an input changed; rerun the stage): "
                         f"{', '.join(c['stale_shapes'][:show])}{more}")
    if status["failed"]:
        lines.append(f"failed ({len(status['failed'])}):")
        for f in status["failed"][:show * 5]:
            where = f" [job {f['job']}]" if f.get("job") else ""
            log = f" log {f['log']}" if f.get("log") else ""
            lines.append(f"  {f['stage']} {f['shape']}: {f['reason']}{where}{log}")
        if len(status["failed"]) > show * 5:
            lines.append(f"  ... {len(status['failed']) - show * 5} more (--json lists all)")
    for name, stages in status["collections"].items():
        lines.append(f"collection {name}: {', '.join(stages)}")
    leftovers = status.get("leftovers") or {}
    for line in leftovers.get("removed", [])[:show]:
        lines.append(f"leftover {line}")
    for line in leftovers.get("kept", [])[:show]:
        lines.append(f"leftover kept: {line}")
    hidden = max(0, len(leftovers.get("removed", [])) - show) + max(
        0, len(leftovers.get("kept", [])) - show)
    if hidden:
        lines.append(f"leftover: ... {hidden} more (--json lists all)")
    if "verify" in status:
        found = status["verify"]
        lines.append(f"verify: {found['artifacts']} stored output(s) read whole, "
                     f"{len(found['damaged'])} damaged")
        lines += [f"damaged {line}" for line in found["damaged"]]
        lines += [f"damaged {line}" for line in found["groups"]]
    if status["jobs"]:
        lines.append("jobs of the last submission:")
    for job in status["jobs"]:
        shard = f" shard {job['shard']}" if job.get("shard") else ""
        detail = f": {job['line']}" if job["state"] == "failed" and job.get("line") else ""
        log = f"; log {job['log']}" if job["state"] != "done" else ""
        lines.append(f"  {job['step']} {job['id']}{shard}: {job['state']}{detail}{log}")
    return "\n".join(lines)

