"""Support-set selection for BiPart (Sec. 3.4): random, BPS similarity, part-perfect.

A support set for a target shape holds the target itself plus ``size - 1`` shapes
chosen from a pool of candidates with the same part list (the head's outputs map onto
one category's parts, and cross-category supports only distract: BiPart Fig. 6).

- random: uniformly, without replacement.
- similarity: the candidates whose basis-point-set (BPS, Prokudin et al. ICCV 2019)
  features are most cosine-similar to the target's.
- part-perfect (Eq. 4): the candidates whose pseudo-labels show the most parts, ranked
  by similarity; the rest of the slots filled from the others by similarity.

The BPS is computed here as its paper defines it (a fixed random set of basis points
in the unit ball, each shape's feature the distance from every basis point to its
nearest shape point): PyPI has no maintained BPS package (``bps`` 0.1.0 there is an
empty wheel; the authors' package installs from GitHub only).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..records import KnowledgeUnits

SELECTIONS = ("random", "similarity", "part-perfect")


def basis_points(n_points: int = 512, seed: int = 0) -> np.ndarray:
    """(B, 3) float64 basis points uniform in the unit ball (BPS's random basis).

    Direction from a normalised Gaussian, radius u^(1/3), so the density is uniform in
    volume; the normalised shape frame (largest point norm 1) fits in this ball.
    """
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n_points, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * rng.uniform(0.0, 1.0, size=(n_points, 1)) ** (1.0 / 3.0)


def bps_features(points: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (B,) float32 distance from each basis point to its nearest point."""
    distances, _ = cKDTree(np.asarray(points, np.float64)).query(basis, k=1)
    return distances.astype(np.float32)


def cosine_similarity(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(D,) and (C, D) -> (C,) cosine similarities (0 for a zero vector)."""
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    norms = np.linalg.norm(candidates, axis=1, keepdims=True)
    return (candidates / np.maximum(norms, 1e-12)) @ q


def part_point_ratio(units: KnowledgeUnits, n_parts: int) -> np.ndarray:
    """Eq. 4's normalised per-part ratio of one shape, (P,) float64 summing to 1.

    W = sum_d Y^d (N, P), with Y^d the unit's part probabilities on its mask's points
    (per point for pixel-map units, `KnowledgeUnits.pair_probs`) and zero elsewhere;
    ratio_r = sum over points whose largest W is part r of W_{n,r}; normalised by its
    sum (all zeros when no unit covers any point). Points no unit covers (W = 0
    everywhere) add nothing. Raises ValueError without Y^d.
    """
    n_points = units.masks.shape[1] if units.masks.ndim == 2 else 0
    _, point, probs = units.pair_probs()
    probs = np.asarray(probs, np.float64)[:, :n_parts]
    weight = np.stack([np.bincount(point, weights=probs[:, r], minlength=n_points)
                       for r in range(probs.shape[1])], axis=1).reshape(n_points, -1)
    if weight.shape[1] < n_parts:
        weight = np.pad(weight, ((0, 0), (0, n_parts - weight.shape[1])))
    is_max = weight == weight.max(axis=1, keepdims=True)
    ratio = (weight * is_max).sum(axis=0)
    total = ratio.sum()
    return ratio / total if total > 0 else ratio


def part_perfect(ratios: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Which shapes are "part-perfect": (C, P) normalised ratios -> (C,) bool.

    A part is present in a shape when its ratio is at least ``threshold``; the
    part-perfect shapes are those with the most present parts of all candidates (every
    part, when any candidate shows every part). No candidate: an empty mask.
    """
    if len(ratios) == 0:
        return np.zeros(0, bool)
    present = (np.asarray(ratios) >= threshold).sum(axis=1)
    return present == present.max()


def select_support(target: int, candidates: np.ndarray, size: int, method: str,
                   bps: np.ndarray | None = None, ratios: np.ndarray | None = None,
                   threshold: float = 0.01, rng: np.random.Generator | None = None
                   ) -> np.ndarray:
    """A support set for shape ``target``: (<= size,) int64 shape indices, target first.

    candidates: indices of the pool the others come from (the target is skipped if it
    is among them); bps: (S, B) BPS features of every shape index (similarity and
    part-perfect); ratios: (S, P) `part_point_ratio` of every shape (part-perfect);
    rng: the random selection's generator. Fewer candidates than slots: all of them.
    """
    if method not in SELECTIONS:
        raise ValueError(f"unknown support selection {method!r}; choose from "
                         f"{', '.join(SELECTIONS)}")
    pool = np.asarray([c for c in np.asarray(candidates, np.int64) if c != target], np.int64)
    slots = max(0, size - 1)
    if slots == 0 or len(pool) == 0:
        return np.asarray([target], np.int64)
    if method == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        chosen = rng.choice(pool, min(slots, len(pool)), replace=False)
        return np.concatenate([[target], chosen]).astype(np.int64)
    if bps is None:
        raise ValueError(f"{method} selection needs BPS features")
    similarity = cosine_similarity(bps[target], bps[pool])
    order = np.argsort(-similarity, kind="stable")  # most similar first
    if method == "part-perfect":
        if ratios is None:
            raise ValueError("part-perfect selection needs the part ratios")
        perfect = part_perfect(ratios[pool], threshold)[order]
        order = np.concatenate([order[perfect], order[~perfect]])
    return np.concatenate([[target], pool[order[:slots]]]).astype(np.int64)
