"""Counts and warnings about stored outputs (notes.py)."""

from __future__ import annotations

import numpy as np

from partseg_cli.notes import Notes, record_notes, warning_summary
from partseg_cli.records import Boxes, KnowledgeUnits, Labelling, PixelMaps


def test_labelling_counts_parts_and_points_and_warns_about_empty_ones() -> None:
    labels = np.array([0, 0, 2, -1, 2], np.int32)
    notes = record_notes(Labelling(labels, part_names=["back", "seat", "leg"]))
    assert notes.counts == "2 of 3 parts found, 4 of 5 points labelled"
    assert notes.warnings == [("empty-part", "part 'seat' got no point")]
    empty = record_notes(Labelling(np.full(4, -1, np.int32), part_names=["a", "b"]))
    assert [k for k, _ in empty.warnings] == ["no-part"]
    assert "0 of 4 points" in empty.warnings[0][1]


def test_teacher_that_said_nothing_is_named() -> None:
    none = Boxes(np.zeros(0, np.int32), np.zeros((0, 4), np.float32),
                 np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                 np.zeros((0, 8), np.float32), ["leg", "seat"], teacher="owlv2:x")
    notes = record_notes(none)
    assert notes.counts == "0 boxes, 0 of 2 parts boxed"
    assert notes.warnings[0][0] == "empty-teacher" and "owlv2:x" in notes.warnings[0][1]
    one = Boxes(np.zeros(1, np.int32), np.ones((1, 4), np.float32),
                np.array([[0.2, 0.8]], np.float32), np.ones(1, np.float32),
                np.zeros((1, 8), np.float32), ["leg", "seat"])
    assert record_notes(one).warnings == [] and "1 of 2 parts" in record_notes(one).counts
    faint = PixelMaps(np.full((2, 4, 4, 3), 0.3, np.float16), ["a", "b", "c"])
    assert record_notes(faint).warnings[0][0] == "empty-teacher"
    units = KnowledgeUnits(np.zeros(0, np.int32), np.zeros((0, 5), bool),
                           np.zeros(0, np.float32), np.zeros(0, np.int32),
                           np.zeros(0, np.int32), "boxes")
    assert record_notes(units).warnings[0][0] == "no-units"


def test_notes_round_trip_and_summary_counts_kinds() -> None:
    notes = Notes("x", [("empty-part", "part 'a' got no point")])
    assert Notes.from_json(notes.to_json()) == notes
    assert Notes.from_json(None) == Notes()
    assert warning_summary(["empty-part", "no-part", "empty-part"]) == \
        "1 shape with no part found, 2 parts with no point"
