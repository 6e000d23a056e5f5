"""Running a stage over the shapes of a workspace, with content-keyed caching.

A stage module supplies a ``compute(shape_id) -> record`` function; `run_per_shape`
works out the stage's key from its parameters and its inputs' keys, skips shapes whose
stored key matches, stores the rest atomically, and collects per-shape failures so
one bad shape does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import journal
from .batch import Progress
from .errors import ModelError, PartsegError, StoreError
from .notes import Notes, record_notes, warning_summary
from .store import Workspace, content_key, shape_scope

# Bump a stage's number when its stored format or its math changes: old outputs are
# then recomputed instead of trusted.
STAGE_VERSIONS: dict[str, int] = {
    "shape": 1,
    "render": 1,
    "detect": 2,  # 2: cleaned prompt names, the prompts sent stored
    "sam-refine": 1,
    "superpoints": 1,
    "backproject": 2,  # 2: units carry the teacher's part probabilities Y^d
    "vote": 2,
    "distill": 2,  # 2: the Point-NN encoder's kNN is exact (k-d tree), its features move
    "rescore": 2,
    "partstad": 1,
    "bipart": 2,  # 2: as distill 2 (the same encoder and kNN)
}


@dataclass
class StageReport:
    """What one stage did over a set of shapes."""

    stage: str
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # per shape, the counts and warnings of its stored output (computed or cached)
    notes: dict[str, Notes] = field(default_factory=dict)

    def summary(self) -> str:
        text = (f"{self.stage}: {len(self.computed)} computed, "
                f"{len(self.skipped)} cached")
        if self.failed:
            text += f", {len(self.failed)} failed"
        kinds = [kind for n in self.notes.values() for kind, _ in n.warnings]
        if kinds:
            text += f"; warnings: {warning_summary(kinds)}"
        return text

    def warning_lines(self) -> list[str]:
        """One line per warning: "<stage>: <shape>: <message>"."""
        return [f"{self.stage}: {sid}: {message}" for sid, n in self.notes.items()
                for _, message in n.warnings]


def progress(iterable: Iterable[Any], desc: str, total: int | None = None,
             unit: str = "shape") -> Progress:
    """A tqdm bar on a terminal, one log line per item otherwise (batch.py); a stop
    signal ends the loop at the next item boundary."""
    return Progress(iterable, desc, total, unit)


def stage_key(workspace: Workspace, scope: str, stage: str, params: dict[str, Any],
              inputs: list[str]) -> str:
    """The key ``stage`` would be stored under, given its parameters and inputs."""
    upstream = []
    for name in inputs:
        key = workspace.key(scope, name)
        if key is None:
            raise StoreError(f"{scope.split('/', 1)[-1]}: no '{name}' output yet "
                             f"(run `partseg {name if name != 'shape' else 'render'}` first)")
        upstream.append(f"{name}:{key}")
    # "distill.pre" and the like are named outputs of the "distill" stage
    return content_key(stage, STAGE_VERSIONS[stage.split(".")[0]], params, upstream)


def collection_key(workspace: Workspace, stage: str, shape_ids: list[str],
                   params: dict[str, Any], inputs: list[str], extra: list[str] | None = None
                   ) -> str:
    """One key for a stage computed over several shapes at once (e.g. a pre-aligned
    student): it changes when any shape's inputs, the parameters or ``extra`` change."""
    keys = [f"{sid}:{stage_key(workspace, shape_scope(sid), stage, params, inputs)}"
            for sid in shape_ids]
    return content_key(stage, STAGE_VERSIONS[stage.split(".")[0]], params,
                       keys + list(extra or []))


def stored_under(workspace: Workspace, stage: str, shape_ids: list[str], key: str) -> bool:
    """Whether every shape already holds ``stage`` computed under ``key``."""
    return all(workspace.cached_key(shape_scope(sid), stage) == key for sid in shape_ids)


def run_per_shape(workspace: Workspace, stage: str, shape_ids: list[str],
                  params: dict[str, Any], inputs: list[str],
                  compute: Callable[[str], Any], force: bool = False) -> StageReport:
    """Compute and store ``stage`` for each shape whose inputs or parameters changed.

    ``inputs`` are the stages it reads (their keys enter its key); ``compute`` gets a
    shape id and returns the record to store, or (record, {name: array}) to store
    extra arrays beside it. A `PartsegError` fails that shape only;
    a `ModelError` stops the stage.
    """
    report = StageReport(stage)
    steps = progress(shape_ids, desc=stage)
    for shape_id in steps:
        scope = shape_scope(shape_id)
        try:
            key = stage_key(workspace, scope, stage, params, inputs)
            if not force and workspace.cached_key(scope, stage) == key:
                report.skipped.append(shape_id)
                if (stored := workspace.notes(scope, stage)) is not None:
                    report.notes[shape_id] = Notes.from_json(stored)
                steps.note("cached")
                continue
            record = compute(shape_id)
            extra = None
            if isinstance(record, tuple):  # (record, extra arrays stored beside it)
                record, extra = record
            notes = record_notes(record)
            # the inputs' keys let `partseg status` see stale outputs without recomputing
            upstream = {name: workspace.key(scope, name) for name in inputs}
            workspace.write(scope, stage, record, key=key, params=params, extra_arrays=extra,
                            notes=notes.to_json() if notes else None, inputs=upstream)
            if notes:
                report.notes[shape_id] = notes
            report.computed.append(shape_id)
            steps.note("computed")
        except ModelError:
            raise  # a model that cannot load fails every shape alike: stop at once
        except PartsegError as exc:
            report.failed[shape_id] = str(exc)
            steps.note("failed")
            journal.record_failure(workspace.root, stage, shape_id, str(exc))
        else:
            journal.clear_failure(workspace.root, stage, shape_id)
    return report


def select_shapes(workspace: Workspace, patterns: list[str] | None) -> list[str]:
    """Shape ids in the workspace, optionally filtered by glob patterns."""
    import fnmatch

    ids = workspace.shape_ids()
    if not ids:
        raise StoreError(f"{workspace.root}: holds no shapes (run `partseg render` first)")
    if not patterns:
        return ids
    chosen = [i for i in ids if any(fnmatch.fnmatch(i, p) for p in patterns)]
    if not chosen:
        raise StoreError(f"{workspace.root}: no shape matches {', '.join(patterns)}")
    return chosen


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when present, otherwise the CPU."""
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PartsegError(f"--device {device}: no CUDA device is available here "
                           "(use --device cpu or auto)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise PartsegError(f"--device {device}: only {torch.cuda.device_count()} CUDA "
                           "device(s) here")
    return device


def is_fresh(workspace: Workspace, scope: str, stage: str, inputs: list[str]) -> bool:
    """Whether ``stage`` is stored and was computed from the inputs stored now."""
    try:
        info = workspace.info(scope, stage)
        if info is None:
            return False
        return stage_key(workspace, scope, stage, info.get("params", {}), inputs) == info["key"]
    except (StoreError, KeyError):  # CorruptError included: not fresh, recompute
        return False
