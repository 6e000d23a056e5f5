"""The workspace: one folder holding every stage's output, keyed by content.

Layout of a workspace folder (``--work DIR``)::

    partseg.json                 format version and backend
    store.zarr/                  zarr v3 hierarchy (default backend)
      shapes/<shape_id>/<stage>/ one group per shape and stage
      collections/<name>/<stage>/ stages that span many shapes (e.g. a pre-aligned student)
    store.h5/                    HDF5 backend: shapes/<shape_id>/<stage>.h5, one file each
    .tmp/                        outputs being written; never read

Each artifact carries, in its attributes, the content key it was computed under (a
hash of its stage name, the stage's format version, its parameters and the keys of its
inputs), so a stage whose key matches is skipped and a changed parameter invalidates
exactly what depends on it.

Atomicity: an artifact is written completely under ``.tmp/`` and then renamed into
place (a rename within one filesystem is atomic), so a killed run never leaves a
half-written artifact where a later run would trust it, and processes writing
different shapes never touch the same files. HDF5 uses one file per artifact for the
same reason: one HDF5 file cannot take writes from several processes at once.

Commit log: each shape folder has a ``.stages.jsonl`` to which every commit of one of
its artifacts appends a line (stage, key, inputs' keys, write id and the signature of
the artifact's metadata file: inode, size, mtime), so that `partseg status` stats one
file per artifact instead of reading it; a line counts only while the signature is the
file's (an artifact replaced without a line, changed in place, copied, or written by an
older partseg is read instead). A commit that leaves the log past STAGE_LOG_LIMIT
rewrites it with only the lines of the artifacts stored now (`compact_stage_log`).

Integrity: each array's dtype, shape and CRC-32 are recorded with it (and, for zarr,
every file's size), and `Workspace.read` checks them, so a read returns the committed
artifact whole or raises CorruptError in one line. A corrupt artifact gets a
``<stage>.corrupt`` note beside it; until it is rewritten it is never trusted as cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import __version__
from .errors import CorruptError, StoreError, WriteError, first_line, os_error_line
from .records import from_arrays, to_arrays

WORKSPACE_FORMAT = 1
MANIFEST = "partseg.json"
STAGE_LOG = ".stages.jsonl"  # per shape folder, see the module docstring
# A commit that leaves the log longer compacts it. A shape's current lines take ~2 KB
# (8 stages); status reads every shape's log, so the bound is kept small.
STAGE_LOG_LIMIT = 16 << 10
BACKENDS = ("zarr", "hdf5")
_ZARR_GROUP_JSON = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")

T = TypeVar("T")


def safe_id(text: str) -> str:
    """A shape id usable as a folder and group name."""
    cleaned = _SAFE_ID.sub("_", text).strip("._")
    return cleaned or "shape"


def content_key(stage: str, version: int, params: dict[str, Any], inputs: list[str]) -> str:
    """Hash of everything a stage's output depends on."""
    payload = json.dumps([stage, version, params, inputs], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def shape_scope(shape_id: str) -> str:
    return f"shapes/{shape_id}"


def collection_scope(name: str) -> str:
    return f"collections/{safe_id(name)}"


@dataclass
class Artifact:
    """One stage's stored output: arrays, the record's attributes and provenance."""

    arrays: dict[str, np.ndarray]
    record_attrs: dict[str, Any]
    key: str
    stage: str
    params: dict[str, Any]
    created: float

    def record(self, cls: type[T]) -> T:
        return from_arrays(cls, self.arrays, self.record_attrs)


def _compressor_kwargs() -> dict[str, Any]:
    from zarr.codecs import BloscCodec

    return {"compressors": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")}


class _ZarrBackend:
    suffix = ""
    meta_file = "zarr.json"  # the file holding an artifact's attributes, named in errors

    def write(self, path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        import zarr

        group = zarr.open_group(store=str(path), mode="w", zarr_format=3)
        kwargs = _compressor_kwargs()
        for name, value in arrays.items():
            value = np.ascontiguousarray(value)
            array = group.create_array(name, shape=value.shape, dtype=value.dtype,
                                       chunks=_chunks(value), **kwargs)
            if value.size:
                array[...] = value
        # Every file but the group's own metadata, with its size: a deleted or truncated
        # chunk is then found by a stat, without reading the data (see `complete`).
        attrs["partseg"]["files"] = {
            str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*"))
            if f.is_file() and f != path / "zarr.json"}
        group.attrs.update(attrs)

    def read(self, path: Path, names: list[str] | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if names == []:  # attributes only: no need to start zarr
            return {}, self.read_attrs(path)
        import zarr

        group = zarr.open_group(store=str(path), mode="r", zarr_format=3)
        if names is None:
            arrays = {name: np.asarray(array[...]) for name, array in _walk_zarr(group, "")}
        else:  # open only the arrays asked for: walking them all costs ~1 ms per array
            arrays = {name: np.asarray(group[name][...]) for name in names
                      if (path / name / "zarr.json").is_file()}
        return arrays, dict(group.attrs)

    def read_attrs(self, path: Path) -> dict[str, Any]:
        with open(path / "zarr.json") as handle:
            return json.load(handle).get("attributes", {})

    def signature(self, path: Path) -> list[int]:
        return stat_signature(path / "zarr.json")

    def complete(self, path: Path, meta: dict[str, Any]) -> str | None:
        """None when every file the writer recorded is there at its size, else which is
        not (zarr reads a missing chunk as zeros without complaint)."""
        for name, size in meta.get("files", {}).items():
            try:
                found = (path / name).stat().st_size
            except FileNotFoundError:
                return f"file {name} is missing"
            if found != size:
                return f"file {name} has {found} bytes, {size} were written"
        return None


def _walk_zarr(group: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for name, array in group.arrays():
        yield prefix + name, array
    for name, sub in group.groups():
        yield from _walk_zarr(sub, prefix + name + "/")


def _chunks(value: np.ndarray) -> tuple[int, ...]:
    """Chunks of about 8 MB along the first axis (one view, or many points)."""
    if value.ndim == 0 or value.size == 0:
        return tuple(max(1, s) for s in value.shape)
    row_bytes = max(1, value.nbytes // max(1, value.shape[0]))
    rows = max(1, min(value.shape[0], (8 << 20) // row_bytes))
    return (rows, *value.shape[1:])


class _HDF5Backend:
    suffix = ".h5"
    meta_file = ""  # the attributes live in the artifact's own file

    def write(self, path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        import h5py

        with h5py.File(path, "w") as handle:
            for name, value in arrays.items():
                compression = "gzip" if value.nbytes > (1 << 16) else None
                handle.create_dataset(name, data=value, compression=compression,
                                      compression_opts=1 if compression else None)
            handle.attrs["partseg"] = json.dumps(attrs)

    def read(self, path: Path, names: list[str] | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        import h5py

        arrays: dict[str, np.ndarray] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and (names is None or name in names):
                arrays[name] = obj[()]

        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
            attrs = json.loads(handle.attrs["partseg"])
        return arrays, attrs

    def read_attrs(self, path: Path) -> dict[str, Any]:
        import h5py

        with h5py.File(path, "r") as handle:
            return json.loads(handle.attrs["partseg"])

    def signature(self, path: Path) -> list[int]:
        return stat_signature(path)

    def complete(self, path: Path, meta: dict[str, Any]) -> str | None:
        return None  # one file, replaced whole: a damaged one fails to open or its checksums


class Workspace:
    """A workspace folder; see the module docstring for its layout."""

    def __init__(self, root: Path, backend: str):
        self.root = root
        self.backend_name = backend
        self._backend = _ZarrBackend() if backend == "zarr" else _HDF5Backend()
        self.data_root = root / ("store.zarr" if backend == "zarr" else "store.h5")
        self.tmp_root = root / ".tmp"
        # artifact path -> write id a skip check saw (None: absent), see `_commit`
        self._seen: dict[Path, str | None] = {}
        self._deferred = False  # opened with ``defer``: made on disk at the first write
        # what opening found of killed runs' leftovers (`_clean_stale_tmp`), for status
        self.leftovers: dict[str, list[str]] = {"removed": [], "kept": []}

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, create: bool = False, backend: str | None = None,
             defer: bool = False) -> Workspace:
        """Open a workspace; with ``create`` make it if missing.

        With ``defer`` a missing workspace is checked (backend, folder) but made only
        at its first write: input of which nothing loads leaves no empty workspace
        behind. Until then it reads as an empty workspace.

        ``backend`` applies to a new workspace; an existing one keeps its own and
        asking for the other one is an error. Creation is idempotent and safe when many
        processes create the same folder at once (a SLURM array starting together): the
        manifest is written under ``.tmp/`` and hard-linked into place, which fails
        rather than overwrites when another process won, and leftovers of a killed
        creation (only ever under ``.tmp/``) do not block the next one.
        """
        root = Path(root)
        manifest = root / MANIFEST
        if not manifest.is_file():
            if not create:
                if not root.exists():
                    raise StoreError(f"{root}: no such workspace (run `partseg render` first)")
                raise StoreError(f"{root}: not a partseg workspace (no {MANIFEST})")
            chosen = backend or "zarr"
            if chosen not in BACKENDS:
                raise StoreError(f"unknown store backend {chosen!r}; choose one of "
                                 f"{', '.join(BACKENDS)}")
            if root.exists() and not root.is_dir():
                raise StoreError(f"{root}: exists and is not a folder")
            if defer:
                if root.is_dir() and any(p.name not in (".tmp", MANIFEST)
                                         for p in root.iterdir()):
                    raise StoreError(f"{root}: folder is not empty and not a partseg "
                                     "workspace")
                workspace = cls(root, chosen)
                workspace._deferred = True
                return workspace
            with _writing(root):
                (root / ".tmp").mkdir(parents=True, exist_ok=True)
                strangers = [p for p in root.iterdir() if p.name not in (".tmp", MANIFEST)]
                # the manifest is linked before any data is stored: a creator that won
                # meanwhile explains whatever else is there
                if strangers and not manifest.is_file():
                    raise StoreError(f"{root}: folder is not empty and not a partseg "
                                     "workspace")
                if not manifest.is_file():
                    cls(root, chosen)._create_manifest(manifest, chosen)
        workspace = cls(root, _read_manifest(root, manifest, backend))
        with _writing(workspace.tmp_root):
            workspace.tmp_root.mkdir(exist_ok=True)
            workspace._clean_stale_tmp()
        return workspace

    def _materialise(self) -> None:
        """Make a workspace opened with ``defer`` on disk (as `open` with ``create``; a
        process that made it meanwhile wins, and a different backend is refused)."""
        if self._deferred:
            Workspace.open(self.root, create=True, backend=self.backend_name)
            self._deferred = False

    def _create_manifest(self, manifest: Path, backend: str) -> None:
        tmp = self.tmp_root / self._tmp_name("m")
        tmp.write_text(json.dumps({"format": WORKSPACE_FORMAT, "backend": backend,
                                   "created_by": f"partseg {__version__}"}, indent=1))
        try:
            os.link(tmp, manifest)  # fails if another creator was first: theirs stands
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: last writer wins, same text
            os.replace(tmp, manifest)
        finally:
            tmp.unlink(missing_ok=True)

    # --- queries ----------------------------------------------------------------------

    def shape_ids(self) -> list[str]:
        base = self.data_root / "shapes"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def stages(self, scope: str) -> list[str]:
        base = self.data_root / scope
        if not base.is_dir():
            return []
        suffix = self._backend.suffix
        names = []
        for entry in base.iterdir():
            if suffix and entry.name.endswith(suffix):
                names.append(entry.name[: -len(suffix)])
            elif not suffix and entry.is_dir():
                names.append(entry.name)
        return sorted(names)

    def _path(self, scope: str, stage: str) -> Path:
        return self.data_root / scope / (stage + self._backend.suffix)

    def exists(self, scope: str, stage: str) -> bool:
        return self._path(scope, stage).exists()

    def info(self, scope: str, stage: str) -> dict[str, Any] | None:
        """Provenance attributes (key, params, created, ...) or None if absent.

        Raises CorruptError when the artifact's metadata cannot be read, a file its
        writer recorded is missing or resized, or an earlier read found it corrupt."""
        path = self._path(scope, stage)
        for attempt in range(5):
            if not path.exists():
                return None
            meta, problem = self._info_problem(path)
            if problem is None:
                return meta
            if isinstance(meta, dict) and self._corrupt_note(path, meta.get("id")):
                break  # an earlier read's finding: looking again cannot change it
            # Another process may have replaced the artifact between our looks at its
            # files (moved aside, then renamed in): look again before calling it corrupt.
            time.sleep(0.02 * (attempt + 1))
        if not path.exists():
            return None
        raise self._corrupt(path, stage, problem, meta)

    def _info_problem(self, path: Path) -> tuple[dict[str, Any] | None, str | None]:
        """The artifact's metadata and what is wrong with it (None: nothing)."""
        try:
            meta = self._backend.read_attrs(path).get("partseg")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, PermissionError):
                raise StoreError(os_error_line(exc, path)) from exc
            where = path / self._backend.meta_file if self._backend.meta_file else path
            return None, f"its metadata {where} is unreadable: {first_line(exc)}"
        if not isinstance(meta, dict):
            return meta, "no partseg metadata"
        problem = self._backend.complete(path, meta)
        return meta, problem if problem is not None else self._corrupt_note(path, meta.get("id"))

    def key(self, scope: str, stage: str) -> str | None:
        info = self.info(scope, stage)
        return None if info is None else info.get("key")

    def notes(self, scope: str, stage: str) -> dict[str, Any] | None:
        """The notes stored with an artifact (counts and warnings), from its metadata
        alone; None when absent or unreadable (a cached stage then reports none)."""
        try:
            return self._backend.read_attrs(self._path(scope, stage)).get(
                "partseg", {}).get("notes")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def cached_key(self, scope: str, stage: str) -> str | None:
        """The stored key for deciding whether a stage can be skipped: None when the
        artifact is absent or corrupt (then with a warning: this run recomputes it)."""
        try:
            info = self.info(scope, stage)
        except CorruptError as exc:
            warnings.warn(f"{exc.problem}; recomputing it", stacklevel=2)
            info = None
        self._seen[self._path(scope, stage)] = None if info is None else info.get("id")
        return None if info is None else info.get("key")

    def _info_settled(self, scope: str, stage: str) -> dict | None:
        """``info``, waiting out another process's replacement of the artifact: `_commit`
        moves the old copy to ``.tmp/trash-*`` before renaming the new one into place, so
        a reader in that window would see "missing" for an artifact that exists."""
        for _ in range(100):
            meta = self.info(scope, stage)
            if meta is not None or not any(self.tmp_root.glob("trash-*")):
                return meta
            time.sleep(0.02)
        return meta

    def read(self, scope: str, stage: str, names: list[str] | None = None) -> Artifact:
        """Load an artifact; ``names`` restricts which arrays are read (all by default).

        Every array read is checked against the checksum recorded when it was written,
        so the result is the artifact that was committed, whole, or a CorruptError. An
        artifact replaced by a writer while it was being read is read again."""
        path = self._path(scope, stage)
        for _ in range(5):
            meta = self._info_settled(scope, stage)
            if meta is None:
                raise StoreError(f"{scope.split('/', 1)[-1]}: no '{stage}' output yet "
                                 f"(run `partseg {_command(stage)}` first)")
            try:
                arrays, attrs = self._backend.read(path, names)
            except PermissionError as exc:
                raise StoreError(os_error_line(exc, path)) from exc
            except Exception as exc:  # any decoder error means the artifact is unusable
                arrays, attrs, problem = {}, {}, f"unreadable ({first_line(exc)})"
            else:
                problem = _verify(arrays, attrs.get("partseg", {}), names)
            if problem is None:
                break
            try:
                # settled: a writer may be between moving our copy aside and renaming
                # its own into place, so "missing" now would not mean missing
                now = self._info_settled(scope, stage)
            except CorruptError:
                now = None
            seen = attrs.get("partseg", {}).get("id", meta.get("id"))
            if (now is None and not path.exists()) or (now is not None and now.get("id") != seen):
                continue  # replaced or removed meanwhile: read what is there now
            raise self._corrupt(path, stage, problem, meta)
        else:
            raise StoreError(f"{path}: replaced by other writers during every read attempt")
        meta = attrs.pop("partseg", {})
        return Artifact(arrays=arrays, record_attrs=attrs, key=meta.get("key", ""),
                        stage=stage, params=meta.get("params", {}),
                        created=meta.get("created", 0.0))

    def read_record(self, scope: str, stage: str, cls: type[T]) -> T:
        return self.read(scope, stage).record(cls)

    def _corrupt(self, path: Path, stage: str, problem: str, meta: dict[str, Any] | None
                 ) -> CorruptError:
        """Mark the artifact corrupt (so that no later run trusts it as cached) and make
        the one-line error saying so."""
        marker = path.with_name(path.name + CORRUPT_SUFFIX)
        if not marker.exists():
            try:
                self._write_text_atomic(marker, json.dumps(
                    {"id": (meta or {}).get("id"), "problem": problem}))
            except OSError:
                pass  # a read-only workspace: the checksums fail again next time
        error = CorruptError(f"{path}: stored output is corrupt ({problem}); the next "
                             f"`partseg {_command(stage)}` recomputes it")
        error.problem = f"{path}: stored output was corrupt ({problem})"
        return error

    def _corrupt_note(self, path: Path, write_id: str | None) -> str | None:
        marker = path.with_name(path.name + CORRUPT_SUFFIX)
        try:
            note = json.loads(marker.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "marked corrupt by an earlier read"
        # a note about an older version (replaced since) does not apply to this one
        return note.get("problem", "marked corrupt") if note.get("id") == write_id else None

    # --- writing ----------------------------------------------------------------------

    def write(self, scope: str, stage: str, record: Any, key: str,
              params: dict[str, Any] | None = None,
              extra_arrays: dict[str, np.ndarray] | None = None,
              notes: dict[str, Any] | None = None,
              inputs: dict[str, str | None] | None = None) -> None:
        """Store ``record`` (a dataclass from records.py) atomically under scope/stage,
        with ``notes`` (notes.Notes.to_json: counts and warnings) and ``inputs`` (stage
        name -> the key it was computed from) in its provenance.

        Each array's checksum is recorded beside it for `read` to verify. A file-system
        failure (read-only folder, full disk) raises WriteError; what was stored before
        is left as it was."""
        self._materialise()
        if dataclasses.is_dataclass(record):
            arrays, attrs = to_arrays(record)
        else:
            arrays, attrs = {}, dict(record)
        arrays.update(extra_arrays or {})
        write_id = uuid.uuid4().hex
        attrs["partseg"] = {"key": key, "stage": stage, "params": params or {},
                            "created": time.time(), "version": __version__, "id": write_id,
                            "arrays": {name: _checksum(value) for name, value in arrays.items()}}
        if notes:
            attrs["partseg"]["notes"] = notes
        if inputs is not None:
            attrs["partseg"]["inputs"] = inputs
        final = self._path(scope, stage)
        tmp = self.tmp_root / (self._tmp_name("w") + self._backend.suffix)
        with _writing(final):
            try:
                self._ensure_groups(scope)
                self._backend.write(tmp, arrays, attrs)
                signature = self._backend.signature(tmp)  # a rename keeps it
                committed = self._commit(tmp, final, key)
            finally:
                _remove(tmp)
            if committed and scope.startswith("shapes/"):
                log = final.parent / STAGE_LOG
                size = log_commit(log, {"stage": stage, "key": key, "inputs": inputs,
                                        "id": write_id, "sig": signature})
                if size > STAGE_LOG_LIMIT:
                    compact_stage_log(log, functools.partial(self._current_line, log.parent),
                                      self.tmp_root / self._tmp_name("t"))
            self._seen.pop(final, None)
            final.with_name(final.name + CORRUPT_SUFFIX).unlink(missing_ok=True)

    def _current_line(self, folder: Path, entry: dict[str, Any]) -> bool:
        """Whether a commit-log line of the shape folder ``folder`` describes the artifact
        stored there now (its metadata file's signature): the only lines status uses."""
        try:
            now = self._backend.signature(folder / (entry["stage"] + self._backend.suffix))
        except (OSError, KeyError, TypeError):
            return False
        return list(entry.get("sig") or []) == now

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock held across processes (fcntl.flock on a file under
        ``.locks/``), e.g. so that the first of several shards trains a shared model and
        the others wait and reuse it. Released when the block ends or the process dies."""
        import fcntl

        self._materialise()
        folder = self.root / ".locks"
        folder.mkdir(exist_ok=True)
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        with open(folder / f"{safe_id(name)[-40:]}.{digest}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def delete(self, scope: str, stage: str) -> None:
        path = self._path(scope, stage)
        trash = self.tmp_root / f"trash-{self._tmp_name('x')}"
        with _writing(path):
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                return
            _remove(trash)

    def _commit(self, tmp: Path, final: Path, key: str) -> bool:
        """Rename ``tmp`` into place; False when another process's equal artifact was
        kept instead."""
        if tmp.is_file():
            os.replace(tmp, final)
            return True
        # A folder cannot replace a non-empty folder in one rename: move the old one
        # aside first. Readers in between see "missing", never a partial artifact.
        for _ in range(10):
            try:
                os.rename(tmp, final)  # the common case: nothing there yet
                return True
            except OSError:
                pass
            if self._committed_meanwhile(final, key):
                return False  # another process stored the same computation after our check
            trash = self.tmp_root / f"trash-{self._tmp_name('x')}"
            try:
                os.rename(final, trash)
            except FileNotFoundError:
                pass
            try:
                os.rename(tmp, final)
            except OSError:
                _remove(trash)
                continue  # another process committed the same artifact meanwhile
            _remove(trash)
            return True
        raise StoreError(f"{final}: could not commit after repeated concurrent writes")

    def _committed_meanwhile(self, final: Path, key: str) -> bool:
        """Whether another process committed a complete artifact under ``key`` at
        ``final`` after our skip check found it absent or stale: concurrent runs of one
        stage (equal keys give equal bytes) then keep the first, and readers never see
        the slot empty. A forced recomputation (no skip check) always replaces."""
        if final not in self._seen:
            return False
        try:
            meta = self._backend.read_attrs(final)["partseg"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return (meta.get("key") == key and meta.get("id") != self._seen[final]
                and self._backend.complete(final, meta) is None)

    def _ensure_groups(self, scope: str) -> None:
        """Create the folders (and, for zarr, group metadata) leading to ``scope``."""
        path = self.data_root
        parts = [""] + scope.split("/")
        for part in parts:
            path = path / part if part else path
            path.mkdir(parents=True, exist_ok=True)
            if self.backend_name == "zarr" and not (path / "zarr.json").exists():
                self._write_text_atomic(path / "zarr.json", _ZARR_GROUP_JSON)

    def check_groups(self) -> list[str]:
        """Check the zarr group metadata (``zarr.json``) of the store's root, of
        ``shapes/``, ``collections/`` and each shape and collection folder, and rewrite
        any that is missing or damaged: it is a fixed text (`_ZARR_GROUP_JSON`), which
        partseg never reads but every other zarr reader of the hierarchy needs. One line
        per file rewritten; none for the hdf5 backend."""
        if self.backend_name != "zarr" or not self.data_root.is_dir():
            return []
        folders = [self.data_root]
        for name in ("shapes", "collections"):
            base = self.data_root / name
            if base.is_dir():
                folders += [base, *sorted(p for p in base.iterdir() if p.is_dir())]
        lines = []
        for folder in folders:
            meta = folder / "zarr.json"
            try:
                found = json.loads(meta.read_text())
                problem = (None if isinstance(found, dict) and found.get("zarr_format") == 3
                           and found.get("node_type") == "group" else "not a zarr v3 group")
            except FileNotFoundError:
                problem = "missing"
            except (OSError, ValueError) as exc:
                problem = f"unreadable: {first_line(exc)}"
            if problem is None:
                continue
            try:
                self._write_text_atomic(meta, _ZARR_GROUP_JSON)
                lines.append(f"{meta}: zarr group metadata {problem}; rewritten")
            except OSError as exc:
                lines.append(f"{meta}: zarr group metadata {problem}; cannot rewrite it "
                             f"({first_line(exc)})")
        return lines

    def _tmp_name(self, kind: str) -> str:
        """A name under .tmp/ that `_clean_stale_tmp` removes once its process is gone."""
        return f"{kind}{os.getpid()}.{uuid.uuid4().hex}.{socket.gethostname()}"

    def _write_text_atomic(self, path: Path, text: str) -> None:
        tmp = self.tmp_root / self._tmp_name("t")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _clean_stale_tmp(self) -> None:
        """Remove leftovers of killed runs (their process is gone) from ``.tmp/`` and, for
        the model folders kept in the workspace, beside them (saved_model.py); record in
        ``self.leftovers`` what was done and what was left (being written, or written on
        another host, whose processes this one cannot see)."""
        from .saved_model import clean_leftovers

        host = socket.gethostname()
        done, kept = self.leftovers["removed"], self.leftovers["kept"]
        for entry in sorted(self.tmp_root.iterdir()):
            name = entry.name
            # trash-<tmp name>: an artifact moved aside to be deleted, see `_commit`
            fields = name.removeprefix("trash-").removesuffix(self._backend.suffix).split(
                ".", 2)
            if len(fields) != 3 or not fields[0][1:].isdigit():
                if name.startswith("trash-"):  # older partseg: trash-<hex>, no process
                    try:
                        old = time.time() - entry.stat().st_ctime > 3600  # moved then
                    except FileNotFoundError:
                        continue  # another process removed it meanwhile
                    if old:
                        _remove(entry)
                        done.append(f"{entry}: removed (left by a killed write)")
                    else:
                        kept.append(f"{entry}: moved aside by an older partseg less than "
                                    "an hour ago")
                continue
            if fields[2] != host:
                kept.append(f"{entry}: left by a process on host {fields[2]}")
            elif not pid_alive(int(fields[0][1:])):
                _remove(entry)
                done.append(f"{entry}: removed (left by a killed write)")
        for folder in [self.root, *self._model_folders()]:
            removed, left = clean_leftovers(folder)
            done += removed
            kept += left

    def _model_folders(self) -> list[Path]:
        """Folders of the workspace that may hold saved models (``W/<name>``,
        ``W/students/<name>``): its own subfolders but the store's, the jobs' and locks'."""
        skip = {self.data_root.name, self.tmp_root.name, "jobs", ".locks"}
        try:
            return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name not in skip
                          and not p.name.startswith("."))
        except OSError:
            return []


CORRUPT_SUFFIX = ".corrupt"


def _command(stage: str) -> str:
    """The command that computes ``stage`` ("distill.pre" is a `distill` output)."""
    name = stage.split(".")[0]
    return "render" if name == "shape" else name


def _read_manifest(root: Path, manifest: Path, backend: str | None) -> str:
    """The backend named by an existing workspace's manifest (checked for format)."""
    try:
        info = json.loads(manifest.read_text())
        fmt, existing = int(info["format"]), str(info["backend"])
    except OSError as exc:
        raise StoreError(os_error_line(exc, manifest)) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{manifest}: not a partseg workspace manifest ({exc})") from exc
    if fmt != WORKSPACE_FORMAT:
        raise StoreError(
            f"{root}: workspace format {fmt} was made by an incompatible partseg "
            f"(this version reads format {WORKSPACE_FORMAT}); use a new --work folder")
    if existing not in BACKENDS:
        raise StoreError(f"{manifest}: unknown backend {existing!r}")
    if backend is not None and backend != existing:
        raise StoreError(f"{root}: workspace uses the {existing} backend, not {backend}")
    return existing


def _checksum(value: np.ndarray) -> list[Any]:
    """dtype, shape and CRC-32 of an array's bytes: enough to tell a committed array
    from one with a lost chunk (read as zeros), a truncation or a mixed version."""
    value = np.ascontiguousarray(value)
    return [value.dtype.str, list(value.shape), zlib.crc32(value.reshape(-1).view(np.uint8))]


def _verify(arrays: dict[str, np.ndarray], meta: dict[str, Any],
            names: list[str] | None) -> str | None:
    """None when ``arrays`` are exactly what the writer recorded (those of ``names``)."""
    recorded = meta.get("arrays")
    if not isinstance(recorded, dict):
        return "no checksums recorded (written by an older partseg)"
    wanted = [n for n in recorded if names is None or n in names]
    for name in wanted:
        if name not in arrays:
            return f"array {name} is missing"
        if _checksum(arrays[name]) != recorded[name]:
            return f"array {name} does not match its checksum"
    extra = sorted(set(arrays) - set(recorded))
    return f"array {extra[0]} was never written" if extra else None


class _writing:
    """Turn a failed file-system operation into a WriteError naming ``path``: a
    read-only folder or a full disk fails every shape alike, so the run stops."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> bool:
        if isinstance(exc, OSError):
            # the artifact or folder meant, not the temporary name under .tmp/
            raise WriteError(f"cannot write {os_error_line(exc, self.path)}") from exc
        return False


def stat_signature(path: Path | str) -> list[int]:
    """Inode, size and mtime (ns) of a file: what tells the commit log's line about an
    artifact's metadata file from a file replaced or changed since."""
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def log_commit(path: Path, entry: dict[str, Any]) -> int:
    """Append one line to a shape's commit log; returns the log's size after it (0 when
    the append failed). One write to an O_APPEND file: lines of processes committing at
    once do not interleave. It is made under a shared lock on the file, so that
    `compact_stage_log` (exclusive) never replaces the log between an append and its
    read: an appender that waited for a compaction finds the file replaced and appends
    to the new one. Best effort: a missing line only makes `partseg status` read that
    artifact's metadata instead."""
    import fcntl

    line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    for _ in range(10):
        try:
            # read and write: NFS emulates flock with POSIX locks, whose shared kind
            # needs a descriptor open for reading
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                continue  # compacted while we waited: this file is the replaced one
            os.write(fd, line)
            return os.fstat(fd).st_size
        except OSError:
            return 0
        finally:
            os.close(fd)  # releases the lock
    return 0


def compact_stage_log(path: Path, keep: Callable[[dict[str, Any]], bool], tmp: Path) -> None:
    """Rewrite a shape's commit log with only its last line per (stage, signature) for
    which ``keep`` holds, atomically (written to ``tmp``, renamed over it) and under an
    exclusive lock, so that no line appended meanwhile is lost (see `log_commit`)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            return  # another process compacted it while we waited
        kept = [entry for entry in read_stage_log(path).values() if keep(entry)]
        tmp.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in kept))
        os.replace(tmp, path)
    except OSError:
        pass  # best effort, as the log itself: the longer log still reads the same
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def read_stage_log(path: Path | str) -> dict[tuple[str, int], dict[str, Any]]:
    """A shape's commit log as (stage, signature) -> its last line; {} when there is none.
    A torn or foreign line is skipped (that artifact is then read instead)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    lines = b"".join(chunks).splitlines()
    try:  # one parse for the whole file: per-line parses cost 3x at 10,000 shapes
        parsed = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in parsed:
        try:
            entries[(entry["stage"], tuple(entry["sig"]))] = entry
        except (KeyError, TypeError):
            continue
    return entries


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)
