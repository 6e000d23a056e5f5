"""SAM box -> mask refinement: a tiny random transformers SAM, and a random official
segment_anything vit_b checkpoint where segment_anything and torchvision import."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from partseg_cli import records, sam_refine
from partseg_cli.errors import ModelError
from partseg_cli.records import Boxes


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


class _TorchvisionForAnotherTorch(types.ModuleType):
    """segment_anything as it imports beside a torchvision built for another torch."""

    def __getattr__(self, name: str):
        raise RuntimeError("operator torchvision::nms does not exist")


@pytest.mark.parametrize("module", [None, _TorchvisionForAnotherTorch("segment_anything")],
                         ids=["absent", "mismatched-torchvision"])
def test_checkpoint_without_segment_anything(tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, "segment_anything", module)  # None: import fails
    ckpt = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, ckpt)
    with pytest.raises(ModelError, match=r"pip install 'partseg\[sam\]'.*DEVELOPERS.md"):
        sam_refine.load_refiner(checkpoint=str(ckpt), model_type="vit_b")


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint"],
                         ids=["missing", "empty", "garbage"])
def test_checkpoint_file_checked_before_segment_anything(tmp_path, monkeypatch, content):
    """A missing or unreadable --checkpoint is named before the missing package: it is
    the user's to fix whatever is installed."""
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # the import would fail
    ckpt = tmp_path / "sam_vit_b.pth"
    if content is not None:
        ckpt.write_bytes(content)
    with pytest.raises(ModelError) as info:
        sam_refine.load_refiner(checkpoint=str(ckpt), model_type="vit_b")
    assert str(ckpt) in str(info.value) and "segment_anything" not in str(info.value)


def test_bad_model_arguments(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        sam_refine.load_refiner(model=str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="save_pretrained"):
        sam_refine.load_refiner(model=str(tmp_path))
    with pytest.raises(ModelError, match="not both"):
        sam_refine.load_refiner(model="facebook/sam-vit-base", checkpoint="x.pth")


@pytest.mark.slow
def test_official_checkpoint_through_the_cli(capsys, monkeypatch, tmp_path):
    """`partseg sam-refine --checkpoint` with a real (random) official vit_b file: one
    view, so the ViT-B image encoder runs once (~10-30 s on CPU)."""
    segment_anything = pytest.importorskip("segment_anything")
    pytest.importorskip("torchvision")  # segment_anything's transforms import it
    from partseg_cli import cli
    from partseg_cli.store import Workspace, shape_scope

    def partseg(*args: object) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["partseg", *map(str, args)])
        monkeypatch.setenv("PARTSEG_NO_PROGRESS", "1")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        return int(exit_info.value.code or 0), capsys.readouterr().err

    torch.manual_seed(0)
    checkpoint = tmp_path / "sam_vit_b.pth"  # the format of the official sam_vit_b_01ec64.pth
    torch.save(segment_anything.sam_model_registry["vit_b"]().state_dict(), checkpoint)
    work = tmp_path / "ws"
    chair = Path(__file__).resolve().parents[1] / "examples" / "toy_chairs" / "Chair" / "chair0.off"
    code, err = partseg("run", chair, "--work", work, "--teacher", "simulated", "--parts",
                        "back,seat,leg,arm", "--views", "1", "--resolution", "64",
                        "--points", "500")
    assert code == 0, err

    loaded: list[sam_refine.Refiner] = []
    load = sam_refine.load_refiner
    monkeypatch.setattr(sam_refine, "load_refiner",
                        lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
    monkeypatch.setattr(sam_refine, "POSTPROCESS_CHUNK", 2)  # several chunks in one view
    code, err = partseg("sam-refine", work, "--checkpoint", checkpoint, "--model-type", "vit_b",
                        "--device", "cpu")
    assert code == 0 and "sam-refine: 1 computed" in err, err
    workspace = Workspace.open(work)
    scope = shape_scope(workspace.shape_ids()[0])
    boxes = workspace.read_record(scope, "detect", records.Boxes)
    masks = workspace.read_record(scope, "sam-refine", records.Masks)
    assert len(boxes) > 2  # else the chunking above is not exercised
    assert masks.masks.shape == (len(boxes), 64, 64) and masks.masks.dtype == bool
    assert masks.scores.shape == (len(boxes),) and masks.scores.dtype == np.float32
    assert masks.refiner == "segment_anything:vit_b"

    # Each stored mask is, of SAM's three candidates for its box alone, the one with the
    # highest predicted IoU. The predictor still holds the embedding of the only view.
    predictor = loaded[0].predictor
    for i, xyxy in enumerate(boxes.xyxy):
        box = predictor.transform.apply_boxes_torch(torch.as_tensor(xyxy[None]), (64, 64))
        with torch.inference_mode():
            candidates, iou, _ = predictor.predict_torch(None, None, boxes=box,
                                                         multimask_output=True)
        best = int(iou[0].argmax())
        np.testing.assert_array_equal(masks.masks[i], candidates[0, best].numpy())
        np.testing.assert_allclose(masks.scores[i], iou[0, best].item(), atol=1e-5)

    code, err = partseg("backproject", work, "--source", "masks")
    assert code == 0, err
    assert workspace.info(scope, "backproject")["params"]["source"] == "masks"
    code, err = partseg("vote", work)
    assert code == 0, err

    code, err = partseg("sam-refine", work, "--checkpoint", checkpoint, "--model-type", "vit_l",
                        "--force")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "does not match SAM model type 'vit_l'" in lines[0]
    assert "pass --model-type vit_b" in lines[0]


def two_colour_scene() -> tuple[np.ndarray, Boxes]:
    """A red object with a blue neighbour on white; one loose box over the red one that
    also takes in part of the blue."""
    image = np.full((1, 120, 160, 3), 255, np.uint8)
    image[0, 30:90, 40:100] = (200, 40, 40)
    image[0, 30:90, 100:130] = (40, 40, 200)
    boxes = Boxes(view=np.zeros(1, np.int32), xyxy=np.array([[30, 20, 112, 100]], np.float32),
                  part_probs=np.ones((1, 1), np.float32), confidence=np.ones(1, np.float32),
                  features=np.zeros((1, 4), np.float32))
    return image, boxes


def test_grabcut_masks_follow_the_colour_edge():
    from partseg_cli.sam_refine import GrabCutRefiner

    image, boxes = two_colour_scene()
    masks = GrabCutRefiner().refine(image, boxes)
    red = np.zeros((120, 160), bool)
    red[30:90, 40:100] = True
    mask = masks.masks[0]
    assert masks.masks.shape == (1, 120, 160) and masks.refiner.startswith("grabcut")
    assert (mask & red).sum() > 0.95 * red.sum()  # the object's colour region ...
    assert (mask & ~red).sum() < 0.05 * red.sum()  # ... and not the white or the blue
    # Not the box: the box holds 82 x 80 pixels, the red region 60 x 60.
    assert mask.sum() < 0.7 * 82 * 80
    again = GrabCutRefiner().refine(image, boxes)
    np.testing.assert_array_equal(mask, again.masks[0])


def test_grabcut_tiny_and_whole_image_boxes():
    from partseg_cli.sam_refine import GrabCutRefiner

    image, boxes = two_colour_scene()
    boxes.xyxy = np.array([[50, 50, 52, 51]], np.float32)
    np.testing.assert_array_equal(np.argwhere(GrabCutRefiner().refine(image, boxes).masks[0]),
                                  [[50, 50], [50, 51]])  # too small to model: the box
    boxes.xyxy = np.array([[0, 0, 160, 120]], np.float32)
    mask = GrabCutRefiner().refine(image, boxes).masks[0]
    assert 0 < mask.sum() < 0.5 * mask.size  # the objects, not the white background


def test_grabcut_keeps_the_box_when_its_cut_comes_out_empty():
    """Grey dots on white that run on past the box (a flat point render, the box on one
    part of it): GrabCut's models cannot tell the box from its margin and label every
    pixel background. The refiner then keeps the box, as SAM always returns a region,
    rather than an empty mask that would drop the box's evidence."""
    from partseg_cli.sam_refine import GrabCutRefiner

    rng = np.random.default_rng(0)
    image = np.full((1, 120, 160, 3), 255, np.uint8)
    image[0, 10:110, 10:150][rng.random((100, 140)) < 0.3] = 128
    _, boxes = two_colour_scene()
    boxes.xyxy = np.array([[40, 30, 120, 90]], np.float32)
    mask = GrabCutRefiner().refine(image, boxes).masks[0]
    expected = np.zeros((120, 160), bool)
    expected[30:90, 40:120] = True
    np.testing.assert_array_equal(mask, expected)
