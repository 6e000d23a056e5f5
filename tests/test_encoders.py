"""The Point-NN encoder's geometric primitives: farthest point sampling and kNN."""

from __future__ import annotations

import numpy as np
import torch

from partseg_cli.encoders import farthest_point_sample, knn


def test_farthest_point_sample_is_fps_by_definition_per_batch_row():
    rng = np.random.default_rng(3)
    clouds = rng.normal(size=(2, 400, 3)).astype(np.float32)
    chosen = farthest_point_sample(torch.as_tensor(clouds), 40).numpy()
    assert chosen.shape == (2, 40) and chosen.dtype == np.int64
    for row, cloud in zip(chosen, clouds, strict=True):
        pts = cloud.astype(np.float64)
        # starts at the point farthest from the centroid, then always takes the point
        # farthest from every point taken so far
        assert row[0] == np.argmax(((pts - pts.mean(0)) ** 2).sum(1))
        for i in range(1, len(row)):
            gap = np.min(((pts[:, None] - pts[row[:i]][None]) ** 2).sum(-1), axis=1)
            assert row[i] == np.argmax(gap)
        assert len(set(row.tolist())) == len(row)
    # each row is sampled on its own: a batch equals its rows run alone
    alone = farthest_point_sample(torch.as_tensor(clouds[1:]), 40).numpy()
    np.testing.assert_array_equal(alone[0], chosen[1])
    # more samples than points: every point once
    assert sorted(farthest_point_sample(torch.as_tensor(clouds[:, :5]), 9)[0].tolist()) == \
        list(range(5))


def test_knn_returns_the_k_nearest_in_order_with_their_distances():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(2, 300, 3)).astype(np.float32)
    query = rng.normal(size=(2, 50, 3)).astype(np.float32)
    dist, idx = knn(torch.as_tensor(query), torch.as_tensor(ref), 7)
    assert dist.shape == idx.shape == (2, 50, 7) and idx.dtype == torch.int64
    for r in range(2):
        full = np.sqrt(((query[r][:, None].astype(np.float64) - ref[r][None]) ** 2).sum(-1))
        np.testing.assert_array_equal(idx[r].numpy(), np.argsort(full, axis=1)[:, :7])
        np.testing.assert_allclose(dist[r].numpy(), np.sort(full, axis=1)[:, :7], atol=1e-6)
    # k is capped at the reference size; a cloud's own points are their first neighbours
    _, own = knn(torch.as_tensor(ref[:, :4]), torch.as_tensor(ref[:, :4]), 9)
    assert own.shape == (2, 4, 4)
    np.testing.assert_array_equal(own[..., 0].numpy(), np.tile(np.arange(4), (2, 1)))
