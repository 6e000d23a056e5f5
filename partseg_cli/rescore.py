"""Backward distillation as a stage: re-score the teacher's knowledge units (Eq. 4).

The rescore stage stores the shape's KnowledgeUnits with ``rescored_confidence`` (C_bd)
set, copied from what `distill` computed, so the teacher's 2D quality can be evaluated
before (C) and after (C_bd) re-scoring (PartDistill supplementary Eq. 5-8). The
functions `rescore` and `rescore_collection` train a student to re-score units outside
a workspace (benchmarks). C_bd is the agreement between the student's argmax and each
unit's label over the unit's mask, taken when backward distillation starts
(`distill.backward_trigger`, or at ``bd_latest`` of the epochs at the latest). The stored
C_bd is Eq. 4's; how the student itself is then re-weighted is
`DistillConfig.bd_weighting`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .distill import (
    DistillConfig,
    DistillResult,
    distill_pre,
    distill_tta,
    rescore_units,
)
from .errors import PartsegError
from .pipeline import StageReport, is_fresh, run_per_shape
from .records import KnowledgeUnits
from .store import Workspace, shape_scope

if TYPE_CHECKING:
    from .models.student import PointCloudLike

__all__ = ["is_current", "rescore", "rescore_collection", "rescore_units", "run",
           "with_rescored"]


def with_rescored(units: KnowledgeUnits, result: DistillResult) -> KnowledgeUnits:
    """A copy of ``units`` with rescored_confidence = the result's C_bd (K,) float32.

    A shape without usable units keeps its confidences as C_bd (all zero when they
    are zero): with nothing learnt there is no evidence to re-score them.
    """
    c_bd = (result.rescored_confidence if result.rescored_confidence is not None
            else units.confidence)
    return dataclasses.replace(units, rescored_confidence=np.asarray(c_bd, np.float32))


def _backward_on(config: DistillConfig) -> DistillConfig:
    # Re-scoring needs backward distillation to start, whatever the loss does.
    latest = 0.6 if config.bd_latest is None else config.bd_latest
    return dataclasses.replace(config, backward=True, bd_latest=latest)


def rescore(shape: PointCloudLike, units: KnowledgeUnits, n_parts: int,
            config: DistillConfig) -> KnowledgeUnits:
    """Re-score one shape's units with a test-time-aligned student (`distill_tta`).

    Returns the units with ``rescored_confidence`` (K,) float32 in [0, 1].
    """
    return with_rescored(units, distill_tta(shape, units, n_parts, _backward_on(config)))


def rescore_collection(collection: Sequence[tuple[PointCloudLike, KnowledgeUnits]],
                       n_parts: int, config: DistillConfig) -> list[KnowledgeUnits]:
    """Re-score every shape's units, per shape (mode 'tta') or with one student over
    the collection (mode 'pre', `distill_pre`). Returns units in collection order."""
    config = _backward_on(config)
    if config.mode == "pre":
        _, results = distill_pre(collection, n_parts, config)
        return [with_rescored(u, r) for (_, u), r in zip(collection, results, strict=True)]
    return [rescore(shape, units, n_parts, config) for shape, units in collection]


# --- the `rescore` stage -------------------------------------------------------------

INPUTS = ["backproject"]  # and the labelling the re-scores come from


def run(workspace: Workspace, shape_ids: list[str], method: str = "distill",
        force: bool = False) -> StageReport:
    """Store each shape's knowledge units with C_bd set (stage "rescore"), copied from
    the stored PartDistill labelling ``method`` (what `distill` computed: the C_bd its
    backward distillation re-weighted the units by; for a shape a saved student was only
    applied to, Eq. 4 with that student's labels). No student is trained here. The key
    follows both the units and that labelling, so `evaluate --teacher-2d` can tell a
    stale copy (`is_current`)."""
    params = {"method": method}

    def compute(shape_id: str) -> KnowledgeUnits:
        scope = shape_scope(shape_id)
        artifact = workspace.read(scope, method, names=["rescored_confidence"])
        c_bd = artifact.arrays.get("rescored_confidence")
        if c_bd is None:
            raise PartsegError(f"its '{method}' labelling has no re-scores (backward "
                               "distillation was off or never started, or it is not a "
                               "PartDistill labelling); rerun `partseg distill` with "
                               "--backward")
        units = workspace.read_record(scope, "backproject", KnowledgeUnits)
        if c_bd.shape != units.confidence.shape:
            raise PartsegError(f"its '{method}' re-scores cover {len(c_bd)} units, the "
                               f"stored knowledge units {len(units)}; rerun `partseg distill`")
        return dataclasses.replace(units, rescored_confidence=np.asarray(c_bd, np.float32))

    return run_per_shape(workspace, "rescore", shape_ids, params, [*INPUTS, method], compute,
                         force)


def is_current(workspace: Workspace, shape_id: str) -> bool:
    """Whether the stored "rescore" output was copied from the units and labelling that
    are stored now (False for a missing or stale one)."""
    info = workspace.info(shape_scope(shape_id), "rescore")
    method = (info or {}).get("params", {}).get("method")
    return bool(method) and is_fresh(workspace, shape_scope(shape_id), "rescore",
                                     [*INPUTS, method])
