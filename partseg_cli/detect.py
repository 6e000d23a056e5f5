"""2D teachers: open-vocabulary part detectors (B-VLM) and part segmenters (P-VLM).

Each teacher wraps a `transformers` checkpoint loaded with `from_pretrained`, takes the
rendered views as (V, H, W, 3) uint8 in original pixels and returns records in original
pixels (`records.Boxes`, `records.PixelMaps`); the model's own processor does the
resizing and normalisation it was trained with.

Teachers are built through two registries of small builder functions, `BOX_TEACHERS`
and `PIXEL_TEACHERS`; `load_teacher` dispatches on the name and lists the valid names
on a miss. They stand in for GLIP (PartSLIP, PartDistill, PartSTAD), which is not
installable (reference-details.md, "2D teachers").

Prompts: each part gets one phrase, `prompt_template.format(part=..., category=...)`.
The default "a {part} of a {category}" names the object so that "leg of a chair" is
not confused with a human leg; an empty category becomes "object". Names are cleaned
first (`prompt_name`: "frame_horizontal_bar" -> "frame horizontal bar",
"StorageFurniture" -> "storage furniture"); `--category` replaces a shape's category
(a single file has none, a plain folder lends its own name). The text actually sent
is stored with the detections (``Boxes.prompts`` / ``PixelMaps.prompts``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import threading
import urllib.parse
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from partseg_cli import records
from partseg_cli.errors import InputError, ModelError, PartsegError, first_line
from partseg_cli.pipeline import StageReport, resolve_device, run_per_shape
from partseg_cli.records import Boxes, PixelMaps, Shape
from partseg_cli.store import Workspace, shape_scope

if TYPE_CHECKING:
    import torch

    from partseg_cli.trained_teacher import TrainedTeacher

DEFAULT_MODELS = {
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "owlvit": "google/owlvit-base-patch32",
    "grounding-dino": "IDEA-Research/grounding-dino-tiny",
    "clipseg": "CIDAS/clipseg-rd64-refined",
}
DEFAULT_TEMPLATE = "a {part} of a {category}"
DEFAULT_CATEGORY = "object"  # fills {category} when the shape has none


# --- prompts --------------------------------------------------------------------------


def prompt_name(name: str) -> str:
    """A dataset's part or category name as words: underscores and hyphens become
    spaces, CamelCase is split, and it is lowercased ("StorageFurniture" -> "storage
    furniture", "frame_horizontal_bar" -> "frame horizontal bar")."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


def format_prompts(part_names: list[str], template: str = DEFAULT_TEMPLATE,
                   category: str = "") -> list[str]:
    """One text query per part: `template` with {part} and {category} filled in, both
    cleaned by `prompt_name`.

    Raises ValueError when the template lacks {part} (every query would be the same).
    """
    if "{part}" not in template:
        raise ValueError(f"prompt template {template!r} must contain {{part}}")
    category = prompt_name(category) or DEFAULT_CATEGORY
    return [template.format(part=prompt_name(name), category=category) for name in part_names]


def grounding_caption(part_names: list[str], template: str = DEFAULT_TEMPLATE,
                      category: str = "") -> tuple[str, np.ndarray]:
    """GLIP / Grounding DINO caption "p1 . p2 . p3 ." and each part name's char span.

    Returns (caption, spans) with spans (P, 2) int64 [start, end) of the part name (not the
    whole phrase) in the lowercased caption: a part is scored on its own name's tokens
    only, so words the phrases share (the category) do not make every part fire.
    """
    phrases = [p.lower() for p in format_prompts(part_names, template, category)]
    prefix_len = len(format_prompts(["\0"], template, category)[0].split("\0")[0])
    starts = np.cumsum([0] + [len(p) + 3 for p in phrases[:-1]])  # 3 = len(" . ")
    name_start = starts + prefix_len
    spans = np.stack([name_start, name_start + [len(prompt_name(n)) for n in part_names]],
                     axis=1)
    return " . ".join(phrases) + " .", spans.astype(np.int64)


def token_part_map(offsets: np.ndarray, special: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(P, L) bool: which tokens (char offsets (L, 2), special (L,) bool) fall in each span.

    A token belongs to a part when its first character lies inside the part's span.
    """
    start = offsets[None, :, 0]
    inside = (start >= spans[:, :1]) & (start < spans[:, 1:]) & (offsets[None, :, 1] > start)
    return inside & ~special[None, :]


# --- box utilities --------------------------------------------------------------------


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of XYXY boxes a (N, 4) and b (M, 4) -> (N, M)."""
    import torch

    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5,
        groups: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression, optionally per group (e.g. per part and view).

    boxes (N, 4) XYXY, scores (N,), groups (N,) int (boxes of different groups never
    suppress each other). Returns kept indices (K,) int64, highest score first.

    Greedy NMS keeps box i iff no *kept* higher-scoring box overlaps it more than the
    threshold. That is solved as a fixed point over the whole IoU matrix: after k rounds
    the first k boxes (by score) are final, and it usually settles in a few rounds.
    """
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].float()
    overlap = box_iou(b, b) > iou_threshold
    if groups is not None:
        g = groups[order]
        overlap &= g[:, None] == g[None, :]
    overlap = torch.triu(overlap, diagonal=1)  # [j, i]: higher-ranked j would suppress i
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for _ in range(len(order)):
        new = ~(overlap & keep[:, None]).any(dim=0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


def cxcywh_to_xyxy(boxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Normalised (..., 4) centre/size boxes -> XYXY pixels; scale (..., 2) = (sx, sy)."""
    import torch

    centre, size = boxes[..., :2], boxes[..., 2:]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1) * scale.repeat(1, 2)


# --- loading --------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


# config.json "model_type" of the checkpoints each loader takes (a folder of another
# type is named as such, instead of failing deep inside transformers)
MODEL_TYPES = {"owlv2": "owlv2", "owlvit": "owlvit", "grounding-dino": "grounding-dino",
               "clipseg": "clipseg", "SAM": "sam"}
HUB_CHECK_SECONDS = 2.0


def _folder_model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def hub_offline() -> bool:
    """Whether the Hugging Face hub cannot be used: HF_HUB_OFFLINE is set, or a TCP
    connection to it (HF_ENDPOINT) does not open within HUB_CHECK_SECONDS. Checked once
    per process, so an unreachable hub costs 2 s instead of a minute of retries."""
    return _hub_offline(os.environ.get("HF_HUB_OFFLINE", ""),
                        os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


@functools.lru_cache(maxsize=4)
def _hub_offline(flag: str, endpoint: str) -> bool:
    if flag.strip().lower() in ("1", "true", "yes", "on"):
        return True
    url = urllib.parse.urlparse(endpoint)
    address = (url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http"
                                                              else 443))
    opened: list[bool] = []

    def connect() -> None:  # in a thread: name resolution itself has no timeout
        try:
            socket.create_connection(address, timeout=HUB_CHECK_SECONDS).close()
            opened.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(HUB_CHECK_SECONDS)
    return not opened


def from_pretrained(cls: Any, name: str, what: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(name)` with failures turned into a one-line ModelError.

    A local folder must hold a checkpoint of the type ``what`` loads; a hub id is read
    from the local cache only when the hub is unreachable (`hub_offline`)."""
    local = _looks_like_path(name) or Path(name).expanduser().is_dir()
    if local:
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelError(f"{what} model folder {name} does not exist; pass a folder "
                             "written by save_pretrained or a Hugging Face model id")
        found, expected = _folder_model_type(folder), MODEL_TYPES.get(what)
        if found and expected and found != expected:
            raise ModelError(f"{what} model folder {name} holds a {found!r} model, not "
                             f"{expected!r}; pass a {what} checkpoint (or the teacher that "
                             f"loads {found!r})")
        source = str(folder)
    else:
        source = name
        if hub_offline():
            kwargs["local_files_only"] = True
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as err:
        offline = "" if local or not kwargs.get("local_files_only") else (
            "the Hugging Face hub is unreachable (or HF_HUB_OFFLINE is set) and it is not "
            "in the local cache; ")
        raise ModelError(
            f"cannot load {what} model {name!r} ({offline}{first_line(err)}). Supply it as a "
            "Hugging Face model id (downloaded once with network access, then read from the "
            "cache in $HF_HOME, default ~/.cache/huggingface; set HF_HUB_OFFLINE=1 to use "
            "the cache only) or as a local folder written by save_pretrained"
        ) from err


def torch_device(device: str) -> torch.device:
    """"cpu", "cuda[:i]" or "auto" -> torch.device; ModelError when CUDA is asked for but absent."""
    import torch

    device = resolve_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return torch.device(device)


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (V, H, W, 3) uint8, got {images.shape} {images.dtype}")


# --- box teachers ---------------------------------------------------------------------


class BoxTeacher(ABC):
    """An open-vocabulary detector giving part boxes for all views of a shape.

    Per query (candidate box) the model gives per-part sigmoid scores s (P,). A box's
    `confidence` is max(s), its `part_probs` are s / sum(s) (sigmoid scores normalised
    over the part queries: which part, given that it is a part), and its `features` the
    detector's own embedding of the box. Boxes under `threshold` are dropped, then NMS
    runs per view and per part (argmax of part_probs).
    """

    name = ""

    def __init__(self, model: Any, processor: Any, device: torch.device, model_name: str):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.model_name = model_name

    @abstractmethod
    def _predict(self, images: list[np.ndarray], part_names: list[str], template: str,
                 category: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch -> (log scores (n, Q, P) = log sigmoid of the part logits, boxes
        (n, Q, 4) XYXY original pixels, features (n, Q, D))."""

    def _inputs(self, **kwargs: Any) -> dict[str, torch.Tensor]:
        import torch

        enc = self.processor(return_tensors="pt", **kwargs)
        return {k: v.to(self.device) for k, v in enc.items() if isinstance(v, torch.Tensor)}

    def detect(self, images: np.ndarray, part_names: list[str],
               prompt_template: str = DEFAULT_TEMPLATE, threshold: float = 0.1,
               batch_size: int = 4, category: str = "", nms_iou: float = 0.5) -> records.Boxes:
        """Detect part boxes in every view.

        images (V, H, W, 3) uint8; part_names P names; prompt_template with {part} and
        optionally {category}; threshold on confidence in [0, 1]; nms_iou the IoU above
        which a lower-scoring box of the same part and view is suppressed. Returns Boxes in
        original pixel coordinates (XYXY), ordered by view then decreasing confidence.
        """
        import torch

        with torch.inference_mode():
            return self._detect(images, part_names, prompt_template, threshold, batch_size,
                                category, nms_iou)

    def _detect(self, images: np.ndarray, part_names: list[str], prompt_template: str,
                threshold: float, batch_size: int, category: str, nms_iou: float
                ) -> records.Boxes:
        import torch

        _check_images(images)
        if not part_names:
            raise ValueError("no part names to detect")
        height, width = images.shape[1:3]
        views, xyxy, scores, feats = [], [], [], []
        for start in range(0, len(images), max(1, batch_size)):
            batch = list(images[start:start + max(1, batch_size)])
            log_s, boxes, features = self._predict(batch, part_names, prompt_template, category)
            limit = boxes.new_tensor([width, height, width, height])
            boxes = torch.minimum(boxes.clamp(min=0), limit)
            # NMS per view keeps the IoU matrix at (Q, Q) however many views are batched
            for i in range(len(batch)):
                conf = log_s[i].max(dim=1).values.exp()
                sel = torch.nonzero(conf > threshold)[:, 0]
                keep = sel[nms(boxes[i, sel], conf[sel], nms_iou,
                               groups=log_s[i, sel].argmax(dim=1))]
                views.append(torch.full_like(keep, start + i))
                xyxy.append(boxes[i, keep])
                scores.append(log_s[i, keep])
                feats.append(features[i, keep])
        view, box, score, feat = (torch.cat(x) for x in (views, xyxy, scores, feats))
        conf = score.max(dim=1).values.exp()
        # s / sum(s) as a softmax of log s: exact even when every sigmoid underflows
        probs = score.softmax(dim=1)
        return records.Boxes(
            view=view.cpu().numpy().astype(np.int32),
            xyxy=box.float().cpu().numpy(),
            part_probs=probs.float().cpu().numpy(),
            confidence=conf.float().cpu().numpy(),
            features=feat.float().cpu().numpy(),
            part_names=list(part_names),
            teacher=f"{self.name}:{self.model_name}",
            prompts=self.prompts(part_names, prompt_template, category),
        )

    def prompts(self, part_names: list[str], template: str, category: str) -> list[str]:
        """The text the model is given: one query per part."""
        return format_prompts(part_names, template, category)


class OwlTeacher(BoxTeacher):
    """OWL-ViT / OWLv2: one text query per part; features are the per-box class embeddings
    (the image-side embeddings the text queries are matched against)."""

    def __init__(self, *args: Any, pads_to_square: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # OWLv2 pads each image to a square at the bottom/right before resizing, so its
        # normalised boxes are relative to the padded side; OWL-ViT stretches instead.
        self.pads_to_square = pads_to_square

    def _predict(self, images, part_names, template, category):
        import torch

        prompts = format_prompts(part_names, template, category)
        # OWL text encoders take 16 tokens; truncation keeps an over-long prompt usable
        enc = self._inputs(text=[prompts] * len(images), images=images, truncation=True)
        out = self.model(**enc)
        height, width = images[0].shape[:2]
        size = (max(width, height),) * 2 if self.pads_to_square else (width, height)
        scale = torch.tensor([size], dtype=out.pred_boxes.dtype, device=out.pred_boxes.device)
        boxes = cxcywh_to_xyxy(out.pred_boxes, scale)
        return torch.nn.functional.logsigmoid(out.logits), boxes, out.class_embeds


class GroundingDinoTeacher(BoxTeacher):
    """Grounding DINO: one caption "p1 . p2 . p3 ." (GLIP style); a part's score is the max
    token score over its name's tokens; features are the decoder's last hidden state per
    query (d_model = 256 for the released models, like GLIP's 256-d box features)."""

    def _predict(self, images, part_names, template, category):
        import torch

        caption, spans = grounding_caption(part_names, template, category)
        tok = self.processor.tokenizer(caption, return_offsets_mapping=True,
                                       return_special_tokens_mask=True)
        part_tokens = token_part_map(np.asarray(tok["offset_mapping"]),
                                     np.asarray(tok["special_tokens_mask"], bool), spans)
        max_len = self.model.config.max_text_len
        missing = [n for n, row in zip(part_names, part_tokens[:, :max_len], strict=True)
                   if not row.any()]
        if missing:
            raise ValueError(f"the caption is longer than the model's {max_len} text tokens; "
                             f"parts {missing} fall outside it: use a shorter prompt template")
        enc = self._inputs(text=[caption] * len(images), images=images, truncation=True,
                           max_length=max_len)
        out = self.model(**enc)
        n_tok = min(part_tokens.shape[1], out.logits.shape[-1])
        token_scores = torch.nn.functional.logsigmoid(out.logits[..., :n_tok])  # (n, Q, L)
        mask = torch.as_tensor(part_tokens[:, :n_tok], device=token_scores.device)
        scores = token_scores[:, :, None, :].masked_fill(~mask, -torch.inf).amax(dim=-1)
        height, width = images[0].shape[:2]
        scale = torch.tensor([[width, height]], dtype=out.pred_boxes.dtype,
                             device=out.pred_boxes.device)
        return scores, cxcywh_to_xyxy(out.pred_boxes, scale), out.last_hidden_state

    def prompts(self, part_names: list[str], template: str, category: str) -> list[str]:
        return [grounding_caption(part_names, template, category)[0]]  # one caption


# --- pixel teachers -------------------------------------------------------------------


class PixelTeacher:
    """CLIPSeg: a per-part sigmoid map per view, upsampled to the image size."""

    name = "clipseg"

    def __init__(self, model: Any, processor: Any, device: torch.device, model_name: str):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.model_name = model_name

    def segment(self, images: np.ndarray, part_names: list[str],
                prompt_template: str = DEFAULT_TEMPLATE, batch_size: int = 4,
                category: str = "") -> records.PixelMaps:
        """images (V, H, W, 3) uint8 -> PixelMaps.probs (V, H, W, P) float16 in [0, 1].

        The vision encoder runs once per view; only CLIPSeg's light decoder runs per
        (view, part) pair, conditioned on the part's text embedding.
        """
        import torch

        with torch.inference_mode():
            return self._segment(images, part_names, prompt_template, batch_size, category)

    def _segment(self, images: np.ndarray, part_names: list[str], prompt_template: str,
                 batch_size: int, category: str) -> records.PixelMaps:
        import torch

        _check_images(images)
        if not part_names:
            raise ValueError("no part names to segment")
        prompts = format_prompts(part_names, prompt_template, category)
        text = self.processor.tokenizer(prompts, padding=True, truncation=True,
                                       return_tensors="pt")
        cond = self.model.get_conditional_embeddings(
            batch_size=len(prompts), input_ids=text["input_ids"].to(self.device),
            attention_mask=text["attention_mask"].to(self.device))  # (P, D)
        n_parts = len(prompts)
        height, width = images.shape[1:3]
        out = np.empty((len(images), height, width, n_parts), np.float16)
        for start in range(0, len(images), max(1, batch_size)):
            batch = list(images[start:start + max(1, batch_size)])
            pixels = self.processor.image_processor(batch, return_tensors="pt")["pixel_values"]
            logits = self._decode(pixels.to(self.device), cond)  # (n, P, h, w)
            probs = torch.nn.functional.interpolate(logits, size=(height, width),
                                                    mode="bilinear", align_corners=False)
            out[start:start + len(batch)] = (probs.sigmoid().permute(0, 2, 3, 1)
                                             .half().cpu().numpy())
        return records.PixelMaps(probs=out, part_names=list(part_names),
                                 teacher=f"{self.name}:{self.model_name}", prompts=prompts)

    def _decode(self, pixels: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """pixels (n, 3, s, s), cond (P, D) -> logits (n, P, s, s); same as the model's
        forward on every (image, prompt) pair, without repeating the vision encoder."""
        vision = self.model.clip.get_image_features(pixel_values=pixels,
                                                    output_hidden_states=True)
        n, n_parts = len(pixels), len(cond)
        # hidden_states[0] is the patch embedding, hence +1 (as in the model's forward)
        activations = [vision.hidden_states[i + 1].repeat_interleave(n_parts, dim=0)
                       for i in self.model.extract_layers]
        logits = self.model.decoder(activations, cond.repeat(n, 1)).logits
        return logits.reshape(n, n_parts, *logits.shape[-2:])


# --- registries -----------------------------------------------------------------------


def _build_owl(v2: bool) -> Callable[[str, torch.device], BoxTeacher]:
    def build(model: str, device: torch.device) -> BoxTeacher:
        import transformers

        name = "owlv2" if v2 else "owlvit"
        cls = transformers.Owlv2ForObjectDetection if v2 else transformers.OwlViTForObjectDetection
        teacher = OwlTeacher(from_pretrained(cls, model, name),
                             from_pretrained(transformers.AutoProcessor, model, name),
                             device, model, pads_to_square=v2)
        teacher.name = name
        return teacher

    return build


def _build_grounding_dino(model: str, device: torch.device) -> BoxTeacher:
    import transformers

    teacher = GroundingDinoTeacher(
        from_pretrained(transformers.GroundingDinoForObjectDetection, model, "grounding-dino"),
        from_pretrained(transformers.AutoProcessor, model, "grounding-dino"), device, model)
    teacher.name = "grounding-dino"
    return teacher


def _build_clipseg(model: str, device: torch.device) -> PixelTeacher:
    import transformers

    return PixelTeacher(
        from_pretrained(transformers.CLIPSegForImageSegmentation, model, "clipseg"),
        from_pretrained(transformers.AutoProcessor, model, "clipseg"), device, model)


BOX_TEACHERS: dict[str, Callable[[str, torch.device], BoxTeacher]] = {
    "owlv2": _build_owl(v2=True),
    "owlvit": _build_owl(v2=False),
    "grounding-dino": _build_grounding_dino,
}
PIXEL_TEACHERS: dict[str, Callable[[str, torch.device], PixelTeacher]] = {
    "clipseg": _build_clipseg,
}
# Measuring instruments that read the ground truth (see simulated.py), not teachers.
SIMULATED_TEACHERS = ("simulated", "simulated-pixels")
# Networks trained by `partseg train-teacher` (trained_teacher.py): boxes / pixel maps.
TRAINED_TEACHERS = ("trained", "trained-pixels")


def load_teacher(name: str, model: str | None = None, device: str = "cpu"
                 ) -> BoxTeacher | PixelTeacher | TrainedTeacher:
    """Build the teacher `name` from `model` (a Hugging Face id or a save_pretrained folder;
    default DEFAULT_MODELS[name]; for a trained teacher, its model folder) on `device`
    ("cpu", "cuda", "cuda:1" or "auto").

    Raises ModelError for an unknown name (listing the valid ones) or an unloadable model.
    """
    builders = {**BOX_TEACHERS, **PIXEL_TEACHERS}
    if name in TRAINED_TEACHERS:
        from .trained_teacher import TrainedTeacher

        if not model:
            raise ModelError(f"--teacher {name} needs --model DIR: a folder written by "
                             "`partseg train-teacher`")
        return TrainedTeacher.load(model, torch_device(device))
    if name not in builders:
        raise ModelError(f"unknown teacher {name!r}; valid teachers: "
                         f"{', '.join(sorted([*builders, *TRAINED_TEACHERS]))}")
    return builders[name](model or DEFAULT_MODELS[name], torch_device(device))


def check_model(teacher: str, model: str | None, root: Path) -> None:
    """Refuse in one line, without loading anything heavy, a ``--model`` its teacher
    could not load: a missing or foreign local folder, a trained teacher's folder that
    is missing, not a teacher or has a damaged weights file. For commands whose stages
    may all be cached (so that `load_teacher` never runs). A hub id is not checked (that
    needs the network); the simulated teachers take no model."""
    from .saved_model import check_weights, read_document, resolve_model_path

    if not model or teacher in SIMULATED_TEACHERS:
        return
    if teacher in TRAINED_TEACHERS:
        from .trained_teacher import KIND

        path = resolve_model_path(model, root)
        read_document(path, KIND)
        check_weights(path)
        return
    folder = Path(model).expanduser()
    if teacher not in MODEL_TYPES or not (_looks_like_path(model) or folder.is_dir()):
        return  # a hub id, or an unknown teacher (which `run` names)
    if not folder.is_dir():
        raise ModelError(f"{teacher} model folder {model} "
                         f"{'is a file' if folder.exists() else 'does not exist'}; pass a "
                         "folder written by save_pretrained or a Hugging Face model id")
    found, expected = _folder_model_type(folder), MODEL_TYPES[teacher]
    if found != expected:
        held = f"a {found!r} model" if found else "no model (no config.json model_type)"
        raise ModelError(f"{teacher} model folder {model} holds {held}, not {expected!r}; "
                         f"pass a {teacher} checkpoint written by save_pretrained")


# --- the `detect` stage -------------------------------------------------------------


@dataclass
class DetectConfig:
    """Options of `partseg detect` (see its --help)."""

    teacher: str = "owlv2"  # BOX_TEACHERS / PIXEL_TEACHERS / SIMULATED / TRAINED_TEACHERS
    model: str | None = None
    parts: list[str] | None = None
    prompt: str = DEFAULT_TEMPLATE
    category: str | None = None  # the object noun in prompts; default the shape's own
    threshold: float = 0.1
    preset: str = "glip-like"
    seed: int = 0
    batch_size: int = 4
    device: str = "cpu"

    def key_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"teacher": self.teacher, "parts": self.parts}
        if self.teacher in SIMULATED_TEACHERS:
            params.update(preset=self.preset, seed=self.seed)
        elif self.teacher in TRAINED_TEACHERS:  # run() adds the model folder's key
            params.update(threshold=self.threshold)
        else:
            params.update(model=self.model or DEFAULT_MODELS[self.teacher],
                          prompt=self.prompt, category=self.category,
                          threshold=self.threshold)
        return params


def prompt_parts(shape: Shape, parts: list[str] | None, category: str | None = None
                 ) -> list[str]:
    """The part names a teacher is asked for: --parts, the dataset's, or the built-in
    table of ``category`` (--category) or of the shape's category."""
    from .shapes import builtin_part_names

    category = category if category is not None else shape.category
    names = parts or shape.part_names or builtin_part_names(category)
    if not names:
        raise PartsegError(f"{shape.shape_id}: no part names known for category "
                           f"{category or '(none)'}; give them with --parts \"a,b,c\" (or "
                           "--category with a ShapeNetPart/PartNetE category, e.g. chair)")
    return list(names)


def check_part_names(workspace: Workspace, sources: dict[str, Path], parts: list[str] | None,
                     category: str | None, where: str) -> None:
    """Refuse at once, before anything is rendered, shapes none of which has part names
    to ask for (a single unlabelled file, a folder of them): what `prompt_parts` would
    fail on per shape. ``sources``: shape id -> the file it was loaded from; ``where``
    names the inputs."""
    from .shapes import builtin_part_names

    if parts or not sources:
        return
    for shape_id in sources:
        attrs = workspace.read(shape_scope(shape_id), "shape", names=[]).record_attrs
        if attrs.get("part_names") or builtin_part_names(
                category if category is not None else attrs.get("category") or ""):
            return
    what = (str(next(iter(sources.values()))) if len(sources) == 1
            else f"{where}: none of its {len(sources)} shapes")
    raise PartsegError(f"{what}: no part names to ask the teacher for (unlabelled, and no "
                       "known category); give --parts \"back,seat,leg,arm\" or --category "
                       "with a ShapeNetPart/PartNetE part list, e.g. --category chair")


def warn_unmatched_parts(workspace: Workspace, shape_ids: list[str],
                         parts: list[str] | None, none_refused: bool = False) -> None:
    """One warning line when ``--parts`` and the labelled shapes' ground-truth part names
    only partly agree. Not an error: `evaluate` scores a ground-truth part never asked
    for as missed (IoU 0 wherever the shape has it) and a part asked for that no ground
    truth names as an absent part (see evaluate.py), so the figures stay honest; but a
    misspelt name would otherwise cost a part's score without a word. The names compared
    are a shape's own list, which for LabeledDB is its category's (a shape lacking an
    engine still lists it), so a category's full --parts list draws no warning. With
    ``none_refused`` (the simulated teachers refuse a shape none of whose names is asked
    for, naming both lists) no warning precedes that error line."""
    if not parts:
        return
    unasked: dict[str, None] = {}  # ordered sets
    named: set[str] = set()
    labelled = []
    for shape_id in shape_ids:
        scope = shape_scope(shape_id)
        if "point_labels" not in ((workspace.info(scope, "shape") or {}).get("arrays") or {}):
            continue  # unlabelled: nothing to compare with
        names = workspace.read(scope, "shape", names=[]).record_attrs.get("part_names") or []
        labelled.append(shape_id)
        named.update(names)
        unasked.update((n, None) for n in names if n not in parts)
    unknown = [n for n in parts if n not in named]
    if not labelled or not (unasked or unknown) or (none_refused
                                                    and len(unknown) == len(parts)):
        return
    problems = []
    if unasked:
        problems.append(f"their ground-truth part(s) {', '.join(unasked)} are not asked for "
                        "(evaluate scores them as missed)")
    if unknown:
        problems.append(f"{', '.join(unknown)} in no ground truth of theirs (scored as "
                        "absent parts)")
    shown = ", ".join(labelled[:3]) + (", ..." if len(labelled) > 3 else "")
    some = "only some" if len(unknown) < len(parts) else "none of the"
    warnings.warn(f"detect: --parts {','.join(parts)} matches {some} part names of "
                  f"{len(labelled)} labelled shape(s) ({shown}): {'; '.join(problems)}",
                  stacklevel=3)


def simulated_ground_truth(workspace: Workspace, shape: Shape,
                           part_names: list[str]) -> np.ndarray:
    """(V,H,W) ground-truth label images indexed into ``part_names`` (other parts -> -1).

    Only the simulated teacher and refiner read these: they measure, they do not predict.
    """
    from .simulated import ground_truth_images

    if shape.point_labels is None:
        ground_truth_images(np.zeros((0, 0, 0), np.int32), None, shape.shape_id)  # raises
    index = {name: i for i, name in enumerate(part_names)}
    lookup = np.array([index.get(name, -1) for name in shape.part_names] + [-1], np.int32)
    labels = lookup[shape.point_labels]  # -1 labels pick the trailing -1
    if np.any(shape.point_labels >= 0) and not np.any(labels >= 0):
        # the shape is labelled, only under other names: saying it has no labels would
        # send the user looking for a problem in the data instead of in --parts
        raise InputError(shape.shape_id, f"the part names asked for "
                         f"({', '.join(part_names)}) do not match the shape's parts "
                         f"({', '.join(shape.part_names)}); fix `detect --parts` or leave it "
                         "out to use the shape's own")
    pixel_point = workspace.read(shape_scope(shape.shape_id), "render",
                                 ["pixel_point"]).arrays["pixel_point"]
    return ground_truth_images(pixel_point, labels, shape.shape_id)


def run(workspace: Workspace, shape_ids: list[str], config: DetectConfig,
        force: bool = False) -> StageReport:
    """Ask the teacher about every rendered view of every shape."""
    known = (*SIMULATED_TEACHERS, *TRAINED_TEACHERS, *DEFAULT_MODELS)
    if config.teacher not in known:
        raise PartsegError(f"unknown teacher {config.teacher!r}; choose one of "
                           f"{', '.join(known)}")
    if config.teacher in (*BOX_TEACHERS, *PIXEL_TEACHERS):
        try:  # a bad template fails here in one line, not on every shape
            format_prompts(["part"], config.prompt, "object")
        except (ValueError, KeyError, IndexError) as exc:
            raise PartsegError(f"--prompt {config.prompt!r}: use {{part}} and optionally "
                               f"{{category}}, e.g. {DEFAULT_TEMPLATE!r} ({exc})") from exc
    if config.teacher in SIMULATED_TEACHERS and config.model:
        # not an error (a script may pass one --model to every teacher it tries), but a
        # user who meant --teacher trained would otherwise read a simulation's figures
        warnings.warn(f"detect: --model {config.model} is ignored: --teacher "
                      f"{config.teacher} is a measuring instrument that reads the ground "
                      "truth and takes no model", stacklevel=2)
    teacher = None
    params = config.key_params()
    trained_on: list[str] = []
    if config.teacher in TRAINED_TEACHERS:
        from .saved_model import resolve_model_path

        # loaded first: its key (what it was trained on, not where the folder lies)
        # enters the detect key, and a missing or foreign folder stops here in one line
        model_path = resolve_model_path(config.model, workspace.root) if config.model else None
        teacher = load_teacher(config.teacher, str(model_path) if model_path else None,
                               config.device)
        params.update(model_key=teacher.key)

    def compute(shape_id: str) -> Boxes | PixelMaps:
        nonlocal teacher
        scope = shape_scope(shape_id)
        shape = workspace.read_record(scope, "shape", Shape)
        part_names = prompt_parts(shape, config.parts, config.category)
        if config.teacher in TRAINED_TEACHERS:
            images = workspace.read(scope, "render", ["rgb"]).arrays["rgb"]
            if config.teacher == "trained-pixels":
                out = teacher.segment(images, part_names, config.batch_size)
            else:
                out = teacher.detect(images, part_names, config.threshold, config.batch_size)
            digest = (workspace.info(scope, "shape") or {}).get("params", {}).get("digest")
            out.training_shape = teacher.trained_on(digest)
            if out.training_shape:
                trained_on.append(shape_id)
            return out
        if config.teacher in SIMULATED_TEACHERS:
            from .simulated import simulate_boxes, simulate_pixel_maps

            gt = simulated_ground_truth(workspace, shape, part_names)
            seed = config.seed + _stable_int(shape_id)
            if config.teacher == "simulated-pixels":
                return simulate_pixel_maps(gt, len(part_names), part_names, config.preset,
                                           seed=seed, category=shape.category)
            # Boxes are scored from what a detector sees: the rendered RGB and silhouette.
            render = workspace.read(scope, "render", ["rgb", "pixel_point"]).arrays
            return simulate_boxes(gt, len(part_names), part_names, config.preset, seed=seed,
                                  images=render["rgb"], foreground=render["pixel_point"] >= 0,
                                  category=shape.category)
        if teacher is None:  # loaded once, on the first shape that needs it
            teacher = load_teacher(config.teacher, config.model, config.device)
        images = workspace.read(scope, "render", ["rgb"]).arrays["rgb"]
        category = config.category if config.category is not None else shape.category
        if config.teacher in PIXEL_TEACHERS:
            return teacher.segment(images, part_names, config.prompt, config.batch_size,
                                   category)
        return teacher.detect(images, part_names, config.prompt, config.threshold,
                              config.batch_size, category)

    warn_unmatched_parts(workspace, shape_ids, config.parts,
                         none_refused=config.teacher in SIMULATED_TEACHERS)
    pixel_kind = config.teacher in PIXEL_TEACHERS or config.teacher.endswith("-pixels")
    params["kind"] = "pixels" if pixel_kind else "boxes"
    report = run_per_shape(workspace, "detect", shape_ids, params, ["shape", "render"],
                           compute, force)
    if trained_on:
        warnings.warn(f"{len(trained_on)} shape(s) were training shapes of the teacher "
                      f"({', '.join(trained_on[:4])}{', ...' if len(trained_on) > 4 else ''})"
                      "; evaluate does not score them", stacklevel=2)
    return report


def _stable_int(text: str) -> int:
    """A per-shape seed offset that does not depend on Python's hash randomisation."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
