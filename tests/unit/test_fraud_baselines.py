"""The tree baselines' neighbour features and scores on tiny graphs."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from abyssal.solutions.fraud.baselines import gbdt_scores, neighbour_features
from abyssal.solutions.fraud.graph import graph_from_pyg


def path_graph(x: list[list[float]], edges: list[tuple[int, int]]):
    edge_index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).T
    return graph_from_pyg(Data(x=torch.tensor(x), edge_index=edge_index, y=torch.zeros(len(x))))


def test_neighbour_features_on_a_path():
    # 0 - 1 - 2 (one direction given; aggregation is over the undirected graph)
    x = [[1.0, -10.0], [2.0, -20.0], [4.0, -40.0]]
    feats = neighbour_features(path_graph(x, [(0, 1), (1, 2)]))
    assert feats.shape == (3, 4 * 2) and feats.dtype == np.float32
    own, mean1, mx, mean2 = np.split(feats, 4, axis=1)
    np.testing.assert_allclose(own, x)
    np.testing.assert_allclose(mean1, [[2, -20], [2.5, -25], [2, -20]])
    np.testing.assert_allclose(mx, [[2, -20], [4, -10], [2, -20]])  # negative max stays negative
    np.testing.assert_allclose(mean2, [[2.5, -25], [2, -20], [2.5, -25]])


def test_neighbour_features_of_isolated_node_are_zero():
    feats = neighbour_features(path_graph([[1.0], [2.0], [3.0]], [(0, 1)]))
    assert feats.shape == (3, 4)
    np.testing.assert_allclose(feats[2], [3.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(feats[0], [1.0, 2.0, 2.0, 1.0])


def test_gbdt_scores_are_probabilities_for_every_row():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    y = (features[:, 0] > 0).astype(np.int8)
    train = np.arange(60) < 45
    score = gbdt_scores(features, y, train, seed=0)
    assert score.shape == (60,)
    assert ((score >= 0) & (score <= 1)).all()
    assert ((score[~train] > 0.5) == y[~train]).mean() >= 0.8  # learns the first feature
