"""BiPart (Fang et al.): bi-level distillation that adapts to unseen categories.

A frozen point encoder (``encoders.py``, as PartDistill's student) feeds a
category-agnostic extractor of two Point Transformer blocks and a two-layer head with
as many outputs as the largest training part count (``models/point_transformer.py``);
a category's parts are the head's first outputs, and its loss and predictions use
only those (softmax over the category's own parts).

Training (Algorithm 1): for each shape of a batch, a support set (the shape itself and
``support_size - 1`` shapes with its part list, `support.select_support`); K SGD steps
on the head only over the support set's summed distillation loss (PartDistill Eq. 3,
`distill.distillation_loss`, = BiPart Eq. 2); the adapted head's loss on the shape is
added to the outer loss, whose Adam step updates extractor and head. ``order="second"``
differentiates through the inner steps (MAML; the paper does not say which, and the
head is small enough that it costs little); ``"first"`` is first-order MAML.

Inference (Sec. 3.3.2): the support set (target first) from the target's workspace,
``test_inner_steps`` SGD steps at ``test_inner_lr`` on the head, then the adapted head
labels the target. Only knowledge units (pseudo-labels) enter; ground truth never.

Points: each shape enters the network as ``n_sample`` points (the paper's 2048) fixed
per shape by the seed; their extractor features are interpolated (3-NN, inverse
distance) to every point of the shape for its labelling.

Deviations, each an option with the paper's value reachable:
- ``lr`` is the paper's 1e-4. Its 10 epochs over ~12k ShapeNetPart shapes are thousands
  of Adam steps and over tens of shapes only tens, so 1e-3 looked natural; the dev
  shapes did not support it (generalisation mIoU 69.2 at 1e-4 against 68.8 at 1e-3,
  bench/bench_bipart.py), so the paper's value stays; ``--lr`` changes it.
- ``normalise``: as PartDistill's stage, the released code's per-point normalisation
  ('point') by default, the paper's per-unit area ('area') an option.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError, PartsegError
from ..notes import Notes, record_notes
from ..pipeline import StageReport, collection_key, progress, stored_under
from ..records import KnowledgeUnits, Labelling, Shape
from ..store import Workspace, shape_scope
from ..threads import torch_threads
from .support import (
    SELECTIONS,
    basis_points,
    bps_features,
    part_point_ratio,
    select_support,
)

if TYPE_CHECKING:  # torch is imported inside the functions that need it
    import torch

    from ..models.point_transformer import BiPartNet
    from . import AdaptConfig

KIND = "bipart"
STAGE = "bipart"


@dataclass
class BiPartConfig:
    """BiPart settings; paper values unless the docstring above says why not."""

    encoder: str = "pointnn"
    """Frozen point encoder (encoders.ENCODERS)."""
    encoder_checkpoint: str | None = None
    """state_dict of the encoder (a parameterised encoder must be given one: BiPart's
    encoder is pre-trained and frozen)."""
    n_sample: int = 2048
    """Points per shape fed to the network."""
    width: int = 96
    """Extractor feature width."""
    blocks: int = 2
    """Point Transformer blocks in the extractor; 0 = no extractor (Table 3, rows 1-3)."""
    neighbours: int = 16
    """Neighbours of each point's self-attention."""
    head_hidden: int = 128
    """Hidden width of the two-layer head."""
    head_outputs: int = 0
    """Outputs of the head; 0: the largest part count of the training categories. The
    paper sizes it by the largest category of the whole dataset, so that an unseen
    category with more parts than any training one still fits: give that count here."""
    bilevel: bool = True
    """Bi-level (meta) training; False trains extractor and head on each shape's own
    loss only (Table 3, rows 1-2)."""
    epochs: int = 10
    """Outer epochs (the paper's 10)."""
    batch_size: int = 8
    """Shapes per outer step."""
    lr: float = 1e-4
    """Outer Adam learning rate (the paper's)."""
    inner_steps: int = 5
    """Inner SGD steps on the head during training."""
    inner_lr: float = 0.1
    """Inner learning rate during training."""
    order: str = "second"
    """'second' (differentiate through the inner steps) or 'first' (first-order MAML)."""
    support: str = "part-perfect"
    """Support selection: random, similarity (BPS cosine) or part-perfect (Eq. 4)."""
    support_size: int = 8
    """Shapes per support set, the target included."""
    test_inner_steps: int = 10
    """Inner steps at inference; 0 predicts with the trained head (Table 3, row 1)."""
    test_inner_lr: float = 0.3
    """Inner learning rate at inference."""
    part_threshold: float = 0.01
    """Eq. 4: a part is present in a shape when its normalised ratio reaches this."""
    bps_points: int = 512
    """Basis points of the BPS features."""
    normalise: str = "point"
    """Distillation loss normalisation ('point' or the paper's 'area')."""
    class_weighting: bool = True
    """PartDistill's class weights in the loss (per shape, from its units)."""
    seed: int = 0
    """Seed of initialisation, point samples and random supports."""
    device: str = "auto"
    """'cpu', 'cuda', 'cuda:N' or 'auto'."""
    threads: int = 1
    """torch CPU threads while BiPart runs (0: torch's own setting). Its ops are many
    and small (2048 points, 16 neighbours, a 128-wide head), so on the shared 2-core
    machine two threads mostly wait on each other: a training step took 48 s with 2
    threads against 4 s with 1 under the same load."""


# Options that shape the trained network (the saved model's key) and those that only
# change how it is applied.
_INFERENCE_OPTIONS = ("test_inner_steps", "test_inner_lr", "device", "threads")


def training_params(config: BiPartConfig) -> dict[str, Any]:
    params = dataclasses.asdict(config)
    for name in _INFERENCE_OPTIONS:
        params.pop(name)
    return params


@dataclass
class Prepared:
    """One shape on the device, ready for the network."""

    part_names: list[str]
    sample: np.ndarray  # (S,) int64 indices of the network's points into the shape
    feats: torch.Tensor  # (S, D) frozen encoder features, standardised per shape
    xyz: torch.Tensor  # (S, 3) float32
    nbr: torch.Tensor  # (S, k) int64 neighbour indices into the S points
    masks: torch.Tensor  # (K, S) bool unit masks on the sampled points
    labels: torch.Tensor  # (K,) int64 unit part index
    conf: torch.Tensor  # (K,) float32 unit confidence
    class_w: torch.Tensor  # (P,) float32
    bps: np.ndarray  # (B,) float32 BPS feature
    ratio: np.ndarray | None  # (P,) Eq. 4 normalised part ratio, None without part_probs
    points: np.ndarray  # (N, 3) float32, every point of the shape

    @property
    def n_parts(self) -> int:
        return len(self.part_names)


@dataclass
class TrainReport:
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time (fairer than wall on a shared machine)
    peak_rss_mb: float = 0.0  # the process's peak resident memory at the end of training
    losses: list[float] = field(default_factory=list)  # mean outer loss per epoch




# --- preparing shapes ----------------------------------------------------------------


def build_encoder_for(config: BiPartConfig, device: str) -> torch.nn.Module:
    from ..encoders import build_encoder

    encoder = build_encoder(config.encoder, config.encoder_checkpoint, device)
    if encoder.trainable:
        raise ModelError(f"encoder '{config.encoder}' is trainable: BiPart's encoder is "
                         "frozen, pass --encoder-checkpoint or use pointnn")
    return encoder


def prepare(shape: Shape, units: KnowledgeUnits, part_names: list[str],
            encoder: torch.nn.Module, config: BiPartConfig, device: str,
            basis: np.ndarray) -> Prepared:
    """Sample, encode and index one shape (the encoder runs once per shape)."""
    import torch

    from ..distill import class_weights
    from ..models.point_transformer import neighbours

    n, n_parts = len(shape.points), len(part_names)
    if len(units) and units.masks.shape != (len(units), n):
        raise PartsegError(f"{shape.shape_id}: knowledge units cover {units.masks.shape[1]} "
                           f"points, the shape has {n} (re-run backproject)")
    if len(units) and (units.labels.min() < 0 or units.labels.max() >= n_parts):
        raise PartsegError(f"{shape.shape_id}: knowledge unit labels outside its "
                           f"{n_parts} parts (re-run backproject)")
    rng = np.random.default_rng([config.seed, n])
    sample = (np.arange(n) if n <= config.n_sample
              else np.sort(rng.choice(n, config.n_sample, replace=False)))
    pick = torch.as_tensor(sample, device=device)
    pts, nrm, col = (torch.as_tensor(np.asarray(a, np.float32), device=device)[pick]
                     for a in (shape.points, shape.normals, shape.colors))
    with torch.no_grad(), torch_threads(config.threads):
        feats = encoder(pts[None], nrm[None], col[None])[0]
        feats = (feats - feats.mean(0)) / feats.std(0).clamp(min=1e-3)
        nbr = neighbours(pts, config.neighbours)
    k = len(units)
    masks = (torch.as_tensor(units.masks[:, sample], device=device) if k
             else torch.zeros(0, len(sample), dtype=torch.bool, device=device))
    weights = (class_weights(units, n_parts) if config.class_weighting
               else np.ones(n_parts, np.float32))
    ratio = (part_point_ratio(units, n_parts) if units.part_probs is not None else None)
    return Prepared(list(part_names), sample, feats.float(), pts, nbr, masks,
                    torch.as_tensor(units.labels, dtype=torch.long, device=device).reshape(k),
                    torch.as_tensor(units.confidence, dtype=torch.float32,
                                    device=device).reshape(k),
                    torch.as_tensor(weights, device=device),
                    bps_features(shape.points, basis), ratio,
                    np.asarray(shape.points, np.float32))


def category_pools(items: Sequence[Prepared]) -> list[np.ndarray]:
    """For each item, the indices of the items with its part list (its support pool)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(tuple(item.part_names), []).append(index)
    return [np.asarray(groups[tuple(item.part_names)], np.int64) for item in items]


def supports_for(items: Sequence[Prepared], targets: Sequence[int], config: BiPartConfig,
                 rng: np.random.Generator, pools: Sequence[np.ndarray] | None = None
                 ) -> list[np.ndarray]:
    """Support sets (target first) of ``targets`` among ``items``, each from the items
    with the target's part list (``pools``: per item, default `category_pools`)."""
    pools = list(pools) if pools is not None else category_pools(items)
    bps = np.stack([i.bps for i in items]) if config.support != "random" else None
    ratios = None
    if config.support == "part-perfect":
        missing = [i for i, item in enumerate(items) if item.ratio is None]
        if missing:
            raise PartsegError("part-perfect support needs the teacher's part "
                               "probabilities of every unit (re-run backproject)")
        width = max(item.n_parts for item in items)
        ratios = np.zeros((len(items), width))
        for i, item in enumerate(items):
            ratios[i, :item.n_parts] = item.ratio
    return [select_support(t, pools[t], config.support_size, config.support, bps, ratios,
                           config.part_threshold, rng) for t in targets]


# --- the math ------------------------------------------------------------------------


def shape_loss(head: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
               item: Prepared, normalise: str) -> torch.Tensor:
    """Distillation loss (PartDistill Eq. 3) of the head with ``params`` on features x
    (S, dim) of ``item``, over the category's own outputs (the first P)."""
    from torch.func import functional_call

    from ..distill import distillation_loss

    logits = functional_call(head, params, (x,))[:, :item.n_parts]
    return distillation_loss(logits, item.masks, item.labels, item.conf, item.class_w,
                             normalise)


def adapt_head(head: torch.nn.Module, features: Sequence[torch.Tensor],
               support: Sequence[Prepared], steps: int, lr: float, normalise: str,
               create_graph: bool = False) -> dict[str, torch.Tensor]:
    """The inner loop (Eq. 3): ``steps`` SGD steps of the head's parameters on the summed
    loss over the support set; the extractor's features are inputs, so nothing but the
    head's parameters is updated. Returns the adapted parameters (the module's own
    parameters are left as they were). ``create_graph`` keeps the steps differentiable
    (second-order MAML); otherwise each step's gradient is detached (first-order)."""
    import torch

    params = dict(head.named_parameters())
    for _ in range(steps):
        loss = sum(shape_loss(head, params, x, item, normalise)
                   for x, item in zip(features, support, strict=True))
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph,
                                    retain_graph=True, allow_unused=True)
        params = {name: (p if g is None else p - lr * (g if create_graph else g.detach()))
                  for (name, p), g in zip(params.items(), grads, strict=True)}
    return params


def new_network(in_dim: int, n_outputs: int, config: BiPartConfig, device: str) -> BiPartNet:
    import torch

    from ..models.point_transformer import BiPartNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = BiPartNet(in_dim, n_outputs, config.width, config.blocks, config.head_hidden)
    return net.to(device)


def train(items: Sequence[Prepared], config: BiPartConfig, device: str,
          n_outputs: int | None = None) -> tuple[BiPartNet, TrainReport]:
    """Algorithm 1 over ``items`` (several categories). Returns the network and timing."""
    with torch_threads(config.threads):
        return _train(items, config, device, n_outputs)


def _train(items: Sequence[Prepared], config: BiPartConfig, device: str,
           n_outputs: int | None) -> tuple[BiPartNet, TrainReport]:
    import resource

    import torch

    if config.order not in ("first", "second"):
        raise PartsegError(f"unknown --order {config.order!r}; choose first or second")
    if not items:
        raise PartsegError("empty training set: no shape with knowledge units")
    largest = max(item.n_parts for item in items)
    n_outputs = n_outputs or config.head_outputs or largest
    if n_outputs < largest:
        raise PartsegError(f"--head-outputs {n_outputs} is fewer than the {largest} parts "
                           "of a training category")
    net = new_network(items[0].feats.shape[1], n_outputs, config, device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    pools = category_pools(items)
    report = TrainReport()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in progress(range(config.epochs), desc="bipart training", total=config.epochs):
        net.train()
        order = rng.permutation(len(items))
        losses = []
        for first in range(0, len(order), config.batch_size):
            batch = order[first:first + config.batch_size]
            supports = (supports_for(items, batch, config, rng, pools) if config.bilevel
                        else [np.asarray([t]) for t in batch])
            needed = sorted({int(j) for s in supports for j in s})
            feats = {j: net.extractor(items[j].feats, items[j].xyz, items[j].nbr)
                     for j in needed}
            outer = []
            for target, support in zip(batch, supports, strict=True):
                params = dict(net.head.named_parameters())
                if config.bilevel and config.inner_steps > 0:
                    params = adapt_head(net.head, [feats[int(j)] for j in support],
                                        [items[int(j)] for j in support], config.inner_steps,
                                        config.inner_lr, config.normalise,
                                        create_graph=config.order == "second")
                outer.append(shape_loss(net.head, params, feats[int(target)],
                                        items[int(target)], config.normalise))
            loss = torch.stack(outer).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()) / len(batch))
        report.losses.append(float(np.mean(losses)))
    report.seconds = time.perf_counter() - start
    report.cpu_seconds = time.process_time() - cpu_start
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return net.eval(), report


def extract(net: BiPartNet, items: Sequence[Prepared]) -> list[torch.Tensor]:
    """The extractor's features (S, width) of each item; fixed at inference, so they
    are computed once per shape, however many support sets it is in."""
    import torch

    net.eval()
    with torch.no_grad():
        return [net.extractor(item.feats, item.xyz, item.nbr) for item in items]


def predict(net: BiPartNet, target: Prepared, support: Sequence[Prepared],
            config: BiPartConfig, target_feats: torch.Tensor | None = None,
            support_feats: Sequence[torch.Tensor] | None = None) -> np.ndarray:
    """Adapt the head on ``support`` (the target among them) and label every point of
    the target: (N, P) float32 probabilities over the target's parts. ``target_feats``
    / ``support_feats``: their `extract` features when already computed."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    from ..encoders import interpolate

    own = target_feats if target_feats is not None else extract(net, [target])[0]
    feats = list(support_feats) if support_feats is not None else extract(net, support)
    params = dict(net.head.named_parameters())
    if config.test_inner_steps > 0:
        with torch.enable_grad():
            params = adapt_head(net.head, feats, support, config.test_inner_steps,
                                config.test_inner_lr, config.normalise)

    with torch.no_grad():
        points = torch.as_tensor(target.points, device=own.device)
        dense = interpolate(points[None], target.xyz[None], own[None], k=3)[0]
        logits = functional_call(net.head, {k: v.detach() for k, v in params.items()},
                                 (dense,))[:, :target.n_parts]
        return F.softmax(logits, dim=-1).cpu().numpy().astype(np.float32)


def label_all(net: BiPartNet, items: Sequence[Prepared], config: BiPartConfig,
              targets: Sequence[int] | None = None,
              pools: Sequence[np.ndarray] | None = None,
              features: dict[int, torch.Tensor] | None = None) -> list[np.ndarray]:
    """Predict ``targets`` (default: every item), each with a support set from its pool
    (default: the items with its part list). ``features``: item index -> `extract`
    features already computed (the others are computed once here and added to it)."""
    targets = list(range(len(items))) if targets is None else list(targets)
    rng = np.random.default_rng(config.seed + 1)
    supports = supports_for(items, targets, config, rng, pools)
    features = {} if features is None else features
    with torch_threads(config.threads):
        needed = sorted(({int(j) for s in supports for j in s} | set(targets))
                        - set(features))
        features.update(zip(needed, extract(net, [items[j] for j in needed]), strict=True))
        return [predict(net, items[t], [items[int(j)] for j in s], config, features[t],
                        [features[int(j)] for j in s])
                for t, s in zip(progress(targets, desc="bipart"), supports, strict=True)]


# --- saved model ---------------------------------------------------------------------


def model_meta(config: BiPartConfig, net: BiPartNet, items: Sequence[Prepared],
               shape_ids: Sequence[str], shape_keys: Sequence[str],
               report: TrainReport) -> dict[str, Any]:
    categories: dict[str, int] = {}
    for item in items:
        name = ",".join(item.part_names)
        categories[name] = categories.get(name, 0) + 1
    return {"encoder": config.encoder, "encoder_checkpoint": config.encoder_checkpoint,
            "config": training_params(config), "in_dim": net.extractor.in_dim,
            "head_outputs": net.head.n_outputs, "categories": categories,
            "training_shapes": list(shape_ids), "training_keys": list(shape_keys),
            "train_seconds": round(report.seconds, 2),
            "peak_rss_mb": round(report.peak_rss_mb, 1), "losses": report.losses}


def load_network(path: Path, device: str) -> tuple[BiPartNet, dict[str, Any], str]:
    """A saved BiPart network, its metadata and key; one-line ModelError otherwise."""
    from ..encoders import ENCODERS
    from ..errors import state_dict_mismatch
    from ..saved_model import load_model

    saved = load_model(path, kind=KIND, device=device)
    meta = saved.meta
    encoder = meta.get("encoder")
    if encoder not in ENCODERS:
        raise ModelError(f"{path}: made with encoder {encoder!r}, which this partseg does "
                         f"not have ({', '.join(ENCODERS)})")
    try:
        config = BiPartConfig(**{**meta["config"], "device": device})
        in_dim, outputs = int(meta["in_dim"]), int(meta["head_outputs"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{path}: incomplete BiPart model metadata ({err})") from None
    net = new_network(in_dim, outputs, config, device)
    problem = state_dict_mismatch(net.state_dict(), saved.state_dict)
    if problem:
        raise ModelError(f"{path}: does not match a BiPart network: {problem}")
    net.load_state_dict(saved.state_dict)
    return net.eval(), meta, saved.key


# --- the stage -----------------------------------------------------------------------


def _detected_names(workspace: Workspace, shape_id: str) -> list[str]:
    from ..distill import detected_part_names

    return detected_part_names(workspace, shape_id)


def _read(workspace: Workspace, shape_ids: Sequence[str], need_part_probs: bool
          ) -> tuple[list[Shape], list[KnowledgeUnits], list[list[str]]]:
    """Shapes, knowledge units (with Y^d when ``need_part_probs``) and teacher part names."""
    from ..backproject import read_units

    shapes, units, names = [], [], []
    for sid in shape_ids:
        units.append(read_units(workspace, sid, need_part_probs))
        shapes.append(workspace.read_record(shape_scope(sid), "shape", Shape))
        names.append(_detected_names(workspace, sid))
    return shapes, units, names


def _labelling(shape: Shape, probs: np.ndarray, part_names: list[str],
               training_shape: bool) -> Labelling:
    from ..backproject import face_labels_from_points

    labelling = Labelling(point_labels=probs.argmax(axis=1).astype(np.int32),
                          point_probs=probs, part_names=list(part_names), method=STAGE,
                          training_shape=training_shape)
    if shape.mesh is not None:
        labelling.face_labels = face_labels_from_points(
            shape.points, probs, shape.mesh.vertices, shape.mesh.faces, k=5)
    return labelling


def config_from(common: AdaptConfig) -> BiPartConfig:
    """BiPart's settings from `partseg adapt`'s options (paper values where not given)."""
    from . import method_config

    return method_config(BiPartConfig, common, STAGE)


def run(workspace: Workspace, shape_ids: list[str], common: AdaptConfig,
        force: bool = False) -> list[StageReport]:
    """`partseg adapt --method bipart`: train on the shapes (``--train-ids``, default all
    selected) and save as ``--model-name``, or ``--apply`` a saved model; label them."""
    if common.apply and common.train_ids:
        raise PartsegError("give --train-ids (train) or --apply (use a saved model), not both")
    if not common.apply and not common.model_name:
        raise PartsegError("training BiPart needs --model-name NAME (where to save it); "
                           "or --apply NAME|PATH to label shapes with a trained model")
    train_ids = None
    if common.train_ids:
        from ..pipeline import select_shapes

        train_ids = select_shapes(workspace, common.train_ids)
    return [label_workspace(workspace, shape_ids, config_from(common),
                            model_name=common.model_name, apply=common.apply,
                            train_ids=train_ids, force=force)]


def label_workspace(workspace: Workspace, shape_ids: list[str], config: BiPartConfig,
                    model_name: str | None = None, apply: str | None = None,
                    train_ids: list[str] | None = None, force: bool = False) -> StageReport:
    """Train BiPart on ``train_ids`` (default ``shape_ids``) and save it as ``model_name``
    (a folder in the workspace unless a path), or with ``apply`` load a saved model;
    then label ``shape_ids`` (and the training shapes) under stage 'bipart', each with a
    support set from the labelled shapes with its part list. A shape the model trained
    on is marked ``training_shape``."""
    from ..pipeline import resolve_device
    from ..saved_model import resolve_model_path, save_model

    if config.support not in SELECTIONS:
        raise PartsegError(f"unknown --support {config.support!r}; choose from "
                           f"{', '.join(SELECTIONS)}")
    if config.support_size < 1:
        raise PartsegError("--support-size must be at least 1 (the target itself)")
    if config.order not in ("first", "second"):
        raise PartsegError(f"unknown --order {config.order!r}; choose first or second")
    device = resolve_device(config.device)
    report = StageReport(STAGE)
    inputs = ["shape", "backproject"]
    if apply is None:
        train_ids = list(train_ids or shape_ids)
        shape_ids = sorted(set(shape_ids) | set(train_ids))
    shapes, units, names = _read(workspace, shape_ids, config.support == "part-perfect")
    shape_keys = [workspace.key(shape_scope(s), "shape") or "" for s in shape_ids]
    if apply is not None:
        path = resolve_model_path(apply, workspace.root)
        net, meta, model_key = load_network(path, device)
        # The network's own settings (encoder included) come from the model; selection
        # and inference settings from this run.
        config = dataclasses.replace(
            BiPartConfig(**{**meta["config"], "device": device, "threads": config.threads}),
            support=config.support, support_size=config.support_size,
            test_inner_steps=config.test_inner_steps, test_inner_lr=config.test_inner_lr,
            part_threshold=config.part_threshold, seed=config.seed)
        trained_on = set(meta.get("training_keys", []))
        for sid, own in zip(shape_ids, names, strict=True):
            if len(own) > net.head.n_outputs:
                raise PartsegError(f"{sid}: {len(own)} parts ({', '.join(own)}) but the "
                                   f"model {path} has {net.head.n_outputs} outputs")
    else:
        path = resolve_model_path(model_name or "bipart-model", workspace.root)
        model_key = collection_key(workspace, STAGE, train_ids, training_params(config),
                                   inputs)
        trained_on = {k for s, k in zip(shape_ids, shape_keys, strict=True) if s in train_ids}
    label_params = {**dataclasses.asdict(config), "model_key": model_key}
    for name in ("device", "threads"):
        label_params.pop(name)
    key = collection_key(workspace, STAGE, shape_ids, label_params, inputs)
    if not force and stored_under(workspace, STAGE, shape_ids, key) and (
            apply is not None or _saved_key(path) == model_key):
        report.skipped = list(shape_ids)
        report.notes = {sid: Notes.from_json(stored) for sid in shape_ids
                        if (stored := workspace.notes(shape_scope(sid), STAGE)) is not None}
        return report
    encoder = build_encoder_for(config, device)
    if apply is not None and encoder.out_dim != net.extractor.in_dim:
        raise ModelError(f"{path}: trained on {net.extractor.in_dim}-channel features of "
                         f"encoder '{config.encoder}', which now gives {encoder.out_dim}")
    basis = basis_points(config.bps_points, config.seed)
    items = [prepare(s, u, n, encoder, config, device, basis)
             for s, u, n in zip(shapes, units, names, strict=True)]
    if apply is None:
        if _saved_key(path) == model_key and not force:
            net, _, _ = load_network(path, device)
        else:
            usable = [i for i, (sid, u) in enumerate(zip(shape_ids, units, strict=True))
                      if sid in train_ids and len(u) > 0]
            if not usable:
                raise PartsegError(f"{workspace.root}: empty training set: no shape has "
                                   "knowledge units")
            net, train_report = train([items[i] for i in usable], config, device)
            save_model(path, kind=KIND, key=model_key,
                       meta=model_meta(config, net, [items[i] for i in usable],
                                       [shape_ids[i] for i in usable],
                                       [shape_keys[i] for i in usable], train_report),
                       state_dict=net.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = label_all(net, items, config)
    for sid, shape, own, p, skey in zip(shape_ids, shapes, names, probs, shape_keys,
                                        strict=True):
        labelling = _labelling(shape, p, own, skey in trained_on)
        report.notes[sid] = record_notes(labelling)
        workspace.write(shape_scope(sid), STAGE, labelling, key=key, params=label_params,
                        notes=report.notes[sid].to_json())
        report.computed.append(sid)
    return report


def _saved_key(path: Path) -> str | None:
    """The key of the model saved at ``path`` (None when there is none), without
    loading its weights."""
    import json

    from ..saved_model import MODEL_JSON, is_model_folder

    if not is_model_folder(path):
        return None
    try:
        return json.loads((path / MODEL_JSON).read_text()).get("key")
    except (OSError, ValueError):
        return None
