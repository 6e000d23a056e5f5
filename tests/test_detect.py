"""2D teachers: tiny random checkpoints loaded through the real from_pretrained path."""

import numpy as np
import pytest
import torch

from partseg_cli import detect
from partseg_cli.errors import ModelError

PARTS = ["arm", "Leg", "back"]
FEATURE_DIMS = {"owlv2": 16, "owlvit": 16, "grounding-dino": 32}  # from tiny_models configs


@pytest.fixture(scope="module")
def views() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)


def test_nms_greedy_chain():
    # b0 suppresses b1 (IoU 0.43); b2 overlaps only the suppressed b1, so it survives
    boxes = torch.tensor([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert detect.nms(boxes, scores, 0.3).tolist() == [0, 2]
    assert detect.nms(boxes, scores, 0.5).tolist() == [0, 1, 2]
    # b0 alone in its group: b1 is kept and now suppresses b2
    assert detect.nms(boxes, scores, 0.3, groups=torch.tensor([0, 1, 1])).tolist() == [0, 1]
    # order of the output follows the score
    assert detect.nms(boxes, torch.tensor([0.1, 0.2, 0.3]), 0.5).tolist() == [2, 1, 0]
    assert detect.nms(boxes[:0], scores[:0]).numel() == 0


def test_box_iou_and_conversion():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [20, 20, 30, 30]])
    assert torch.allclose(detect.box_iou(a, b), torch.tensor([[25 / 175, 0.0]]))
    xyxy = detect.cxcywh_to_xyxy(torch.tensor([[[0.5, 0.25, 0.2, 0.5]]]),
                                 torch.tensor([[100.0, 40.0]]))
    assert torch.allclose(xyxy, torch.tensor([[[40.0, 0.0, 60.0, 20.0]]]))


def test_prompts_and_caption_spans():
    assert detect.format_prompts(["leg"], category="chair") == ["a leg of a chair"]
    assert detect.format_prompts(["leg"]) == ["a leg of a object"]
    with pytest.raises(ValueError, match="{part}"):
        detect.format_prompts(["leg"], template="a photo")
    caption, spans = detect.grounding_caption(PARTS, category="Chair")
    assert caption == "a arm of a chair . a leg of a chair . a back of a chair ."
    assert [caption[s:e] for s, e in spans] == ["arm", "leg", "back"]
    # tokens: [CLS] a ar ##m of . [SEP] with char offsets; only "ar ##m" belong to part 0
    offsets = np.array([[0, 0], [0, 1], [2, 4], [4, 5], [6, 8], [9, 10], [0, 0]])
    special = np.array([1, 0, 0, 0, 0, 0, 1], bool)
    got = detect.token_part_map(offsets, special, np.array([[2, 5], [9, 12]]))
    assert got.tolist() == [[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]]


def test_unknown_teacher_lists_valid_names():
    with pytest.raises(ModelError, match="clipseg, grounding-dino, owlv2, owlvit"):
        detect.load_teacher("glip")


def test_missing_or_empty_model_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        detect.load_teacher("owlv2", model=str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="save_pretrained") as info:
        detect.load_teacher("clipseg", model=str(tmp_path))
    assert "HF_HUB_OFFLINE" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["owlv2", "owlvit", "grounding-dino"])
def test_box_teacher_well_formed(name, tiny_models, views):
    teacher = detect.load_teacher(name, model=str(tiny_models[name]))
    boxes = teacher.detect(views, PARTS, threshold=0.0, batch_size=1, category="chair")
    n = len(boxes)
    assert n > 0 and boxes.teacher.startswith(name)
    assert boxes.view.dtype == np.int32 and set(boxes.view) <= {0, 1}
    assert np.all(np.diff(boxes.view) >= 0)
    assert boxes.xyxy.shape == (n, 4) and boxes.xyxy.dtype == np.float32
    assert np.all((boxes.xyxy >= 0) & (boxes.xyxy <= 64))
    assert np.all(boxes.xyxy[:, 2:] >= boxes.xyxy[:, :2])
    assert boxes.part_probs.shape == (n, 3) and boxes.part_probs.dtype == np.float32
    assert np.all((boxes.part_probs >= 0) & (boxes.part_probs <= 1))
    assert np.allclose(boxes.part_probs.sum(1), 1, atol=1e-5)
    assert np.all((boxes.confidence >= 0) & (boxes.confidence <= 1))
    assert boxes.features.shape == (n, FEATURE_DIMS[name])
    assert boxes.part_names == PARTS
    # NMS ran per view and part: no same-view same-part pair overlaps beyond 0.5
    iou = detect.box_iou(torch.from_numpy(boxes.xyxy), torch.from_numpy(boxes.xyxy)).numpy()
    same = (boxes.view[:, None] == boxes.view) & (boxes.labels[:, None] == boxes.labels)
    assert not np.any((iou > 0.5 + 1e-6) & same & ~np.eye(n, dtype=bool))
    # batching does not change the result, and a threshold of 1 keeps nothing
    again = teacher.detect(views, PARTS, threshold=0.0, batch_size=4, category="chair")
    np.testing.assert_allclose(again.xyxy, boxes.xyxy, atol=1e-4)
    none = teacher.detect(views, PARTS, threshold=1.0)
    assert none.xyxy.shape == (0, 4) and none.features.shape == (0, FEATURE_DIMS[name])


def test_grounding_dino_caption_too_long(tiny_models, views):
    teacher = detect.load_teacher("grounding-dino", model=str(tiny_models["grounding-dino"]))
    with pytest.raises(ValueError, match="shorter prompt template"):
        teacher.detect(views, [f"part{i}" for i in range(12)])


def test_clipseg_pixel_maps(tiny_models, views):
    teacher = detect.load_teacher("clipseg", model=str(tiny_models["clipseg"]))
    maps = teacher.segment(views, PARTS, batch_size=1, category="chair")
    assert maps.probs.shape == (2, 64, 64, 3) and maps.probs.dtype == np.float16
    assert np.all((maps.probs >= 0) & (maps.probs <= 1)) and maps.probs.std() > 0
    assert maps.part_names == PARTS and maps.teacher.startswith("clipseg")
    # the shared-vision decoder path equals the model's own forward on (image, prompt) pairs
    proc, model = teacher.processor, teacher.model
    prompts = detect.format_prompts(PARTS, category="chair")
    enc = proc(text=prompts * 2, images=[views[0]] * 3 + [views[1]] * 3, padding=True,
               return_tensors="pt")
    with torch.inference_mode():
        reference = model(**enc).logits.reshape(2, 3, *enc["pixel_values"].shape[-2:])
        cond = model.get_conditional_embeddings(batch_size=3, input_ids=enc["input_ids"][:3],
                                                attention_mask=enc["attention_mask"][:3])
        ours = teacher._decode(enc["pixel_values"][::3], cond)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
