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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import __version__
from .errors import StoreError
from .records import from_arrays, to_arrays

WORKSPACE_FORMAT = 1
MANIFEST = "partseg.json"
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
        group.attrs.update(attrs)

    def read(self, path: Path, names: list[str] | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        import zarr

        group = zarr.open_group(store=str(path), mode="r", zarr_format=3)
        arrays = {name: np.asarray(array[...]) for name, array in _walk_zarr(group, "")
                  if names is None or name in names}
        return arrays, dict(group.attrs)

    def read_attrs(self, path: Path) -> dict[str, Any]:
        with open(path / "zarr.json") as handle:
            return json.load(handle).get("attributes", {})


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


class Workspace:
    """A workspace folder; see the module docstring for its layout."""

    def __init__(self, root: Path, backend: str):
        self.root = root
        self.backend_name = backend
        self._backend = _ZarrBackend() if backend == "zarr" else _HDF5Backend()
        self.data_root = root / ("store.zarr" if backend == "zarr" else "store.h5")
        self.tmp_root = root / ".tmp"

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, create: bool = False, backend: str | None = None
             ) -> Workspace:
        """Open a workspace; with ``create`` make it if missing.

        ``backend`` applies to a new workspace; an existing one keeps its own and
        asking for the other one is an error.
        """
        root = Path(root)
        manifest = root / MANIFEST
        if manifest.is_file():
            try:
                info = json.loads(manifest.read_text())
                fmt, existing = int(info["format"]), str(info["backend"])
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{manifest}: not a partseg workspace manifest ({exc})") from exc
            if fmt != WORKSPACE_FORMAT:
                raise StoreError(
                    f"{root}: workspace format {fmt} was made by an incompatible partseg "
                    f"(this version reads format {WORKSPACE_FORMAT}); use a new --work folder")
            if existing not in BACKENDS:
                raise StoreError(f"{manifest}: unknown backend {existing!r}")
            if backend is not None and backend != existing:
                raise StoreError(f"{root}: workspace uses the {existing} backend, "
                                 f"not {backend}")
            workspace = cls(root, existing)
        elif create:
            if root.exists() and not root.is_dir():
                raise StoreError(f"{root}: exists and is not a folder")
            if root.is_dir() and any(p.name != ".tmp" for p in root.iterdir()):
                raise StoreError(f"{root}: folder is not empty and not a partseg workspace")
            chosen = backend or "zarr"
            if chosen not in BACKENDS:
                raise StoreError(f"unknown store backend {chosen!r}; choose one of "
                                 f"{', '.join(BACKENDS)}")
            root.mkdir(parents=True, exist_ok=True)
            workspace = cls(root, chosen)
            workspace._write_text_atomic(manifest, json.dumps(
                {"format": WORKSPACE_FORMAT, "backend": chosen,
                 "created_by": f"partseg {__version__}"}, indent=1))
        else:
            if not root.exists():
                raise StoreError(f"{root}: no such workspace (run `partseg render` first)")
            raise StoreError(f"{root}: not a partseg workspace (no {MANIFEST})")
        workspace.tmp_root.mkdir(exist_ok=True)
        workspace._clean_stale_tmp()
        return workspace

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
        """Provenance attributes (key, params, created, ...) or None if absent."""
        path = self._path(scope, stage)
        if not path.exists():
            return None
        try:
            attrs = self._backend.read_attrs(path)
        except (OSError, ValueError, KeyError):
            return None
        return attrs.get("partseg")

    def key(self, scope: str, stage: str) -> str | None:
        info = self.info(scope, stage)
        return None if info is None else info.get("key")

    def read(self, scope: str, stage: str, names: list[str] | None = None) -> Artifact:
        """Load an artifact; ``names`` restricts which arrays are read (all by default)."""
        path = self._path(scope, stage)
        if not path.exists():
            raise StoreError(f"{scope.split('/', 1)[-1]}: no '{stage}' output yet "
                             f"(run `partseg {stage}` first)")
        try:
            arrays, attrs = self._backend.read(path, names)
        except Exception as exc:  # any decoder error means the artifact is unusable
            raise StoreError(f"{path}: unreadable stored output ({exc})") from exc
        meta = attrs.pop("partseg", {})
        return Artifact(arrays=arrays, record_attrs=attrs, key=meta.get("key", ""),
                        stage=stage, params=meta.get("params", {}),
                        created=meta.get("created", 0.0))

    def read_record(self, scope: str, stage: str, cls: type[T]) -> T:
        return self.read(scope, stage).record(cls)

    # --- writing ----------------------------------------------------------------------

    def write(self, scope: str, stage: str, record: Any, key: str,
              params: dict[str, Any] | None = None,
              extra_arrays: dict[str, np.ndarray] | None = None) -> None:
        """Store ``record`` (a dataclass from records.py) atomically under scope/stage."""
        if dataclasses.is_dataclass(record):
            arrays, attrs = to_arrays(record)
        else:
            arrays, attrs = {}, dict(record)
        arrays.update(extra_arrays or {})
        attrs["partseg"] = {"key": key, "stage": stage, "params": params or {},
                            "created": time.time(), "version": __version__}
        final = self._path(scope, stage)
        self._ensure_groups(scope)
        name = f"w{os.getpid()}.{uuid.uuid4().hex}.{socket.gethostname()}"
        tmp = self.tmp_root / (name + self._backend.suffix)
        try:
            self._backend.write(tmp, arrays, attrs)
            self._commit(tmp, final)
        finally:
            _remove(tmp)

    def delete(self, scope: str, stage: str) -> None:
        path = self._path(scope, stage)
        trash = self.tmp_root / f"trash-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        _remove(trash)

    def _commit(self, tmp: Path, final: Path) -> None:
        if tmp.is_file():
            os.replace(tmp, final)
            return
        # A folder cannot replace a non-empty folder in one rename: move the old one
        # aside first. Readers in between see "missing", never a partial artifact.
        for _ in range(10):
            trash = self.tmp_root / f"trash-{uuid.uuid4().hex}"
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
            return
        raise StoreError(f"{final}: could not commit after repeated concurrent writes")

    def _ensure_groups(self, scope: str) -> None:
        """Create the folders (and, for zarr, group metadata) leading to ``scope``."""
        path = self.data_root
        parts = [""] + scope.split("/")
        for part in parts:
            path = path / part if part else path
            path.mkdir(parents=True, exist_ok=True)
            if self.backend_name == "zarr" and not (path / "zarr.json").exists():
                self._write_text_atomic(path / "zarr.json", _ZARR_GROUP_JSON)

    def _write_text_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        tmp.write_text(text)
        os.replace(tmp, path)

    def _clean_stale_tmp(self) -> None:
        """Remove leftovers of killed runs on this host (their process is gone)."""
        host = socket.gethostname()
        for entry in self.tmp_root.iterdir():
            name = entry.name
            if name.startswith("trash-"):
                if time.time() - entry.stat().st_mtime > 3600:
                    _remove(entry)
                continue
            fields = name.removesuffix(self._backend.suffix).split(".", 2)
            if len(fields) != 3 or not fields[0][1:].isdigit():
                continue
            if fields[2] == host and not _pid_alive(int(fields[0][1:])):
                _remove(entry)


def _pid_alive(pid: int) -> bool:
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
