"""Box -> mask refinement with Segment Anything (SAM), or GrabCut without weights.

Three refiners give the same `Refiner` interface (numpy images and `records.Boxes` in
original pixels in, `records.Masks` at image size out):

- `model`: a `transformers` SAM (`SamModel` / `SamProcessor.from_pretrained`, a Hugging
  Face id or a save_pretrained folder; default "facebook/sam-vit-base");
- `checkpoint`: an official `segment_anything` .pth file (`sam_model_registry`), which
  needs the optional extra `pip install 'partseg[sam]'` and torchvision;
- `model="grabcut"`: OpenCV's GrabCut on the rendered RGB (`GrabCutRefiner`), a classical
  box-prompted segmenter whose masks follow appearance edges: the stand-in for SAM when
  no weights are at hand.

`model="sam-oracle"` (alias "simulated") is not a refiner but a measuring instrument:
the ground-truth region cut to the box (`simulated.simulate_masks`), an upper bound.

For every view the image embedding is computed once and that view's boxes go through
the mask decoder in batches (at most POSTPROCESS_CHUNK masks are upsampled to full size
at a time); of SAM's three candidate masks per box the one with the highest predicted
IoU is kept, and that prediction is the mask's score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partseg_cli import records
from partseg_cli.detect import from_pretrained, torch_device
from partseg_cli.errors import ModelError, PartsegError, first_line, state_dict_mismatch
from partseg_cli.pipeline import StageReport, run_per_shape
from partseg_cli.records import Boxes, Masks, Shape
from partseg_cli.saved_model import load_state_dict_file
from partseg_cli.store import Workspace, shape_scope

DEFAULT_SAM_MODEL = "facebook/sam-vit-base"
POSTPROCESS_CHUNK = 16  # boxes upsampled to full resolution at a time (bounds memory)
GRABCUT = "grabcut"
ORACLE_MODELS = ("sam-oracle", "simulated")  # ground-truth masks: an instrument, no model
GRABCUT_ITERATIONS = 5  # OpenCV's own examples use 5
GRABCUT_MARGIN = 0.1  # the crop around a box: this fraction of its size, for background
GRABCUT_MAX_SIDE = 256  # larger crops are shrunk to this side first (GrabCut is O(pixels))


class Refiner(ABC):
    """Turns each part box into a mask of the object region inside it."""

    name = ""

    @abstractmethod
    def _refine_view(self, image: np.ndarray, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image (H, W, 3) uint8, xyxy (b, 4) float32 pixels -> masks (b, H, W) bool and
        scores (b,) float32 (predicted IoU of the chosen mask)."""

    @torch.inference_mode()
    def refine(self, images: np.ndarray, boxes: records.Boxes) -> records.Masks:
        """images (V, H, W, 3) uint8 and Boxes over those views -> Masks aligned with the
        boxes: masks (B, H, W) bool, scores (B,) float32."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (V, H, W, 3) uint8, got {images.shape} "
                             f"{images.dtype}")
        if len(boxes) and (boxes.view.min() < 0 or boxes.view.max() >= len(images)):
            raise ValueError(f"boxes refer to views outside 0..{len(images) - 1}")
        height, width = images.shape[1:3]
        masks = np.zeros((len(boxes), height, width), bool)
        scores = np.zeros(len(boxes), np.float32)
        for view in np.unique(boxes.view):
            idx = np.flatnonzero(boxes.view == view)
            masks[idx], scores[idx] = self._refine_view(images[view],
                                                        boxes.xyxy[idx].astype(np.float32))
        return records.Masks(masks=masks, scores=scores, refiner=self.name)


class TransformersSamRefiner(Refiner):
    """SAM through `transformers` (SamModel + SamProcessor)."""

    def __init__(self, model: Any, processor: Any, device: torch.device, model_name: str):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.name = f"sam:{model_name}"

    def _refine_view(self, image, xyxy):
        enc = self.processor(images=image, input_boxes=[xyxy.tolist()], return_tensors="pt")
        embeddings = self.model.get_image_embeddings(enc["pixel_values"].to(self.device))
        out = self.model(image_embeddings=embeddings,
                         input_boxes=enc["input_boxes"].to(self.device, torch.float32),
                         multimask_output=True)
        iou = out.iou_scores[0]  # (b, 3)
        best = iou.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        low_res = out.pred_masks[0][rows, best]  # (b, h, w) logits
        masks = [
            self.processor.post_process_masks(
                [low_res[i:i + POSTPROCESS_CHUNK, None].cpu()], enc["original_sizes"],
                enc["reshaped_input_sizes"])[0][:, 0]
            for i in range(0, len(best), POSTPROCESS_CHUNK)
        ]
        return torch.cat(masks).numpy().astype(bool), iou[rows, best].float().cpu().numpy()


class SegmentAnythingRefiner(Refiner):
    """SAM through the official `segment_anything` package (SamPredictor)."""

    def __init__(self, sam: Any, device: torch.device, model_type: str):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam.to(device).eval())
        self.name = f"segment_anything:{model_type}"

    def _refine_view(self, image, xyxy):
        self.predictor.set_image(image)  # RGB HWC uint8, embedding computed once here
        box = self.predictor.transform.apply_boxes_torch(
            torch.as_tensor(xyxy, device=self.predictor.device), image.shape[:2])
        masks, scores = [], []
        # predict_torch upsamples all three candidates of every box to 1024 px and then to
        # image size before we pick one, so the boxes go through in chunks to bound memory
        for i in range(0, len(box), POSTPROCESS_CHUNK):
            chunk, iou, _ = self.predictor.predict_torch(
                point_coords=None, point_labels=None, boxes=box[i:i + POSTPROCESS_CHUNK],
                multimask_output=True)  # chunk (b, 3, H, W) bool, iou (b, 3)
            best = iou.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            masks.append(chunk[rows, best].cpu())
            scores.append(iou[rows, best].float().cpu())
        return torch.cat(masks).numpy(), torch.cat(scores).numpy()


class GrabCutRefiner(Refiner):
    """OpenCV's GrabCut (Rother et al. 2004) initialised with each box as its rectangle:
    colour models of the object inside the box and of the background around it, then a
    graph cut along the image's edges. Appearance only: no weights, no ground truth.

    Each box is cut in its own crop (the box plus GRABCUT_MARGIN of its size on every side,
    shrunk to at most GRABCUT_MAX_SIDE pixels), several boxes at once in threads (OpenCV
    releases the GIL). Boxes too small to model (under 3 pixels a side), and boxes whose cut
    comes out empty, keep the whole box.
    GrabCut has no quality estimate: every score is 1. OpenCV's random generator is
    re-seeded before each cut, so equal inputs give equal masks.
    """

    def __init__(self, iterations: int = GRABCUT_ITERATIONS, workers: int | None = None):
        import os

        self.iterations = iterations
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.name = f"grabcut:{iterations}"

    def _refine_view(self, image, xyxy):
        from concurrent.futures import ThreadPoolExecutor

        height, width = image.shape[:2]
        with ThreadPoolExecutor(self.workers) as pool:
            crops = list(pool.map(lambda box: self._cut(image, box), xyxy))
        masks = np.zeros((len(xyxy), height, width), bool)
        for b, (mask, (x0, y0)) in enumerate(crops):
            masks[b, y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = mask
        return masks, np.ones(len(xyxy), np.float32)

    def _cut(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The mask of one box inside its crop, and the crop's top-left corner."""
        import cv2

        height, width = image.shape[:2]
        x0, y0 = np.clip(np.floor(box[:2]).astype(int), 0, [width - 1, height - 1])
        x1, y1 = np.clip(np.ceil(box[2:]).astype(int), [x0 + 1, y0 + 1], [width, height])
        mx, my = int(np.ceil(GRABCUT_MARGIN * (x1 - x0))), int(np.ceil(GRABCUT_MARGIN * (y1 - y0)))
        cx0, cy0 = max(x0 - mx, 0), max(y0 - my, 0)
        cx1, cy1 = min(x1 + mx, width), min(y1 + my, height)
        crop = image[cy0:cy1, cx0:cx1]
        scale = min(1.0, GRABCUT_MAX_SIDE / max(crop.shape[:2]))
        if scale < 1.0:
            crop = cv2.resize(crop, (max(int(crop.shape[1] * scale), 1),
                                     max(int(crop.shape[0] * scale), 1)),
                              interpolation=cv2.INTER_AREA)
        rx0, ry0 = int((x0 - cx0) * scale), int((y0 - cy0) * scale)
        rx1 = min(int(np.ceil((x1 - cx0) * scale)), crop.shape[1])
        ry1 = min(int(np.ceil((y1 - cy0) * scale)), crop.shape[0])
        # GrabCut needs background samples: a box filling its whole crop (the whole image)
        # gives up a pixel on every side.
        if rx0 == 0 and ry0 == 0 and rx1 == crop.shape[1] and ry1 == crop.shape[0]:
            rx0, ry0, rx1, ry1 = 1, 1, rx1 - 1, ry1 - 1
        full = np.zeros((cy1 - cy0, cx1 - cx0), bool)
        full[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0] = True
        if rx1 - rx0 < 3 or ry1 - ry0 < 3:
            return full, (cx0, cy0)
        label = np.zeros(crop.shape[:2], np.uint8)
        background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(np.ascontiguousarray(crop[..., ::-1]), label,
                        (rx0, ry0, rx1 - rx0, ry1 - ry0), background, foreground,
                        self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error:  # a region of one colour: nothing to separate
            return full, (cx0, cy0)
        mask = (label == cv2.GC_FGD) | (label == cv2.GC_PR_FGD)
        if not mask.any():
            # GrabCut gave everything to the background: its colour models could not tell
            # the box from its surround (a flat grey render whose margin holds the same
            # grey). SAM always returns a region for a box; an empty mask would silently
            # drop the box's evidence (on the flat dev renders 54 of 66 boxes of a chair).
            return full, (cx0, cy0)
        if scale < 1.0:
            mask = cv2.resize(mask.astype(np.uint8), (cx1 - cx0, cy1 - cy0),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
        return mask, (cx0, cy0)


def check_checkpoint_file(checkpoint: str) -> Path:
    """The --checkpoint path, refused in one line naming it unless it is a file."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise ModelError(f"SAM checkpoint {checkpoint} {what}; download one of the "
                         "official sam_vit_*.pth files from the segment-anything repository")
    return path


def _load_segment_anything(checkpoint: str, model_type: str, device: torch.device) -> Refiner:
    # the file first: a missing or damaged checkpoint is the user's to fix whatever is
    # installed, and reading it needs torch only
    state = load_state_dict_file(check_checkpoint_file(checkpoint), "a SAM checkpoint")
    try:
        from segment_anything import sam_model_registry
    except (ImportError, RuntimeError, OSError) as err:
        # segment_anything imports torchvision; a torchvision built for another torch
        # fails with RuntimeError ("operator torchvision::nms does not exist") or OSError
        raise ModelError(f"a SAM checkpoint file needs the segment_anything package and a "
                         f"torchvision matching torch {torch.__version__} ({first_line(err)}); "
                         "install them with `pip install 'partseg[sam]'` and the torchvision "
                         "built for your torch (DEVELOPERS.md, 'SAM checkpoints'), or use a "
                         "transformers SAM model instead") from err
    if model_type not in sam_model_registry:
        raise ModelError(f"unknown SAM model type {model_type!r}; valid types: "
                         f"{', '.join(sorted(sam_model_registry))}")
    sam = sam_model_registry[model_type]()  # built empty; loaded below onto the CPU first
    problem = state_dict_mismatch(sam.state_dict(), state)
    if problem:
        actual = _checkpoint_type(state)
        hint = (f"it is a {actual} checkpoint: pass --model-type {actual}" if actual else
                "pass the model type it was trained as with --model-type")
        raise ModelError(f"{checkpoint} does not match SAM model type {model_type!r} "
                         f"({problem}); {hint}")
    sam.load_state_dict(state)
    return SegmentAnythingRefiner(sam, device, model_type)


# Width of the image encoder of each official SAM (segment_anything/build_sam.py), to name
# the model type a mismatching checkpoint was trained as.
_ENCODER_WIDTH_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_ENCODER_WEIGHT = "image_encoder.patch_embed.proj.weight"


def _checkpoint_type(state: dict[str, torch.Tensor]) -> str | None:
    """The official model type whose image encoder width ``state`` has, if any."""
    weight = state.get(_ENCODER_WEIGHT)
    return None if weight is None else _ENCODER_WIDTH_TYPE.get(weight.shape[0])


def load_refiner(model: str | None = None, checkpoint: str | None = None,
                 model_type: str = "vit_h", device: str = "cpu") -> Refiner:
    """A SAM refiner from a transformers `model` (id or folder; the default when neither is
    given is DEFAULT_SAM_MODEL), an official `checkpoint` file of `model_type`, or
    `GrabCutRefiner` for model "grabcut".

    Raises ModelError when the model cannot be found or loaded, or when both are given.
    """
    if model and checkpoint:
        raise ModelError("give either a transformers SAM model or a segment_anything "
                         "checkpoint, not both")
    if model == GRABCUT:
        return GrabCutRefiner()
    dev = torch_device(device)
    if checkpoint:
        return _load_segment_anything(checkpoint, model_type, dev)
    import transformers

    name = model or DEFAULT_SAM_MODEL
    return TransformersSamRefiner(from_pretrained(transformers.SamModel, name, "SAM"),
                                  from_pretrained(transformers.SamProcessor, name, "SAM"),
                                  dev, name)


# --- the `sam-refine` stage ---------------------------------------------------------


@dataclass
class RefineConfig:
    """Options of `partseg sam-refine` (see its --help)."""

    model: str | None = None  # transformers SAM id/path, "grabcut", or an ORACLE_MODELS name
    checkpoint: str | None = None  # official segment-anything checkpoint file
    model_type: str = "vit_h"
    seed: int = 0
    device: str = "cpu"

    def key_params(self) -> dict[str, Any]:
        if self.checkpoint:
            return {"checkpoint": self.checkpoint, "model_type": self.model_type}
        if self.model in ORACLE_MODELS:
            return {"model": "sam-oracle", "seed": self.seed}
        if self.model == GRABCUT:
            # "empty": what an empty cut becomes (older masks stayed empty)
            return {"model": GRABCUT, "iterations": GRABCUT_ITERATIONS,
                    "margin": GRABCUT_MARGIN, "max_side": GRABCUT_MAX_SIDE, "empty": "box"}
        return {"model": self.model or DEFAULT_SAM_MODEL}


def run(workspace: Workspace, shape_ids: list[str], config: RefineConfig,
        force: bool = False) -> StageReport:
    """Turn every stored box into a SAM mask, stored beside the boxes."""
    refiner = None
    if config.checkpoint:  # at once, even when every shape is cached under its path
        check_checkpoint_file(config.checkpoint)

    def compute(shape_id: str) -> Masks:
        nonlocal refiner
        from .backproject import teacher_output

        scope = shape_scope(shape_id)
        boxes = teacher_output(workspace, scope)
        if not isinstance(boxes, Boxes):
            raise PartsegError(f"{shape_id}: detections are pixel maps; sam-refine needs a "
                               "box teacher (owlv2, owlvit, grounding-dino, simulated)")
        if config.model in ORACLE_MODELS:
            from .detect import simulated_ground_truth
            from .simulated import simulate_masks

            shape = workspace.read_record(scope, "shape", Shape)
            gt = simulated_ground_truth(workspace, shape, boxes.part_names)
            return simulate_masks(gt, boxes, seed=config.seed)
        if refiner is None:
            refiner = load_refiner(config.model, config.checkpoint, config.model_type,
                                   config.device)
        images = workspace.read(scope, "render", ["rgb"]).arrays["rgb"]
        return refiner.refine(images, boxes)

    return run_per_shape(workspace, "sam-refine", shape_ids, config.key_params(),
                         ["shape", "render", "detect"], compute, force)
