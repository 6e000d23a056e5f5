"""Saved models: one folder per trained network, shared by every method that trains one.

The trained 2D teacher, PartDistill's pre-aligned student, PartSTAD's weight network and
BiPart's extractor are all saved the same way, so that a model trained in one workspace
is applied in another without retraining:

    <folder>/model.json          {"format": 1, "kind": ..., "key": ..., "meta": {...}}
    <folder>/weights.safetensors the state_dict (safetensors: loading runs no code)

``kind`` names what the folder holds (``"teacher2d"``, ``"partdistill-student"``, ...);
``key`` is a content hash of what the model depends on (training shapes' keys, config),
so callers can tell a stale model from a current one; ``meta`` is free JSON (part names,
config, encoder, training shape ids). A folder is written beside its final place and
renamed into it, so a killed save leaves either the old model or the new one.

A save writes ``.<name>.tmp-<pid>-<hex>-<host>`` beside the folder and, when it replaces
a model, moves the old one to ``.<name>.old-<pid>-<hex>-<host>`` for the moment between
the two renames. A save killed there leaves the model only in ``.old-*``:
`clean_leftovers` (run by the next save or read of that model, and when a workspace
holding models is opened) puts it back, and removes the leftovers of saves whose process
is gone; those of live processes, or of other hosts, are left and reported.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelError, first_line

if TYPE_CHECKING:  # torch is imported only by the functions that need it
    import torch

FORMAT = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


@dataclass
class SavedModel:
    """A model folder's contents: what it is, its content key, metadata and weights."""

    kind: str
    key: str
    meta: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None


def resolve_model_path(name: str | Path, workspace_root: Path | None = None) -> Path:
    """Where a model named on the command line lives.

    An existing path (absolute, or relative to the current directory) wins; otherwise a
    name is looked up inside the workspace, so ``--student chair-v1`` finds
    ``W/chair-v1`` and ``--student ../chairs/chair-v1`` finds ``W/../chairs/chair-v1``.
    """
    path = Path(name).expanduser()
    if path.exists() or workspace_root is None or path.is_absolute():
        return path
    return workspace_root / path


def is_model_folder(path: Path) -> bool:
    path = Path(path)
    if not (path / MODEL_JSON).is_file():
        clean_leftovers(path.parent, path.name)  # a save killed between its renames
    return (path / MODEL_JSON).is_file()


# leftovers of `save_model`: .<name>.tmp-<pid>-<hex>-<host> / .<name>.old-<pid>-<hex>-<host>
# (older partseg wrote .tmp-<pid>-<hex> and .old-<hex>: no host, and no pid for .old)
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?"
                       r"(?P<hex>[0-9a-f]{8})(?:-(?P<host>.+))?$")
LEGACY_AGE = 3600.0  # seconds after which a leftover naming no process is abandoned


def clean_leftovers(folder: Path, name: str | None = None) -> tuple[list[str], list[str]]:
    """Tidy what killed saves left in ``folder`` (of the model ``name``, or of all):
    a model moved aside to ``.old-*`` whose folder is gone is put back, other ``.old-*``
    and ``.tmp-*`` folders are removed. Only those whose writer is gone are touched: its
    pid is not alive on this host (a name without host and pid: unchanged for an hour).
    Returns (what was done, what was left and why), one line each; never raises."""
    import time

    from .store import pid_alive

    done: list[str] = []
    kept: list[str] = []
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return done, kept
    host = socket.gethostname()
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        pid, owner = match["pid"], match["host"]
        try:
            if owner is not None and owner != host:
                kept.append(f"{entry}: left by a save on host {owner}")
                continue
            if owner is not None and pid is not None and pid_alive(int(pid)):
                kept.append(f"{entry}: being written by process {pid}")
                continue
            if owner is None and time.time() - entry.stat().st_ctime < LEGACY_AGE:
                kept.append(f"{entry}: written by an older partseg less than an hour ago")
                continue
            model = folder / match["name"]
            if match["kind"] == "old" and not model.exists():
                entry.rename(model)
                done.append(f"{model}: restored from {entry.name} (a save was killed)")
            elif match["kind"] == "old" and not is_model_folder(model):
                kept.append(f"{entry}: a model moved aside, but {model} is something else")
            else:
                shutil.rmtree(entry, ignore_errors=True)
                done.append(f"{entry}: removed (left by a killed save)")
        except OSError as err:
            kept.append(f"{entry}: {first_line(err)}")
    return done, kept


def save_model(path: Path, model: SavedModel | None = None, *, kind: str = "", key: str = "",
               meta: Mapping[str, Any] | None = None,
               state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a model folder atomically (replacing an older model of any kind there).

    Refuses to overwrite a folder that exists and is not a model folder, so a typo in
    ``--out`` cannot wipe a user's data.
    """
    from safetensors.torch import save_file

    if model is not None:
        kind, key, meta, state_dict = model.kind, model.key, model.meta, model.state_dict
    if not kind:
        raise ValueError("a saved model needs a kind")
    path = Path(path)
    if path.exists() and not is_model_folder(path):
        if not path.is_dir() or any(path.iterdir()):
            raise ModelError(f"{path}: exists and is not a partseg model folder; "
                             "choose another path or remove it")
    tensors = {name: value.detach().to("cpu").contiguous()
               for name, value in (state_dict or {}).items()}
    document = {"format": FORMAT, "kind": kind, "key": key, "meta": dict(meta or {})}
    clean_leftovers(path.parent, path.name)  # a model an earlier killed save moved aside
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}-{socket.gethostname()}"
        tmp = path.parent / f".{path.name}.tmp-{tag}"
        tmp.mkdir()
        try:
            save_file(tensors, str(tmp / WEIGHTS))
            (tmp / MODEL_JSON).write_text(json.dumps(document, indent=1, sort_keys=True))
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{tag}"
                path.rename(old)
            tmp.rename(path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        raise ModelError(f"{path}: cannot save the model ({first_line(err)})") from None
    return path


def read_document(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """A model folder's model.json (kind, key, meta), checked, without its weights (no
    torch): enough to tell whether a stored model is current."""
    path = Path(path)
    if not path.exists() and not is_model_folder(path):  # (puts back a model a kill hid)
        raise ModelError(f"{path}: no such model folder")
    if not path.is_dir():
        raise ModelError(f"{path}: is a file, not a partseg model folder (a folder with "
                         f"{MODEL_JSON} and {WEIGHTS})")
    if not is_model_folder(path):
        raise ModelError(f"{path}: not a partseg model folder (no {MODEL_JSON})")
    try:
        document = json.loads((path / MODEL_JSON).read_text())
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise ModelError(f"{path / MODEL_JSON}: unreadable ({first_line(err)})") from None
    if document.get("format") != FORMAT:
        raise ModelError(f"{path}: model format {document.get('format')!r} is not supported "
                         f"(this partseg reads format {FORMAT})")
    if kind is not None and document.get("kind") != kind:
        raise ModelError(f"{path}: holds a {document.get('kind')!r} model, expected {kind!r}")
    return document


def check_weights(path: str | Path) -> None:
    """ModelError unless the folder's weights file is a whole safetensors file (its JSON
    header parses and the tensors it lists end where the file ends), read without torch:
    a model a cached run does not load is still checked."""
    weights = Path(path) / WEIGHTS
    try:
        with open(weights, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= 100 << 20:
                raise ValueError(f"header length {size}")
            header = json.loads(handle.read(size))
        ends = [int(t["data_offsets"][1]) for name, t in header.items()
                if name != "__metadata__"]
        expected = 8 + size + max(ends, default=0)
        if weights.stat().st_size != expected:
            raise ValueError(f"{weights.stat().st_size} bytes, the header lists {expected}")
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ModelError(f"{weights}: corrupt or unreadable ({first_line(err)})") from None


def load_model(path: str | Path, kind: str | None = None, device: str = "cpu") -> SavedModel:
    """Read a model folder; one-line ModelError for a missing, foreign or corrupt one."""
    from safetensors.torch import load_file

    path = Path(path)
    document = read_document(path, kind)
    try:
        state = load_file(str(path / WEIGHTS), device=device)
    except Exception as err:  # safetensors raises its own error types for a corrupt file
        raise ModelError(f"{path / WEIGHTS}: corrupt or unreadable ({first_line(err)})") from None
    return SavedModel(kind=str(document["kind"]), key=str(document.get("key", "")),
                      meta=dict(document.get("meta") or {}), state_dict=state, path=path)


def load_state_dict_file(path: Path, what: str, device: str = "cpu") -> dict[str, Any]:
    """The state_dict in a file written by ``torch.save`` (a bare one, or under a
    "state_dict" / "model_state_dict" entry), loaded with ``weights_only`` so that no code
    in the file runs. Anything else is a one-line ModelError naming ``path`` and ``what``
    was expected (with its article: "an encoder checkpoint"). torch raises a different
    exception for each kind of damage (IndexError, KeyError or an empty EOFError for
    random bytes, a paragraph about ``weights_only`` for a pickle of objects), none of
    which tells the user what is wrong with the file."""
    import torch

    try:
        # torch warns about the file's pickle protocol and the like: nothing a user can
        # act on, and a second line on stderr beside our one-line refusal
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights-only reader stops at the first thing that is not a tensor file's:
        # random bytes and a pickle of objects look alike to it (and neither is run)
        raise ModelError(f"{path}: not {what}: not a file of tensors written by torch.save "
                         "(anything else, a pickle of objects included, is refused "
                         "unread)") from err
    except Exception as err:  # whatever torch raises for a damaged or foreign file
        reason = first_line(err).split(". ")[0]
        detail = type(err).__name__ + (f": {reason}" if reason != type(err).__name__ else "")
        raise ModelError(f"{path}: not {what} (torch.load cannot read it: "
                         f"{detail})") from err
    for key in ("state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ModelError(f"{path}: not {what} (found a {type(state).__name__}, expected a "
                         "state_dict of tensors saved with torch.save)")
    return state
