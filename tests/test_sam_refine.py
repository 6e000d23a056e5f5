"""SAM box -> mask refinement with a tiny random transformers SAM."""

import sys

import numpy as np
import pytest
import torch

from partseg_cli import records, sam_refine
from partseg_cli.errors import ModelError


def _boxes(view: list[int], xyxy: list[list[float]]) -> records.Boxes:
    n = len(view)
    return records.Boxes(view=np.array(view, np.int32),
                         xyxy=np.array(xyxy, np.float32).reshape(n, 4),
                         part_probs=np.full((n, 1), 1.0, np.float32),
                         confidence=np.ones(n, np.float32), features=np.zeros((n, 2), np.float32),
                         part_names=["leg"])


@pytest.fixture(scope="module")
def refiner(tiny_models) -> sam_refine.Refiner:
    return sam_refine.load_refiner(model=str(tiny_models["sam"]))


@pytest.fixture(scope="module")
def views() -> np.ndarray:
    # non-square on purpose: masks must come back at (H, W) = (48, 64), not padded size
    return np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)


def test_one_mask_per_box_at_image_size(refiner, views):
    boxes = _boxes([1, 0, 1], [[2, 3, 30, 40], [10, 10, 50, 40], [0, 0, 64, 48]])
    masks = refiner.refine(views, boxes)
    assert masks.masks.shape == (3, 48, 64) and masks.masks.dtype == bool
    assert masks.scores.shape == (3,) and masks.scores.dtype == np.float32
    assert masks.refiner.startswith("sam:")
    # batching all boxes of a view gives what each box gives alone (same view, same order)
    alone = refiner.refine(views, _boxes([1], [[0, 0, 64, 48]]))
    np.testing.assert_array_equal(alone.masks[0], masks.masks[2])
    np.testing.assert_allclose(alone.scores[0], masks.scores[2], atol=1e-5)


def test_best_of_multimask_by_predicted_iou(refiner, views):
    # the chosen score is the max of SAM's three predicted IoUs for that box
    proc, model = refiner.processor, refiner.model
    enc = proc(images=views[0], input_boxes=[[[10.0, 10, 50, 40]]], return_tensors="pt")
    with torch.inference_mode():
        out = model(pixel_values=enc["pixel_values"], input_boxes=enc["input_boxes"].float(),
                    multimask_output=True)
    got = refiner.refine(views, _boxes([0], [[10, 10, 50, 40]]))
    np.testing.assert_allclose(got.scores[0], out.iou_scores[0, 0].max().item(), atol=1e-5)


def test_no_boxes(refiner, views):
    masks = refiner.refine(views, _boxes([], []))
    assert masks.masks.shape == (0, 48, 64) and masks.scores.shape == (0,)


def test_box_on_missing_view(refiner, views):
    with pytest.raises(ValueError, match="views outside"):
        refiner.refine(views, _boxes([2], [[0, 0, 5, 5]]))


def test_checkpoint_without_segment_anything(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails as if absent
    ckpt = tmp_path / "sam_vit_b.pth"
    ckpt.write_bytes(b"")
    with pytest.raises(ModelError, match=r"pip install 'partseg\[sam\]'"):
        sam_refine.load_refiner(checkpoint=str(ckpt), model_type="vit_b")


def test_bad_model_arguments(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        sam_refine.load_refiner(model=str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="save_pretrained"):
        sam_refine.load_refiner(model=str(tmp_path))
    with pytest.raises(ModelError, match="not both"):
        sam_refine.load_refiner(model="facebook/sam-vit-base", checkpoint="x.pth")
