"""Dev set for tuning PartDistill: procedural labelled shapes, never the test data.

Settings of the student (distill.py) are chosen on these shapes, not on the shared
LabeledDB labels (our test set). Four categories built from boxes, cylinders, cones and
tori with random proportions, y up like the reference cameras:

- chair: back, seat, leg, arm (arms on 60% of chairs, 3-5 back slats or a panel)
- table: tabletop, leg (4 legs or a pedestal with a foot)
- mug: body, handle
- lamp: base, body (the pole), shade
- airplane: body, wing, stabilizer, rudder, engine (engines on 60%): thin parts seen
  edge-on in many views, so a 2D teacher's resolution matters (opt-in for the student:
  `--categories ... airplane`; bench_trained_teacher.py includes it by default)

Each shape is sampled (10k points, grey), rendered into the 10 reference views, boxed by
the simulated GLIP-like teacher, lifted to knowledge units, and segmented by PartSLIP
voting, the direct lift, and the student: TTA, TTA+BD, pre, pre+BD. The teacher's
confidence-weighted 2D mIoU (PartDistill supp. Eq. A-D) is printed before and after
re-scoring.

Run: python bench/dev_shapes.py [--per-category 6] [--categories chair table mug lamp]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import trimesh

from partseg_cli.backproject import units_from_boxes
from partseg_cli.distill import DistillConfig, distill_pre, distill_tta
from partseg_cli.evaluate import box_regions, part_ious, teacher_miou_2d
from partseg_cli.records import Boxes, KnowledgeUnits, Mesh, Shape, Views
from partseg_cli.render import label_images, reference_cameras, render_points
from partseg_cli.shapes import normalize
from partseg_cli.simulated import simulate_boxes
from partseg_cli.superpoints import compute_superpoints
from partseg_cli.vote import vote

PARTS = {
    "chair": ["back", "seat", "leg", "arm"],
    "table": ["tabletop", "leg"],
    "mug": ["body", "handle"],
    "lamp": ["base", "body", "shade"],
    "airplane": ["body", "wing", "stabilizer", "rudder", "engine"],
}
CACHE = Path(tempfile.gettempdir()) / "partseg_dev_shapes"

Piece = tuple[int, trimesh.Trimesh]


def _box(extents, centre) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(centre)
    return mesh


def _cylinder(radius, height, centre, sections=32) -> trimesh.Trimesh:
    """A y-axis cylinder."""
    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    mesh.apply_translation(centre)
    return mesh


def chair(rng: np.random.Generator) -> list[Piece]:
    w, d = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.1)
    seat_h, seat_t = rng.uniform(0.7, 1.1), rng.uniform(0.06, 0.15)
    back_h, leg_t = rng.uniform(0.7, 1.3), rng.uniform(0.05, 0.12)
    pieces = [(1, _box((w, seat_t, d), (0, seat_h, 0)))]
    back_z = -d / 2 + seat_t / 2
    if rng.random() < 0.5:
        pieces.append((0, _box((w, back_h, seat_t), (0, seat_h + back_h / 2, back_z))))
    else:  # two posts, a top rail and slats
        n = int(rng.integers(3, 6))
        for x in np.linspace(-w / 2 + leg_t / 2, w / 2 - leg_t / 2, n):
            pieces.append((0, _box((leg_t, back_h, leg_t), (x, seat_h + back_h / 2, back_z))))
        pieces.append((0, _box((w, 0.12, seat_t), (0, seat_h + back_h, back_z))))
    round_legs = rng.random() < 0.4
    for sx in (-1, 1):
        for sz in (-1, 1):
            c = (sx * (w / 2 - leg_t / 2), seat_h / 2, sz * (d / 2 - leg_t / 2))
            leg = (_cylinder(leg_t / 2, seat_h, c, 12) if round_legs
                   else _box((leg_t, seat_h, leg_t), c))
            pieces.append((2, leg))
    if rng.random() < 0.6:
        arm_h = rng.uniform(0.2, 0.35)
        for sx in (-1, 1):
            x = sx * (w / 2 + 0.04)
            pieces.append((3, _box((0.08, 0.06, d * 0.8), (x, seat_h + arm_h, 0))))
            pieces.append((3, _box((0.05, arm_h, 0.05), (x, seat_h + arm_h / 2, d * 0.3))))
    return pieces


def table(rng: np.random.Generator) -> list[Piece]:
    w, d = rng.uniform(1.0, 2.0), rng.uniform(0.6, 1.2)
    h, top_t = rng.uniform(0.6, 1.0), rng.uniform(0.04, 0.12)
    round_top = rng.random() < 0.3
    top = (_cylinder(w / 2, top_t, (0, h, 0), 48) if round_top
           else _box((w, top_t, d), (0, h, 0)))
    pieces = [(0, top)]
    if round_top or rng.random() < 0.2:  # pedestal with a foot
        pieces.append((1, _cylinder(rng.uniform(0.04, 0.1), h, (0, h / 2, 0), 16)))
        pieces.append((1, _cylinder(rng.uniform(0.2, 0.4), 0.05, (0, 0.025, 0), 32)))
    else:
        t = rng.uniform(0.04, 0.1)
        for sx in (-1, 1):
            for sz in (-1, 1):
                pieces.append((1, _box((t, h, t), (sx * (w / 2 - t), h / 2, sz * (d / 2 - t)))))
    return pieces


def mug(rng: np.random.Generator) -> list[Piece]:
    r, h = rng.uniform(0.3, 0.5), rng.uniform(0.6, 1.2)
    body = _cylinder(r, h, (0, h / 2, 0), 48)
    ring_r = rng.uniform(0.15, 0.3) * h / 0.8
    handle = trimesh.creation.torus(major_radius=ring_r, minor_radius=rng.uniform(0.03, 0.06),
                                    major_sections=32, minor_sections=12)
    # The torus lies in the xy plane after rotating its z axis onto z: keep it upright.
    handle.apply_translation((r + ring_r * 0.6, h / 2, 0))
    return [(0, body), (1, handle)]


def lamp(rng: np.random.Generator) -> list[Piece]:
    base_r, base_h = rng.uniform(0.2, 0.4), rng.uniform(0.04, 0.12)
    pole_h = rng.uniform(0.8, 1.6)
    shade_h, shade_r = rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.5)
    pieces = [(0, _cylinder(base_r, base_h, (0, base_h / 2, 0), 32)),
              (1, _cylinder(rng.uniform(0.02, 0.05), pole_h, (0, base_h + pole_h / 2, 0), 12))]
    cone = trimesh.creation.cone(radius=shade_r, height=shade_h, sections=32)
    # Cone apex up (+y): rotate the +z apex onto +y, then cut off its top by scaling.
    cone.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    cone.apply_translation((0, base_h + pole_h - shade_h * 0.3, 0))
    pieces.append((2, cone))
    return pieces


def airplane(rng: np.random.Generator) -> list[Piece]:
    """A fuselage along z, thin (optionally swept) wings, a tailplane, a fin, engines."""
    length, radius = rng.uniform(1.6, 2.4), rng.uniform(0.07, 0.14)
    body = trimesh.creation.cylinder(radius=radius, height=length, sections=24)
    nose = trimesh.creation.cone(radius=radius, height=rng.uniform(0.15, 0.35), sections=24)
    nose.apply_translation((0, 0, length / 2))
    pieces = [(0, body), (0, nose)]
    span, chord = rng.uniform(1.4, 2.4), rng.uniform(0.2, 0.4)
    thick, sweep = rng.uniform(0.015, 0.04), rng.uniform(0.0, 0.5)
    wing_z = rng.uniform(-0.1, 0.2) * length
    for side in (-1, 1):  # each wing a thin slab, swept back by rotating about y
        wing = _box((span / 2, thick, chord), (side * span / 4, 0, 0))
        wing.apply_transform(trimesh.transformations.rotation_matrix(side * sweep, [0, 1, 0]))
        wing.apply_translation((0, -radius * 0.3, wing_z))
        pieces.append((1, wing))
    tail_z = -length / 2 + 0.1
    tail_span = span * rng.uniform(0.25, 0.4)
    pieces.append((2, _box((tail_span, thick, chord * 0.6), (0, 0, tail_z))))
    fin_h = rng.uniform(0.2, 0.4)
    pieces.append((3, _box((thick, fin_h, chord * 0.7), (0, radius + fin_h / 2, tail_z))))
    if rng.random() < 0.6:
        n = 1 if rng.random() < 0.5 else 2  # per side
        e_r, e_len = rng.uniform(0.04, 0.08), rng.uniform(0.2, 0.35)
        for side in (-1, 1):
            for k in range(n):
                x = side * span * (0.18 + 0.14 * k)
                engine = trimesh.creation.cylinder(radius=e_r, height=e_len, sections=16)
                # under the swept wing: follow the sweep back
                engine.apply_translation((x, -radius * 0.3 - e_r - thick,
                                          wing_z - abs(x) * np.tan(sweep) + chord * 0.3))
                pieces.append((4, engine))
    return pieces


MAKERS = {"chair": chair, "table": table, "mug": mug, "lamp": lamp, "airplane": airplane}
DEFAULT_CATEGORIES = ["chair", "table", "mug", "lamp"]  # the student's dev set (see top)


def make_shape(category: str, index: int, seed: int, n_points: int = 10000,
               mesh: bool = False) -> Shape:
    """One procedural shape: area-weighted samples of its pieces, normalised, grey.

    mesh: also keep the triangle mesh (face labels, the face each point lies on), so the
    render stage ray-casts it with headlight shading as it does LabeledDB's meshes;
    without it the points are splatted flat grey and a colour-driven box -> mask refiner
    (GrabCut) sees nothing to cut along. The points are the same either way."""
    rng = np.random.default_rng([seed, index, list(MAKERS).index(category)])
    pieces = MAKERS[category](rng)
    meshes = [m for _, m in pieces]
    labels = np.concatenate([np.full(len(m.faces), p) for p, m in pieces])
    tri = trimesh.util.concatenate(meshes)
    pts, faces = trimesh.sample.sample_surface(tri, n_points, seed=int(rng.integers(1 << 31)))
    norm = normalize(pts)
    kept_mesh = None
    if mesh:
        kept_mesh = Mesh(vertices=((tri.vertices - norm.center) / norm.scale).astype(np.float32),
                         faces=np.asarray(tri.faces, np.int32),
                         face_labels=labels.astype(np.int32))
    return Shape(shape_id=f"{category}{index}",
                 points=((pts - norm.center) / norm.scale).astype(np.float32),
                 normals=tri.face_normals[faces].astype(np.float32),
                 colors=np.full((n_points, 3), 0.5, np.float32), normalization=norm,
                 part_names=list(PARTS[category]), category=category,
                 point_labels=labels[faces].astype(np.int32), mesh=kept_mesh,
                 point_faces=np.asarray(faces, np.int32) if mesh else None)


@dataclass
class DevItem:
    shape: Shape
    boxes: Boxes
    units: KnowledgeUnits
    vote_labels: np.ndarray  # (N,) PartSLIP voting, -1 unlabelled
    gt_images: np.ndarray  # (V, H, W) int32 label images
    foreground: np.ndarray  # (V, H, W) bool


def _taught(category: str, index: int, seed: int, cameras
            ) -> tuple[Shape, Views, np.ndarray, Boxes, KnowledgeUnits]:
    """Dev shape ``index`` rendered, boxed by the simulated teacher and lifted to units
    (with its views and ground-truth label images)."""
    shape = make_shape(category, index, seed)
    views = render_points(shape.points, shape.colors, cameras)
    gt_images = label_images(views, shape.point_labels)
    boxes = simulate_boxes(gt_images, len(shape.part_names), shape.part_names,
                           seed=seed + index, images=views.rgb,
                           foreground=views.pixel_point >= 0, category=category)
    return shape, views, gt_images, boxes, units_from_boxes(boxes, views.pixel_point,
                                                            len(shape.points))


def prepare_units(category: str, start: int, stop: int, seed: int, resolution: int
                  ) -> list[tuple[Shape, KnowledgeUnits]]:
    """Dev shapes ``start..stop-1`` with their teacher units only (no voting, no label
    images): unlabelled training shapes for a student, cached under /tmp. Shape ``i`` is
    the same shape, with the same units, as item ``i`` of `prepare`."""
    path = CACHE / f"{category}_units_{start}_{stop}_{seed}_{resolution}_v3.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    cameras = reference_cameras(10, resolution)
    pairs = []
    for index in range(start, stop):
        shape, *_, units = _taught(category, index, seed, cameras)
        pairs.append((shape, units))
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(pairs))
    return pairs


def prepare(category: str, count: int, seed: int, resolution: int) -> list[DevItem]:
    """Shapes with teacher units and the voting baseline, cached under /tmp."""
    # "v2": the de-leaked simulated teacher (boxes scored from the pixels, not the truth);
    # "v3": knowledge units with the teacher's part probabilities Y^d
    path = CACHE / f"{category}_{count}_{seed}_{resolution}_v3.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    cameras = reference_cameras(10, resolution)
    items = []
    for index in range(count):
        shape, views, gt_images, boxes, units = _taught(category, index, seed, cameras)
        sp = compute_superpoints(shape.points, shape.colors, shape.normals)
        voted = vote(units, boxes, views.pixel_point, sp, shape.points, shape.part_names,
                     instances=False)
        items.append(DevItem(shape, boxes, units, voted.point_labels, gt_images,
                             views.pixel_point >= 0))
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(items))
    return items


def miou(pred: np.ndarray, gt: np.ndarray, n_parts: int) -> float:
    """ShapeNetPart convention: IoU 1 for a part absent from both."""
    return float(np.nan_to_num(part_ious(pred, gt, n_parts), nan=1.0).mean())


def teacher_2d(item: DevItem, confidence: np.ndarray) -> float:
    """Confidence-weighted 2D mIoU of the item's units' boxes."""
    u = item.units
    regions = box_regions(item.boxes.xyxy[u.source_index], u.view, item.foreground)
    return teacher_miou_2d(item.gt_images, regions, u.view, u.labels, confidence,
                           len(item.shape.part_names))


def evaluate(items: list[DevItem], config: DistillConfig, with_2d: bool = True
             ) -> dict[str, float]:
    """mIoU of vote / TTA / TTA+BD / pre / pre+BD and 2D teacher mIoU on one category."""
    n_parts = len(items[0].shape.part_names)
    gts = [i.shape.point_labels for i in items]
    rows: dict[str, list[float]] = {"vote": [miou(i.vote_labels, g, n_parts)
                                             for i, g in zip(items, gts, strict=True)]}
    times = []
    for name, backward in (("tta", False), ("tta+bd", True)):
        cfg = replace(config, mode="tta", backward=backward)
        scores = []
        for item, gt in zip(items, gts, strict=True):
            t = time.perf_counter()
            result = distill_tta(item.shape, item.units, n_parts, cfg)
            times.append(time.perf_counter() - t)
            scores.append(miou(result.point_labels, gt, n_parts))
            if backward and result.bd_epoch is not None:
                # When BD started (0-based epoch): a student re-scoring before it has
                # learnt the thin parts gives their right units low C_bd.
                rows.setdefault("tta bd epoch", []).append(result.bd_epoch)
            if backward and with_2d and result.rescored_confidence is not None:
                rows.setdefault("2d before", []).append(teacher_2d(item, item.units.confidence))
                rows.setdefault("2d after tta", []).append(
                    teacher_2d(item, result.rescored_confidence))
        rows[name] = scores
    collection = [(i.shape, i.units) for i in items]
    for name, backward in (("pre", False), ("pre+bd", True)):
        cfg = replace(config, mode="pre", backward=backward)
        t = time.perf_counter()
        _, results = distill_pre(collection, n_parts, cfg)
        rows.setdefault("pre s", []).append(time.perf_counter() - t)
        rows[name] = [miou(r.point_labels, g, n_parts) for r, g in zip(results, gts,
                                                                      strict=True)]
        if backward and results[0].bd_epoch is not None:
            rows["pre bd epoch"] = [results[0].bd_epoch]
        if backward and with_2d:
            rows["2d after pre"] = [teacher_2d(i, r.rescored_confidence)
                                    for i, r in zip(items, results, strict=True)
                                    if r.rescored_confidence is not None]
    rows["tta s"] = [float(np.median(times))]
    return {k: float(np.mean(v)) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-category", type=int, default=6)
    parser.add_argument("--categories", nargs="+", default=DEFAULT_CATEGORIES,
                        choices=list(MAKERS))
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=800)
    parser.add_argument("--no-2d", action="store_true")
    parser.add_argument("--set", nargs="*", default=[],
                        help="DistillConfig overrides, e.g. epochs=40 normalise=area")
    args = parser.parse_args()
    torch.set_num_threads(2)
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        current = getattr(DistillConfig(), key)
        overrides[key] = (type(current)(value) if not isinstance(current, bool)
                          else value.lower() in ("1", "true", "yes"))
    config = DistillConfig(device="cpu", **overrides)
    table_rows = {}
    for category in args.categories:
        items = prepare(category, args.per_category, args.seed, args.resolution)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table_rows[category] = evaluate(items, config, not args.no_2d)
        print(category, " ".join(f"{k} {v:.3f}" for k, v in table_rows[category].items()),
              flush=True)
    keys = list(next(iter(table_rows.values())))
    print("mean", " ".join(f"{k} {np.mean([r[k] for r in table_rows.values()]):.3f}"
                           for k in keys))


if __name__ == "__main__":
    main()
