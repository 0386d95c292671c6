"""The explanation helpers of the audit: integrated gradients recover a linear model's weights
(inputs and embeddings), permutation importance ranks an informative feature above noise on
frames, arrays and grouped columns without touching the data, and the bar chart is a real PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from abyssal.contracts.explain import (
    Attribution,
    Explanations,
    explained_rows,
    grid_heat,
    integrated_gradients,
    permutation_importance,
    token_scores,
    top_scores,
    write_bar_chart,
)

pytest.importorskip("captum")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- integrated gradients ----------------------------------------------------------------------


def test_integrated_gradients_of_a_linear_model_are_weight_times_input_minus_baseline() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    x, baseline = torch.randn(4, 5), torch.randn(4, 5)
    target = [0, 2, 1, 2]
    ig = integrated_gradients(linear, x, baseline, target, steps=8)
    expected = linear.weight.detach()[target] * (x - baseline)  # (4, 5)
    assert ig.shape == x.shape and not ig.requires_grad
    torch.testing.assert_close(ig, expected, rtol=1e-4, atol=1e-5)
    # completeness: each row adds up to F(x) - F(baseline) for its target
    with torch.no_grad():
        gap = (linear(x) - linear(baseline))[torch.arange(4), torch.tensor(target)]
    torch.testing.assert_close(ig.sum(dim=1), gap, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_default_baseline_is_zero_and_tuples_stay_tuples() -> None:
    w1, w2 = torch.tensor([1.5, -2.0]), torch.tensor([0.5])

    def forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ w1 + b @ w2  # (B,): one score per item, no target

    a, b = torch.tensor([[2.0, 1.0]]), torch.tensor([[4.0]])
    ig_a, ig_b = integrated_gradients(forward, (a, b), None, None)
    torch.testing.assert_close(ig_a, torch.tensor([[3.0, -2.0]]))
    torch.testing.assert_close(ig_b, torch.tensor([[2.0]]))


def test_layer_integrated_gradients_attribute_token_ids_through_their_embedding() -> None:
    torch.manual_seed(1)
    embed, head = nn.Embedding(10, 4), nn.Linear(4, 2)

    def forward(ids: torch.Tensor) -> torch.Tensor:
        return head(embed(ids).sum(dim=1))  # (B, 2): a linear bag of embeddings

    ids, baseline = torch.tensor([[3, 7, 1]]), torch.zeros(1, 3, dtype=torch.long)
    ig = integrated_gradients(forward, ids, baseline, 1, layer=embed)
    assert ig.shape == (1, 3, 4)
    with torch.no_grad():
        expected = (embed(ids) - embed(baseline)) * head.weight[1]  # (1, 3, 4)
    torch.testing.assert_close(ig, expected, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_refuse_integer_inputs_without_a_layer_and_bad_steps() -> None:
    ids = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match=r"input 0 is torch\.int64; pass its embedding layer"):
        integrated_gradients(lambda t: t.float(), ids, None, 0)
    with pytest.raises(ValueError, match="steps >= 1, got 0"):
        integrated_gradients(lambda t: t, torch.ones(1, 2), None, 0, steps=0)


# -- permutation importance --------------------------------------------------------------------


def _signal_and_noise(rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))  # columns: signal, noise, weak
    y = 3.0 * x[:, 0] + 0.3 * x[:, 2]
    return x, y


def test_permutation_importance_ranks_the_informative_feature_above_noise() -> None:
    x, y = _signal_and_noise()
    before = x.copy()

    def neg_rmse(a: np.ndarray) -> float:
        return -float(np.sqrt(np.mean((3.0 * a[:, 0] + 0.3 * a[:, 2] - y) ** 2)))

    imp = permutation_importance(neg_rmse, ["signal", "noise", "weak"], x, "neg_rmse")
    assert list(imp) == ["signal", "weak", "noise"]  # largest drop first
    assert imp["signal"] > 3.0 and 0.2 < imp["weak"] < 1.0 and imp["noise"] == 0.0
    np.testing.assert_array_equal(x, before)  # the data given is never changed


def test_a_metric_where_smaller_is_better_counts_a_rise_as_the_drop() -> None:
    x, y = _signal_and_noise()
    frame = pd.DataFrame(x, columns=["signal", "noise", "weak"])

    def rmse(f: pd.DataFrame) -> float:
        return float(np.sqrt(np.mean((3.0 * f["signal"] + 0.3 * f["weak"] - y) ** 2)))

    imp = permutation_importance(rmse, ["signal", "noise"], frame, "test_rmse", repeats=2)
    assert imp["signal"] > 3.0 and imp["noise"] == 0.0
    assert list(frame.columns) == ["signal", "noise", "weak"]


def test_grouped_places_in_a_mapping_of_arrays_are_shuffled_together() -> None:
    # a number and its missing indicator: either alone shuffled still leaves the other to read
    rng = np.random.default_rng(1)
    value = rng.normal(size=300)
    arrays = {"numeric": np.stack([value, value], axis=1), "codes": rng.integers(0, 3, (300, 1))}

    def score(a: dict[str, np.ndarray]) -> float:
        both = np.where(np.arange(300) % 2 == 0, a["numeric"][:, 0], a["numeric"][:, 1])
        return float(np.corrcoef(both, value)[0, 1])

    places = {"value": [("numeric", 0), ("numeric", 1)], "codes": ("codes", 0)}
    imp = permutation_importance(score, places, arrays, "correlation", seed=3)
    assert imp["value"] > 0.8 and imp["codes"] == 0.0
    with pytest.raises(ValueError, match="feature 'x': no array 'missing'"):
        permutation_importance(score, {"x": ("missing", 0)}, arrays, "correlation")
    with pytest.raises(ValueError, match="column 5 is not in array 'numeric'"):
        permutation_importance(score, {"x": ("numeric", 5)}, arrays, "correlation")


def test_permutation_importance_needs_a_finite_reference_and_whole_repeats() -> None:
    x = np.zeros((4, 1))
    with pytest.raises(ValueError, match="test_auroc of the unshuffled data is nan"):
        permutation_importance(lambda a: math.nan, ["a"], x, "test_auroc")
    with pytest.raises(ValueError, match="repeats >= 1, got 0"):
        permutation_importance(lambda a: 1.0, ["a"], x, "m", repeats=0)
    with pytest.raises(ValueError, match="different numbers of rows"):
        arrays = {"a": np.zeros((3, 1)), "b": np.zeros((4, 1))}
        permutation_importance(lambda a: 1.0, ["a"], arrays, "m")


# -- pictures and records ----------------------------------------------------------------------


def test_the_bar_chart_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    scores = {f"feature {i}": (-1) ** i * i / 10 for i in range(30)} | {"undefined": math.nan}
    path = write_bar_chart(scores, tmp_path / "charts" / "row_1.png", title="row 1", top=12)
    assert path == tmp_path / "charts" / "row_1.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as picture:
        width, height = picture.size
    assert width == 640 and height > 300  # one row of height per bar drawn
    empty = write_bar_chart({}, tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["charts", "empty.png", "row_1.png"]


def test_explanations_are_json_ready_and_summarised(tmp_path: Path) -> None:
    item = Attribution("row 3", "malignant", np.int64(1), {"radius": np.float32(0.5)}, tmp_path)
    ex = Explanations("integrated gradients (Captum)", [item], {"radius": 0.1}, "test_auroc")
    data = json.loads(json.dumps(ex.to_dict()))
    assert data["items"][0] == {
        "item": "row 3",
        "prediction": "malignant",
        "label": 1,
        "scores": {"radius": 0.5},
        "image": str(tmp_path),
        "note": "",
    }
    text = ex.summary()
    assert "1 predictions explained" in text and "row 3: predicted malignant (label 1)" in text
    assert "global importance (drop in test_auroc): radius +0.1" in text


def test_small_pieces() -> None:
    assert top_scores({"a": 0.1, "b": -0.5, "c": 0.3}, 2) == {"b": -0.5, "c": 0.3}
    assert token_scores(["up", "up", "down"], [1.0, 2.0, 3.0]) == {
        "up": 1.0,
        "up@1": 2.0,
        "down": 3.0,
    }
    heat = np.zeros((9, 9))
    heat[6:, 3:6] = 2.0
    heat[0, 0] = 2.0
    cells = grid_heat(heat)
    assert list(cells)[:2] == ["bottom", "top-left"] and sum(cells.values()) == pytest.approx(1.0)
    assert cells["bottom"] == pytest.approx(0.9)
    assert set(grid_heat(np.zeros((3, 3))).values()) == {0.0}
    assert explained_rows(np.arange(5), 10).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="whole number >= 0, got -1"):
        explained_rows(np.arange(5), -1)
