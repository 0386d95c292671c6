"""Feature vectors through a cache: found ones read, missing ones computed once per distinct
input and stored; the defect predictor scores the same with and without the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abyssal.nn.features import cached_features
from abyssal.serve.cache import MemoryFeatureCache


def test_missing_vectors_are_computed_once_per_distinct_input_and_kept() -> None:
    cache = MemoryFeatureCache()
    asked: list[list[int]] = []

    def lengths(texts: list[str]) -> np.ndarray:
        def compute(rows: np.ndarray) -> np.ndarray:
            asked.append(rows.tolist())
            return np.array([[float(len(texts[r]))] for r in rows])

        return cached_features(cache, version, texts, compute)

    version = "m:1"
    out = lengths(["aa", "b", "aa", "cccc"])
    assert out.tolist() == [[2.0], [1.0], [2.0], [4.0]] and out.dtype == np.float32
    assert asked == [[0, 1, 3]]  # "aa" twice: computed once
    assert lengths(["cccc", "b", "new"]).tolist() == [[4.0], [1.0], [3.0]]
    assert asked[-1] == [2]  # only the new one
    version = "m:2"  # another version: its own vectors
    assert lengths(["b"]).tolist() == [[1.0]] and asked[-1] == [0]


def test_the_defect_predictor_scores_the_same_through_the_cache() -> None:
    from abyssal.nn.backbones import make_backbone
    from abyssal.solutions.defect.model import DefectNet
    from abyssal.solutions.defect.predict import DefectPredictor, ImageItem

    torch.manual_seed(0)
    backbone, features = make_backbone("resnet18", 1)
    net = DefectNet(backbone, features, 3, channels=1, dropout=0.1).eval()
    spec = {"classes": ["a", "b", "c"]}
    plain, cached = DefectPredictor(net, spec, "defect:1"), DefectPredictor(net, spec, "defect:1")
    cache = MemoryFeatureCache()
    assert cached.use_cache(cache)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (1, 32, 32), dtype=np.uint8) for _ in range(3)]
    items = [ImageItem(f"p{i}", p, None) for i, p in enumerate([*pictures, pictures[0]])]
    expected = plain.probabilities(items)
    torch.testing.assert_close(cached.probabilities(items), expected, atol=1e-5, rtol=1e-4)
    assert (cache.stats.misses, len(cache)) == (3, 3)
    torch.testing.assert_close(cached.probabilities(items[:1]), expected[:1], atol=1e-5, rtol=1e-4)
    assert cache.stats.hits == 1
    # the service's first look: cached images answered by the head alone, the others None
    fresh = ImageItem("new", rng.integers(0, 255, (1, 32, 32), dtype=np.uint8), None)
    answers = cached.predict_cached([items[1], fresh, items[2]])
    assert answers[1] is None and cache.stats.misses == 3  # a first look's miss is not counted
    for got, item in ((answers[0], items[1]), (answers[2], items[2])):
        want = plain.predict([item])[0]
        assert got["class"] == want["class"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
    assert plain.predict_cached(items) == [None] * 4  # no cache: nothing answered early
