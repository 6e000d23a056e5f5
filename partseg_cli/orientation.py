"""Unsupervised orientation alignment to a reference shape, by the 24 axis rotations.

A frozen encoder that reads xyz (``pointnn``) gives different features to the same shape
in another orientation, so a pre-aligned student (one head over a collection) trained
on y-up shapes fails on z-up ones. PartDistill's ShapeNetPart is aligned; collections
such as LabeledDB are not. `register` picks, among the 24 proper axis-aligned rotations
(the rotation group of the cube: every permutation of the axes with signs, det +1), the
one that brings a cloud closest to a reference by a symmetric Chamfer distance, after
centring both and scaling both to unit RMS radius, on a few hundred subsampled points.

Everything here is a pure function of its inputs (and of ``seed``, for subsampling).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ALIGN_MODES = ("none", "axes")
REGISTER_POINTS = 512  # points of each cloud compared by `register`


@lru_cache(maxsize=1)
def _rotations() -> np.ndarray:
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) > 0:
                mats.append(m)
    out = np.stack(mats)
    # the identity first, so that ties (symmetric shapes) prefer leaving a shape as it is
    ident = np.flatnonzero(np.all(np.isclose(out, np.eye(3)), axis=(1, 2)))[0]
    out = np.concatenate([out[ident:ident + 1], np.delete(out, ident, axis=0)])
    out.setflags(write=False)
    return out


def axis_rotations() -> np.ndarray:
    """(24, 3, 3) float64: the proper rotations mapping the coordinate axes onto
    themselves (signed permutation matrices with det +1), the identity first."""
    return _rotations().copy()


def normalise_cloud(points: np.ndarray) -> np.ndarray:
    """(N, 3) points centred on their mean and scaled to unit RMS distance from it
    (float64; a single point, or all points equal, is only centred)."""
    p = np.asarray(points, np.float64)
    c = p - p.mean(axis=0)
    rms = float(np.sqrt((c * c).sum(axis=1).mean())) if len(c) else 0.0
    return c / rms if rms > 0 else c


def subsample(points: np.ndarray, n: int = REGISTER_POINTS, seed: int = 0) -> np.ndarray:
    """``n`` points of ``points`` (N, 3) drawn without replacement (all when N <= n),
    in their original order; the same for the same points and seed."""
    p = np.asarray(points)
    if len(p) <= n:
        return p.copy()
    pick = np.sort(np.random.default_rng(seed).choice(len(p), n, replace=False))
    return p[pick]


def reference_cloud(points: np.ndarray, n: int = REGISTER_POINTS, seed: int = 0
                    ) -> np.ndarray:
    """The reference a student keeps: ``n`` subsampled points, normalised (float32)."""
    return normalise_cloud(subsample(points, n, seed)).astype(np.float32)


def chamfer_costs(points: np.ndarray, reference: np.ndarray,
                  rotations: np.ndarray | None = None) -> np.ndarray:
    """Symmetric Chamfer distance between each rotation of ``points`` and ``reference``.

    points (S, 3), reference (R, 3), both already normalised; rotations (K, 3, 3)
    (default the 24 axis rotations). Returns (K,) float64: mean nearest squared distance
    from the rotated points to the reference plus that from the reference to them. Two
    kd-tree queries in all: the rotated points against a tree of the reference, and the
    reference rotated back (R_k^T) against a tree of the points.
    """
    from scipy.spatial import cKDTree

    rots = axis_rotations() if rotations is None else np.asarray(rotations, np.float64)
    p = np.asarray(points, np.float64)
    r = np.asarray(reference, np.float64)
    k = len(rots)
    forward = np.einsum("kij,sj->ksi", rots, p)  # (K, S, 3): R_k p
    back = np.einsum("kji,sj->ksi", rots, r)  # (K, R, 3): R_k^T r
    d_pr, _ = cKDTree(r).query(forward.reshape(-1, 3))
    d_rp, _ = cKDTree(p).query(back.reshape(-1, 3))
    return ((d_pr ** 2).reshape(k, -1).mean(axis=1)
            + (d_rp ** 2).reshape(k, -1).mean(axis=1))


def register(points: np.ndarray, reference: np.ndarray, n: int = REGISTER_POINTS,
             seed: int = 0) -> tuple[np.ndarray, float]:
    """The axis rotation R (3, 3) minimising the symmetric Chamfer distance between
    R @ p (``n`` points of ``points`` subsampled with ``seed``, normalised) and
    ``reference`` (normalised here too), and that distance. Ties go to the first in
    `axis_rotations` order (the identity first)."""
    src = normalise_cloud(subsample(points, n, seed))
    ref = normalise_cloud(reference)
    costs = chamfer_costs(src, ref)
    best = int(np.argmin(costs))
    return axis_rotations()[best], float(costs[best])


def rotate(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(N, 3) points (or normals) rotated about the origin, in their dtype."""
    p = np.asarray(points)
    return (p @ np.asarray(rotation, np.float64).T).astype(p.dtype, copy=False)


def medoid(clouds: list[np.ndarray], seed: int = 0) -> int:
    """Index of the cloud whose summed registered Chamfer distance to the others is the
    smallest (one `register` per pair: the registered distance is symmetric); the first
    on ties.
    Costs len(clouds)^2 registrations: callers bound the candidates."""
    if len(clouds) <= 2:
        return 0
    refs = [reference_cloud(c, REGISTER_POINTS, seed) for c in clouds]
    total = np.zeros(len(clouds))
    for i, j in itertools.combinations(range(len(clouds)), 2):
        d = register(refs[i], refs[j], seed=seed)[1]
        total[i] += d
        total[j] += d
    return int(np.argmin(total))


MEDOID_CANDIDATES = 16  # training shapes among which the reference is the medoid


@dataclass(frozen=True)
class Aligner:
    """Rotates a shape onto a reference (``align="axes"``): kept with a student, so a
    saved student aligns every shape it is applied to as it aligned its training."""

    reference: np.ndarray  # (R, 3) float32, normalised (`reference_cloud`)
    seed: int = 0

    @classmethod
    def from_collection(cls, clouds: list[np.ndarray], seed: int = 0) -> Aligner:
        """The reference is the `medoid` of the first `MEDOID_CANDIDATES` clouds (in the
        collection's order, e.g. sorted shape ids)."""
        candidates = clouds[:MEDOID_CANDIDATES]
        return cls(reference_cloud(candidates[medoid(candidates, seed)], REGISTER_POINTS,
                                   seed), seed)

    def rotation(self, points: np.ndarray) -> np.ndarray:
        """(3, 3): the axis rotation taking ``points`` onto the reference."""
        return register(points, self.reference, REGISTER_POINTS, self.seed)[0]
