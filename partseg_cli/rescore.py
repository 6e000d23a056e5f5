"""Backward distillation as a stage: re-score the teacher's knowledge units (Eq. 4).

The rescore stage runs the student with backward distillation and stores the shape's
KnowledgeUnits with ``rescored_confidence`` (C_bd) set, so the teacher's 2D quality can
be evaluated before (C) and after (C_bd) re-scoring (PartDistill supplementary
Eq. 5-8). C_bd is the agreement between the student's argmax and each unit's label over
the unit's mask, taken when backward distillation starts (`distill.backward_trigger`,
or at ``bd_latest`` of the epochs at the latest). The stored C_bd is Eq. 4's; how the
student itself is then re-weighted is `DistillConfig.bd_weighting`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .distill import (
    DistillConfig,
    DistillResult,
    PointCloudLike,
    detected_part_names,
    distill_pre,
    distill_tta,
    rescore_units,
    stage_params,
)
from .errors import PartsegError
from .pipeline import StageReport, collection_key, run_per_shape, stored_under
from .records import KnowledgeUnits, Shape
from .store import Workspace, shape_scope

__all__ = ["rescore", "rescore_collection", "rescore_units", "run", "with_rescored"]


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


def run(workspace: Workspace, shape_ids: list[str], config: DistillConfig,
        force: bool = False) -> StageReport:
    """Store each shape's knowledge units with C_bd set (stage "rescore").

    ``tta`` re-scores per shape; ``pre`` with one student over all ``shape_ids``.
    """
    params = stage_params(config)
    if config.mode == "tta":
        def compute(shape_id: str) -> KnowledgeUnits:
            scope = shape_scope(shape_id)
            shape = workspace.read_record(scope, "shape", Shape)
            units = workspace.read_record(scope, "backproject", KnowledgeUnits)
            return rescore(shape, units, len(detected_part_names(workspace, shape_id)), config)

        return run_per_shape(workspace, "rescore", shape_ids, params, ["shape", "backproject"],
                             compute, force)
    if config.mode != "pre":
        raise PartsegError(f"unknown --mode {config.mode!r}; choose tta or pre")
    report = StageReport("rescore")
    key = collection_key(workspace, "rescore", shape_ids, params, ["shape", "backproject"])
    if not force and stored_under(workspace, "rescore", shape_ids, key):
        report.skipped = list(shape_ids)
        return report
    part_names = detected_part_names(workspace, shape_ids[0])
    collection = [(workspace.read_record(shape_scope(s), "shape", Shape),
                   workspace.read_record(shape_scope(s), "backproject", KnowledgeUnits))
                  for s in shape_ids]
    for shape_id, units in zip(shape_ids, rescore_collection(collection, len(part_names),
                                                             config), strict=True):
        workspace.write(shape_scope(shape_id), "rescore", units, key=key, params=params)
        report.computed.append(shape_id)
    return report
