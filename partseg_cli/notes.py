"""What a stored output says about its shape at a glance: counts and warnings.

A run that labelled 0 of 2000 points must not end with "vote: 1 computed" and exit 0
unremarked. Each output a stage stores gets `notes`: a one-line count (parts found,
points labelled; boxes per part) and warnings of known kinds (a shape with no part, a
part with no point, a teacher that produced nothing). They are kept with the output
(`Workspace.write(..., notes=...)`), so a cached rerun reports them again without
reading any array, and the stage's summary counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .records import Boxes, KnowledgeUnits, Labelling, PixelMaps

# Warning kinds, with the words the summary counts them in (singular, plural).
KINDS: dict[str, tuple[str, str]] = {
    "no-part": ("shape with no part found", "shapes with no part found"),
    "empty-part": ("part with no point", "parts with no point"),
    "empty-teacher": ("shape the teacher said nothing about",
                      "shapes the teacher said nothing about"),
    "no-units": ("shape with no knowledge unit", "shapes with no knowledge unit"),
}
PIXEL_CLAIM = 0.5  # a pixel map "says" a part where its probability reaches this


@dataclass
class Notes:
    """A count line and (kind, message) warnings about one stored output."""

    counts: str = ""
    warnings: list[tuple[str, str]] = field(default_factory=list)
    labelling: bool = False  # counts of a segmentation (printed per shape after a run)

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "warnings": [list(w) for w in self.warnings],
                "labelling": self.labelling}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Notes:
        data = data or {}
        return cls(str(data.get("counts", "")),
                   [(str(k), str(m)) for k, m in data.get("warnings", [])],
                   bool(data.get("labelling", False)))


def _names(part_names: list[str], n_parts: int) -> list[str]:
    return list(part_names) + [f"part {i}" for i in range(len(part_names), n_parts)]


def labelling_notes(labelling: Labelling) -> Notes:
    labels = np.asarray(labelling.point_labels)
    n_parts = max(len(labelling.part_names), int(labels.max()) + 1 if labels.size else 0)
    per_part = np.bincount(labels[labels >= 0], minlength=n_parts)
    labelled, found = int(per_part.sum()), int((per_part > 0).sum())
    notes = Notes(f"{found} of {n_parts} parts found, {labelled} of {labels.size} points "
                  "labelled", labelling=True)
    if found == 0:
        notes.warnings.append(("no-part", f"no part found: 0 of {labels.size} points "
                                          "labelled"))
        return notes
    names = _names(labelling.part_names, n_parts)
    notes.warnings += [("empty-part", f"part '{names[i]}' got no point")
                       for i in np.flatnonzero(per_part == 0)]
    return notes


def boxes_notes(boxes: Boxes) -> Notes:
    n_parts = len(boxes.part_names)
    per_part = np.bincount(boxes.labels, minlength=n_parts) if len(boxes) else \
        np.zeros(n_parts, np.int64)
    notes = Notes(f"{len(boxes)} boxes, {int((per_part > 0).sum())} of {n_parts} parts "
                  "boxed")
    if len(boxes) == 0:
        notes.warnings.append(("empty-teacher", f"the teacher ({boxes.teacher or 'unnamed'}) "
                                                "found no box in any view"))
    return notes


def pixel_notes(maps: PixelMaps) -> Notes:
    n_parts = len(maps.part_names)
    probs = np.asarray(maps.probs)
    peak = probs.reshape(-1, probs.shape[-1]).max(axis=0) if probs.size else \
        np.zeros(n_parts)
    claimed = int((peak >= PIXEL_CLAIM).sum())
    notes = Notes(f"{claimed} of {n_parts} parts with pixels >= {PIXEL_CLAIM}")
    if claimed == 0:
        notes.warnings.append(("empty-teacher", f"the teacher ({maps.teacher or 'unnamed'}) "
                                                f"gave no pixel >= {PIXEL_CLAIM} for any part"))
    return notes


def units_notes(units: KnowledgeUnits) -> Notes:
    notes = Notes(f"{len(units.labels)} knowledge units")
    if len(units.labels) == 0:
        notes.warnings.append(("no-units", "no knowledge unit: nothing the teacher said "
                                           "landed on a visible point"))
    return notes


def record_notes(record: Any) -> Notes | None:
    """The notes of a stored record, or None for records that have none (renders...)."""
    for cls, make in ((Labelling, labelling_notes), (Boxes, boxes_notes),
                      (PixelMaps, pixel_notes), (KnowledgeUnits, units_notes)):
        if isinstance(record, cls):
            return make(record)
    return None


def warning_summary(kinds: list[str]) -> str:
    """'1 shape with no part found, 2 parts with no point' (in KINDS order)."""
    parts = []
    for kind, (one, many) in KINDS.items():
        count = kinds.count(kind)
        if count:
            parts.append(f"{count} {one if count == 1 else many}")
    return ", ".join(parts)
