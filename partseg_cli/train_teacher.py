"""`partseg train-teacher`: fit the trained 2D teacher on the renders of labelled shapes.

The shapes are loaded and rendered by the normal cached stages (`render`), so training
again with other network settings re-renders nothing. Inputs are the rendered RGB views
only (what a VLM sees, never depth, normals or labels); targets are the ground-truth
part of each pixel (`evaluate.gt_label_images`: mesh face labels, else point labels),
background where nothing is drawn, and foreground pixels without a label ignored.

Training is a fixed schedule (AdamW, cosine-decayed learning rate, `epochs` passes over
the views, random flips and small scale/shift jitter), seeded, and the last state is
saved. `restarts` runs it from seeds seed, seed+1, ... and keeps the run with the lowest
final training loss (the schedule sometimes ends in a poor optimum, which its own loss
shows). Nothing is chosen on shapes outside the training set: `target_miou` (a measuring
instrument of GLIP's quality, not the best teacher) holds folds of the training shapes
out in turn, finds the epoch at which their box 2D mIoU first reaches the target, and
stops the final training there (`calibrate_epochs`). The model folder (saved_model.py, kind
"teacher2d") records the part names, category, input size, network size, the training
shapes (ids and source digests, so `detect` and `evaluate` can tell a training shape
from a test one) and the config; its key hashes the config and the training renders'
keys, so an unchanged request is not retrained.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelError, PartsegError
from .pipeline import StageReport, progress
from .records import UNLABELLED, Shape, Views
from .saved_model import is_model_folder, load_model, save_model
from .store import Workspace, content_key, shape_scope
from .teacher_metrics import box_regions, teacher_miou_2d
from .trained_teacher import KIND, TrainedTeacher, frame_views, view_windows, window_grid

if TYPE_CHECKING:
    import torch

VERSION = 1  # bump when the training math or the saved format changes
IGNORE = -100  # target of foreground pixels without a ground-truth part
# Calibration scores its validation folds on views shrunk to about this side (block means of
# the RGB, centre samples of the labels): the network sees 64-128 px anyway, and a model
# scores the same on 400 and 800 px renders (README), at a sixteenth of the detect cost.
VALIDATION_SIDE = 200


@dataclass
class TrainTeacherConfig:
    """Options of `partseg train-teacher` (see its --help)."""

    # Chosen on the dev shapes (bench/bench_trained_teacher.py --data dev, 8 training
    # shapes x 10 views per category, held-out 2D mIoU of boxes; airplane / chair / lamp /
    # mug / table): 32 px 23/63/81/61/78 (thin airplane parts vanish), 64 px
    # 38/71/93/61/79, 96 px 26/33/92/63/75 (three poolings see too little context); 64 px
    # with 20 epochs collapses (16/32/90/0/78). 64 px, width 8, 40 epochs: the best
    # thin-part category at ~30 s CPU per category.
    input_size: int = 64  # network input side (views are resized to it)
    width: int = 8  # channels of the first level (models/teacher2d.py)
    levels: int = 3  # poolings of the U-Net
    epochs: int = 40
    batch_size: int = 8
    lr: float = 2e-3
    balance: float = 0.5  # class weights frequency**-balance against background dominance
    crop: bool = False  # the network sees a square around the object, not the whole view
    restarts: int = 4  # seeded runs; the lowest final training loss is kept
    # Calibration (None: the best-effort teacher): the epoch at which held-out folds of
    # the training shapes first reach this box 2D mIoU ends the final training.
    target_miou: float | None = None
    calibration_folds: int = 2
    seed: int = 0
    device: str = "cpu"

    def key_params(self) -> dict[str, Any]:
        params = asdict(self)
        del params["device"]
        return params


def check_config(config: TrainTeacherConfig) -> None:
    """One-line PartsegError for settings the network cannot take."""
    step = 2 ** config.levels
    if config.levels < 1 or config.width < 1 or config.input_size < step \
            or config.input_size % step:
        raise PartsegError(f"--input-size {config.input_size} must be a positive multiple "
                           f"of 2**levels = {step} (levels >= 1, width >= 1)")
    if config.epochs < 1 or config.batch_size < 1 or not config.lr > 0:
        raise PartsegError("--epochs and --batch-size must be at least 1 and --lr positive")
    if config.restarts < 1:
        raise PartsegError(f"--restarts {config.restarts} must be at least 1")
    if config.target_miou is not None and not 0 < config.target_miou <= 1:
        raise PartsegError(f"--target-miou {config.target_miou} must be in (0, 1]")
    if config.calibration_folds < 2:
        raise PartsegError(f"--calibration-folds {config.calibration_folds} must be at "
                           "least 2")


def check_out(out: Path) -> None:
    """Refuse, before any work, an --out that exists and is not a model folder."""
    if out.exists() and not is_model_folder(out) and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"{out}: exists and is not a partseg model folder; choose another "
                         "--out or remove it")


def training_targets(labels: np.ndarray, foreground: np.ndarray, size: int,
                     windows: np.ndarray | None = None) -> np.ndarray:
    """(V, H, W) part labels (-1 none) and foreground -> (V, size, size) int64 classes:
    0 background, 1 + p part p, IGNORE for drawn pixels without a label. Sampled at the
    network pixels' centres within each view's window ((V, 4) [x0, y0, w, h],
    `trained_teacher.view_windows`; default the whole view); past the view's border is
    background."""
    n_views, height, width = labels.shape
    if windows is None:
        windows = np.tile(np.array([0, 0, width, height], np.int64), (n_views, 1))
    rows, cols, inside = window_grid(windows, size, height, width)
    view = np.arange(n_views)[:, None, None]
    lab = labels[view, rows[:, :, None], cols[:, None, :]].astype(np.int64)
    fg = foreground[view, rows[:, :, None], cols[:, None, :]] & inside
    return np.where(fg, np.where(lab == UNLABELLED, IGNORE, lab + 1), 0)


def training_pairs(rgb: np.ndarray, labels: np.ndarray, foreground: np.ndarray,
                   config: TrainTeacherConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One shape's views -> the network's inputs (V, 3, S, S) and targets (V, S, S), framed
    as the teacher frames views at inference (`config.crop`)."""
    import torch

    windows = view_windows(rgb, config.crop)
    return (frame_views(rgb, config.input_size, windows),
            torch.from_numpy(training_targets(labels, foreground, config.input_size, windows)))


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flips and +-10% scale, +-6% shift of a batch (same for image
    and target); uncovered pixels become white background."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    n = len(x)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    scale = 1.0 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.12
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = flip / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - 1.0, grid, mode="bilinear", align_corners=False) + 1.0  # pad white
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", align_corners=False)
    return x, y[:, 0].long()  # padding 0 = background


def fit(images: torch.Tensor, targets: torch.Tensor, n_parts: int,
        config: TrainTeacherConfig, until: Callable[[int, Any], bool] | None = None
        ) -> tuple[Any, list[float]]:
    """Train a Teacher2D on (n, 3, S, S) images in [0, 1] and (n, S, S) int64 targets.

    until(epoch, net), called after each epoch (1-based; net in train mode), ends training
    early when it returns True; the learning-rate schedule stays that of config.epochs.
    Returns the network (eval mode, on config.device) and the mean loss of each epoch.
    """
    import torch
    from torch.nn import functional as F  # noqa: N812

    from .models.teacher2d import Teacher2D

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    net = Teacher2D(n_parts, config.width, config.levels).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    batch = max(1, min(config.batch_size, len(images)))
    per_epoch = math.ceil(len(images) / batch)
    total = max(1, config.epochs * per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    # Background covers most pixels and thin parts few: weigh each class by
    # frequency**-balance (0: plain cross-entropy, 1: inverse frequency), mean weight 1.
    counts = torch.bincount(targets[targets >= 0].flatten(), minlength=1 + n_parts).double()
    weight = torch.where(counts > 0, counts.clamp(min=1) ** -config.balance, 0.0)
    weight = (weight / weight[counts > 0].mean()).float().to(device)
    losses = []
    net.train()
    for _ in progress(range(config.epochs), desc="train-teacher", unit="epoch"):
        order = torch.randperm(len(images), generator=generator)
        epoch_loss = 0.0
        for start in range(0, len(images), batch):
            pick = order[start:start + batch]
            x, y = _augment(images[pick], targets[pick], generator)
            logits = net(x.to(device))
            loss = F.cross_entropy(logits, y.to(device), weight=weight, ignore_index=IGNORE)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            epoch_loss += float(loss.detach()) * len(pick)
        losses.append(epoch_loss / len(images))
        if until is not None and until(len(losses), net):
            break
    return net.eval(), losses


def fit_restarts(images: torch.Tensor, targets: torch.Tensor, n_parts: int,
                 config: TrainTeacherConfig, until: Callable[[int, Any], bool] | None = None
                 ) -> tuple[Any, list[float], list[dict[str, Any]]]:
    """`fit` from seeds config.seed .. config.seed + restarts - 1; the network and losses of
    the run with the lowest final training loss (the first on ties), and every run's
    {"seed", "final_loss"}. Only the training loss decides: no held-out label."""
    best: tuple[Any, list[float]] | None = None
    runs = []
    for seed in range(config.seed, config.seed + config.restarts):
        net, losses = fit(images, targets, n_parts, replace(config, seed=seed), until)
        runs.append({"seed": seed, "final_loss": losses[-1]})
        if best is None or losses[-1] < best[1][-1]:
            best = (net, losses)
    assert best is not None  # restarts >= 1 (check_config)
    return best[0], best[1], runs


def validation_views(rgb: np.ndarray, labels: np.ndarray, foreground: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shape's views shrunk by an integer factor to about VALIDATION_SIDE: block-mean
    RGB, and the labels / foreground of each block's centre pixel."""
    step = max(1, min(rgb.shape[1:3]) // VALIDATION_SIDE)
    height, width = (rgb.shape[1] // step) * step, (rgb.shape[2] // step) * step
    blocks = rgb[:, :height, :width].reshape(len(rgb), height // step, step, width // step,
                                             step, 3)
    small = np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)
    centre = step // 2
    return (small, labels[:, centre:height:step, centre:width:step],
            foreground[:, centre:height:step, centre:width:step])


def validation_miou(net: Any, part_names: list[str], config: TrainTeacherConfig,
                    shapes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """Mean over ``shapes`` ((rgb, labels, foreground) from `validation_views`) of the
    box teacher's confidence-weighted 2D mIoU (teacher_metrics.teacher_miou_2d), what
    `evaluate --teacher-2d` reports after `backproject`: boxes covering at least its
    whole-object fraction of their view's object (here its drawn pixels, there its
    visible points) are dropped first, as lifting drops them."""
    import torch

    from .backproject import BackprojectConfig

    teacher = TrainedTeacher(net, part_names, config.input_size, torch.device(config.device),
                             "calibration", "", set(), crop=config.crop)
    values = []
    for rgb, labels, foreground in shapes:
        boxes = teacher.detect(rgb, part_names)
        regions = box_regions(boxes.xyxy, boxes.view, foreground)
        covered = regions.sum(axis=(1, 2))
        drawn = foreground.sum(axis=(1, 2))[boxes.view]
        keep = (covered > 0) & (covered < BackprojectConfig.whole_object_fraction
                                * np.maximum(drawn, 1))
        values.append(teacher_miou_2d(labels, regions[keep], boxes.view[keep],
                                      boxes.labels[keep], boxes.confidence[keep],
                                      len(part_names)))
    return float(np.nanmean(values)) if values else math.nan


def calibrate_epochs(pairs: list[tuple[torch.Tensor, torch.Tensor]],
                     validation: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     part_names: list[str], config: TrainTeacherConfig
                     ) -> tuple[int, dict[str, Any]]:
    """The training length at which the teacher reaches config.target_miou, from the
    training shapes alone.

    pairs / validation: per training shape, its `training_pairs` and `validation_views`.
    Shape i is in fold i % calibration_folds; each fold in turn is held out while a
    network (config.seed, one run) trains on the others under the full config.epochs
    schedule, scored on the fold after every epoch and stopped once the score reaches the
    target. The folds' first reaching epochs (config.epochs for a fold that never
    reaches it) are averaged. Returns (epochs, a record of every fold's scores).
    """
    import torch

    assert config.target_miou is not None
    folds = min(config.calibration_folds, len(pairs))
    reached, curves = [], []
    for fold in range(folds):
        held = [i for i in range(len(pairs)) if i % folds == fold]
        kept = [i for i in range(len(pairs)) if i % folds != fold]
        curve: list[float] = []

        def score(_: int, net: Any, held: list[int] = held, curve: list[float] = curve
                  ) -> bool:
            net.eval()
            curve.append(validation_miou(net, part_names, config,
                                         [validation[i] for i in held]))
            net.train()
            return curve[-1] >= config.target_miou

        fit(torch.cat([pairs[i][0] for i in kept]), torch.cat([pairs[i][1] for i in kept]),
            len(part_names), replace(config, restarts=1), until=score)
        hit = curve[-1] >= config.target_miou
        reached.append(len(curve) if hit else config.epochs)
        curves.append({"held_out": held, "miou": [round(v, 4) for v in curve],
                       "reached": hit})
    epochs = max(1, round(float(np.mean(reached))))
    return epochs, {"target_miou": config.target_miou, "folds": curves, "epochs": epochs}


def _check_shapes(shapes: list[Shape]) -> list[str]:
    """The common part names of labelled shapes; PartsegError naming the first shape
    that is unlabelled or has other parts."""
    if not shapes:
        raise PartsegError("train-teacher: no shapes to train on")
    for shape in shapes:
        if shape.point_labels is None:
            raise PartsegError(f"{shape.shape_id}: has no ground-truth part labels; "
                               "train-teacher learns from labelled shapes only")
        if list(shape.part_names) != list(shapes[0].part_names):
            raise PartsegError(
                f"{shape.shape_id}: parts {', '.join(shape.part_names)} differ from "
                f"{shapes[0].shape_id}'s {', '.join(shapes[0].part_names)}; train one "
                "teacher per category (select the shapes with --shape-id)")
    if not shapes[0].part_names:
        raise PartsegError(f"{shapes[0].shape_id}: no part names to learn")
    return list(shapes[0].part_names)


def run(workspace: Workspace, shape_ids: list[str], config: TrainTeacherConfig, out: Path,
        force: bool = False) -> StageReport:
    """Train on the rendered views of ``shape_ids`` and save the model folder ``out``.

    Skipped when ``out`` already holds a model trained under the same key.
    """
    import torch

    from .evaluate import gt_label_images

    check_out(out)
    report = StageReport("train-teacher")
    shapes = [workspace.read_record(shape_scope(sid), "shape", Shape) for sid in shape_ids]
    part_names = _check_shapes(shapes)
    render_keys = [workspace.key(shape_scope(sid), "render") for sid in shape_ids]
    if None in render_keys:
        raise PartsegError(f"{shape_ids[render_keys.index(None)]}: not rendered yet")
    key = content_key("train-teacher", VERSION, config.key_params(),
                      [f"{sid}:{k}" for sid, k in zip(shape_ids, render_keys, strict=True)])
    if not force and is_model_folder(out):
        try:
            if load_model(out, kind=KIND).key == key:
                report.skipped += shape_ids
                return report
        except ModelError:
            pass  # unreadable or another kind: replaced below
    pairs, validation = [], []
    for shape in progress(shapes, desc="views"):
        views = workspace.read_record(shape_scope(shape.shape_id), "render", Views)
        labels, foreground = gt_label_images(shape, views), views.pixel_point >= 0
        pairs.append(training_pairs(views.rgb, labels, foreground, config))
        if config.target_miou is not None:
            validation.append(validation_views(views.rgb, labels, foreground))
    calibration, until = None, None
    if config.target_miou is not None:
        if len(shapes) < 2:
            raise PartsegError("--target-miou needs at least 2 training shapes (it holds "
                               "some of them out to score the teacher on)")
        stop, calibration = calibrate_epochs(pairs, validation, part_names, config)

        def until(epoch: int, _: Any) -> bool:
            return epoch >= stop

    net, losses, runs = fit_restarts(torch.cat([p[0] for p in pairs]),
                                     torch.cat([p[1] for p in pairs]), len(part_names),
                                     config, until)
    training = [{"id": sid, "digest": (workspace.info(shape_scope(sid), "shape") or {})
                 .get("params", {}).get("digest", ""), "render_key": k}
                for sid, k in zip(shape_ids, render_keys, strict=True)]
    render_params = (workspace.info(shape_scope(shape_ids[0]), "render") or {}).get("params", {})
    meta = {"part_names": part_names,
            "category": ",".join(sorted({s.category for s in shapes if s.category})),
            "input_size": config.input_size, "width": config.width, "levels": config.levels,
            "crop": config.crop,
            "feature_dim": net.feature_dim, "config": config.key_params(),
            "training_shapes": training, "render": render_params,
            "final_loss": losses[-1] if losses else None, "epochs_trained": len(losses),
            "restarts": runs, "calibration": calibration}
    save_model(out, kind=KIND, key=key, meta=meta, state_dict=net.state_dict())
    report.computed += shape_ids
    return report
