"""The benchmark hooks of the record solutions: typos, dropped edges and feature noise are seeded,
exact in their counts and leave their inputs alone; fraud, tabular and text perturb a copy of
their test inputs that a trained model scores differently on the same ids, list item attributes
with held_out's ids, and refuse a kind their inputs lack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from abyssal.core.config import load_config
from abyssal.core.errors import ConfigError, DataError
from abyssal.data.perturb import Perturbation
from abyssal.data.perturb_records import (
    KEYBOARD_NEIGHBOURS,
    column_std,
    drop_edges,
    feature_noise,
    kept_edges,
    typos,
)
from tests.conftest import TABULAR_CONFIG

TEXTS = [
    "Profit rose 5% in the first quarter, the board said.",
    "Sales fell; orders were weak.",
    "a b c",  # no word of two letters
    "Net operating revenue increased by 12 percent to EUR 4.5 million",
]
WORD = re.compile(r"[^\W\d_]{2,}")
LETTERS = re.compile(r"[^\W\d_]+")


# -- typos ---------------------------------------------------------------------------------------


def _words(texts: list[str]) -> list[str]:
    return [m.group() for t in texts for m in WORD.finditer(t)]


def _one_typo(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one swap, deletion, insertion or substitution."""
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1 :] == b for i in range(len(a)))
    if len(b) == len(a) + 1:
        return any(b[:i] + b[i + 1 :] == a for i in range(len(b)))
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    if len(diff) == 1:
        return b[diff[0]].lower() in KEYBOARD_NEIGHBOURS.get(a[diff[0]].lower(), "")
    i, j = [*diff, 0, 0][:2]
    return len(diff) == 2 and j == i + 1 and (a[i], a[j]) == (b[j], b[i])


@pytest.mark.parametrize("rate", [0.25, 0.5, 1.0])
def test_typos_change_exactly_round_rate_n_words_once_each_and_keep_the_rest(rate) -> None:
    original = list(TEXTS)
    out = typos(TEXTS, rate, seed=7)
    assert original == TEXTS and out is not TEXTS and len(out) == len(TEXTS)
    assert out == typos(TEXTS, rate, seed=7)
    assert out != typos(TEXTS, rate, seed=8)
    changed = 0
    for a, b in zip(TEXTS, out, strict=True):
        # spaces, punctuation and digits stay where they were; a word may shrink to one letter
        assert LETTERS.sub("W", a) == LETTERS.sub("W", b)
        for x, y in zip(LETTERS.findall(a), LETTERS.findall(b), strict=True):
            if x != y:
                changed += 1
                assert len(x) >= 2 and _one_typo(x, y), (x, y)
    assert changed == round(rate * len(_words(TEXTS)))


def test_typos_of_rate_zero_and_texts_without_words_are_unchanged() -> None:
    assert typos(TEXTS, 0.0, seed=1) == TEXTS
    assert typos(["a b", "12 + 3"], 1.0, seed=1) == ["a b", "12 + 3"]
    assert typos([], 0.5, seed=1) == []


def test_typos_refuse_bad_rates_and_items_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"typos: level must be a fraction in \[0, 1\], not 1.5"):
        typos(TEXTS, 1.5, seed=0)
    with pytest.raises(ConfigError, match="typos"):
        typos(TEXTS, float("nan"), seed=0)
    with pytest.raises(DataError, match="text 1 is int, not a string"):
        typos(["fine", 3], 0.5, seed=0)  # type: ignore[list-item]
    with pytest.raises(DataError, match="not one string"):
        typos("just one text", 0.5, seed=0)


def test_keyboard_neighbours_are_symmetric_qwerty_letters() -> None:
    assert KEYBOARD_NEIGHBOURS["f"] == "dgrtcv" and set(KEYBOARD_NEIGHBOURS) == set(
        "qwertyuiopasdfghjklzxcvbnm"
    )
    for a, near in KEYBOARD_NEIGHBOURS.items():
        assert a not in near and all(a in KEYBOARD_NEIGHBOURS[b] for b in near)


# -- edges ---------------------------------------------------------------------------------------


def test_drop_edges_removes_exactly_round_level_e_aligned_edges_in_order() -> None:
    src, dst = np.arange(20), np.arange(20) * 10
    time = np.arange(20, dtype=np.int64) + 1000
    edges = {"edge_src": src, "edge_dst": dst, "edge_time": time}
    out = drop_edges(edges, 0.35, seed=3)
    assert set(out) == set(edges) and len(out["edge_src"]) == 20 - round(0.35 * 20)
    assert np.all(np.diff(out["edge_src"]) > 0)  # original order kept
    assert np.array_equal(out["edge_dst"], out["edge_src"] * 10)  # rows stay aligned
    assert np.array_equal(out["edge_time"], out["edge_src"] + 1000)
    assert np.array_equal(src, np.arange(20)) and out["edge_src"] is not src
    assert all(np.array_equal(out[k], drop_edges(edges, 0.35, seed=3)[k]) for k in out)
    assert not np.array_equal(out["edge_src"], drop_edges(edges, 0.35, seed=4)["edge_src"])
    same = drop_edges(edges, 0.0, seed=3)
    assert all(np.array_equal(same[k], edges[k]) and same[k] is not edges[k] for k in edges)
    assert len(drop_edges(edges, 1.0, seed=3)["edge_src"]) == 0


def test_drop_edges_on_a_table_keeps_its_index_and_leaves_it_alone() -> None:
    table = pd.DataFrame({"source": list("abcdefgh"), "target": list("bcdefgha")})
    out = drop_edges(table, 0.25, seed=0)
    assert len(out) == 6 and len(table) == 8
    assert out.index.tolist() == kept_edges(8, 0.25, seed=0).tolist()


def test_drop_edges_refuses_bad_levels_and_misaligned_arrays() -> None:
    with pytest.raises(ConfigError, match="drop_edges: level must be a fraction"):
        drop_edges({"src": np.arange(3)}, -0.1, seed=0)
    with pytest.raises(DataError, match="one length; got edge_src 3, edge_dst 2"):
        drop_edges({"edge_src": np.arange(3), "edge_dst": np.arange(2)}, 0.5, seed=0)
    with pytest.raises(DataError, match="no edge arrays"):
        drop_edges({}, 0.5, seed=0)


# -- feature noise -------------------------------------------------------------------------------


def test_feature_noise_scales_with_the_columns_std_on_chosen_rows_and_columns_only() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4000, 3)) * np.array([1.0, 10.0, 0.0]) + 5.0  # third: constant
    values[0, 0] = np.nan
    original = values.copy()
    std = column_std(values)
    assert np.allclose(std[:2], [1.0, 10.0], rtol=0.05) and std[2] == 0
    out = feature_noise(values, std, 0.5, seed=1)
    assert np.array_equal(values, original, equal_nan=True)
    assert np.isnan(out[0, 0]) and np.array_equal(out[:, 2], values[:, 2])
    delta = (out - values)[1:, :2]
    assert np.allclose(delta.std(axis=0), 0.5 * std[:2], rtol=0.05)
    assert np.array_equal(out, feature_noise(values, std, 0.5, seed=1), equal_nan=True)
    assert not np.array_equal(out, feature_noise(values, std, 0.5, seed=2), equal_nan=True)
    rows = np.array([3, 10, 11])
    part = feature_noise(values, None, 0.5, seed=1, rows=rows, columns=[False, True, True])
    same = (part == values) | (np.isnan(part) & np.isnan(values))
    moved = np.flatnonzero(~same.all(axis=1))
    assert moved.tolist() == rows.tolist() and np.array_equal(
        part[:, 0], values[:, 0], equal_nan=True
    )
    assert np.allclose(part[rows], out[rows] * [0, 1, 1] + values[rows] * [1, 0, 0])  # same draws
    assert np.array_equal(feature_noise(values, std, 0.0, seed=1), values, equal_nan=True)


def test_feature_noise_refuses_bad_input_naming_it() -> None:
    values = np.ones((3, 2))
    with pytest.raises(ConfigError, match="feature_noise: level must be a finite number >= 0"):
        feature_noise(values, None, -1.0, seed=0)
    with pytest.raises(DataError, match="std has 3 entries for 2 columns"):
        feature_noise(values, [1.0, 1.0, 1.0], 0.1, seed=0)
    with pytest.raises(DataError, match="values must be numbers"):
        feature_noise(np.array([["a", "b"]], dtype=object), None, 0.1, seed=0)
    with pytest.raises(DataError, match="2-D"):
        feature_noise(np.ones(3), None, 0.1, seed=0)
    with pytest.raises(DataError, match=r"rows must be within 0\.\.2"):
        feature_noise(values, None, 0.1, seed=0, rows=[5])


# -- the solutions -------------------------------------------------------------------------------


def _trained(solution: Any, cfg: Any, home: Path) -> tuple[Any, Any]:
    """Prepared data and a model trained briefly on it (no model version)."""
    from abyssal.train.api import fit_task

    data = solution.prepare(cfg)
    metric, mode = solution.monitor(cfg, data)
    fit = fit_task(solution.task(cfg, data), cfg.train, metric=metric, mode=mode, home=home)
    return data, fit.model


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any, Any]:
    pytest.importorskip("torch_geometric")
    from abyssal.solutions.fraud.solution import FraudSolution

    solution = FraudSolution()
    quick = ["data.synthetic_users=120", "data.synthetic_rings=2", "data.synthetic_days=8"]
    quick += ["model.hidden=16", "model.heads=2", "train.epochs=2", "train.progress=false"]
    cfg = load_config(solution.config_cls, None, [*quick, "baselines=false"])
    return (solution, cfg, *_trained(solution, cfg, tmp_path_factory.mktemp("fraud")))


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any, Any]:
    from abyssal.solutions.tabular.config import TabularSampleConfig
    from abyssal.solutions.tabular.sample import generate_sample
    from abyssal.solutions.tabular.solution import TabularSolution

    root = tmp_path_factory.mktemp("tabular")
    generate_sample(TabularSampleConfig(), root / "data")
    solution = TabularSolution()
    overrides = [f"data.path={root / 'data' / 'train.csv'}", "train.progress=false"]
    cfg = load_config(solution.config_cls, TABULAR_CONFIG, [*overrides, "train.epochs=3"])
    return (solution, cfg, *_trained(solution, cfg, root / "home"))


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any, Any]:
    transformers = pytest.importorskip("transformers")
    from abyssal.solutions.text.solution import TextSolution
    from tests.unit.tiny_text import tiny_text_overrides

    root = tmp_path_factory.mktemp("text")
    solution = TextSolution()
    quick = tiny_text_overrides(
        root, "train.epochs=4", "train.lr=0.01", "data.max_tokens=64", "data.pii=keep"
    )
    # the word-level vocabulary passed by position: transformers 5 ignores ``vocab_file=`` (the
    # helper's tokenizer then knows only the special tokens, and every word reads as [UNK])
    bert = root / "bert"
    transformers.BertTokenizerFast(str(bert / "vocab.txt")).save_pretrained(bert)
    cfg = load_config(solution.config_cls, None, quick)
    return (solution, cfg, *_trained(solution, cfg, root / "home"))


def _scores(frame: pd.DataFrame) -> np.ndarray:
    return frame["score" if "score" in frame else "probability"].to_numpy(dtype=np.float64)


def _check_perturbed(solution, cfg, data, model, perturbation, snapshot) -> Any:
    """perturb leaves ``data`` as ``snapshot`` saw it; held_out on the copy scores the same
    ids and labels, in the same order, differently; item_attributes lists the same ids."""
    before = snapshot(data)
    clean = solution.held_out(cfg, model, data)
    copy = solution.perturb(cfg, data, perturbation)
    assert copy is not data and copy.fingerprint != data.fingerprint
    after = snapshot(data)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, pd.DataFrame):
            assert value.equals(after[key]), key
        else:
            assert np.array_equal(value, after[key], equal_nan=value.dtype != object), key
    noisy = solution.held_out(cfg, model, copy)
    assert noisy["id"].tolist() == clean["id"].tolist() and len(clean) > 0
    assert noisy["label"].tolist() == clean["label"].tolist()
    assert not np.allclose(_scores(noisy), _scores(clean))
    again = solution.held_out(cfg, model, solution.perturb(cfg, data, perturbation))
    assert np.array_equal(_scores(again), _scores(noisy))  # seeded
    for d in (data, copy):
        attributes = solution.item_attributes(cfg, d)
        assert attributes["id"].tolist() == clean["id"].tolist()
    return copy


def test_fraud_drops_edges_of_the_scoring_graph_and_noises_test_accounts(fraud) -> None:
    solution, cfg, data, model = fraud
    assert solution.perturbations == ("drop_edges", "feature_noise")

    def snapshot(d):
        g = d.graph
        arrays = {k: getattr(g, k) for k in ("edge_src", "edge_dst", "edge_time", "x", "y")}
        return {k: v.copy() for k, v in {**arrays, **d.masks}.items()}

    e = data.graph.num_edges
    copy = _check_perturbed(
        solution, cfg, data, model, Perturbation("drop_edges", 0.3, 1), snapshot
    )
    assert copy.graph.num_edges == e - round(0.3 * e) and data.graph.num_edges == e
    assert copy.graph.num_nodes == data.graph.num_nodes
    copy = _check_perturbed(
        solution, cfg, data, model, Perturbation("feature_noise", 0.5, 1), snapshot
    )
    moved = np.flatnonzero(np.any(copy.graph.x != data.graph.x, axis=1))
    assert set(moved.tolist()) <= set(np.flatnonzero(data.masks["test"]).tolist()) and len(moved)
    types = [i for i, n in enumerate(data.graph.feature_names) if n.startswith("type_")]
    assert np.array_equal(copy.graph.x[:, types], data.graph.x[:, types])

    attributes = solution.item_attributes(cfg, data)
    assert {"in_degree", "out_degree", "degree", "n_transactions", "total_amount"} <= set(
        attributes.columns
    )
    assert {"first_seen", "age_days", "devices"} <= set(attributes.columns)
    assert (attributes["degree"] == attributes["in_degree"] + attributes["out_degree"]).all()
    assert (attributes["n_transactions"] > 0).all() and (attributes["total_amount"] > 0).all()
    fewer = solution.item_attributes(
        cfg, solution.perturb(cfg, data, Perturbation("drop_edges", 0.5))
    )
    assert fewer["degree"].sum() < attributes["degree"].sum()


def test_tabular_noises_the_test_rows_numbers_and_lists_their_own_columns(tabular) -> None:
    solution, cfg, data, model = tabular
    assert solution.perturbations == ("feature_noise",)

    def snapshot(d):
        return {
            "numeric": d.numeric.copy(),
            "encoded": d.encoded["numeric"].copy(),
            "target": d.target.copy(),
            "frame": d.frame.copy(),
        }

    copy = _check_perturbed(
        solution, cfg, data, model, Perturbation("feature_noise", 0.3, 2), snapshot
    )
    train, test = data.rows("train"), data.rows("test")
    assert np.array_equal(copy.numeric[train], data.numeric[train], equal_nan=True)
    assert np.array_equal(np.isnan(copy.numeric), np.isnan(data.numeric))  # missing stays
    assert not np.allclose(copy.numeric[test], data.numeric[test], equal_nan=True)
    assert np.array_equal(copy.categorical, data.categorical)

    attributes = solution.item_attributes(cfg, data)
    assert attributes.columns[0] == "id" and attributes["id"].iloc[0].startswith("R")
    assert "diagnosis" not in attributes and "mean radius" in attributes
    assert attributes.columns[1:].tolist() == [
        c for c in data.frame.columns if c in data.schema.features
    ]
    file = pd.read_csv(data.where).set_index("id").loc[attributes["id"]]
    assert np.allclose(
        attributes["mean radius"], file["mean radius"].to_numpy(), equal_nan=True
    )  # the file's own values, before imputation and scaling
    assert attributes.query("`mean radius` > 15")["mean radius"].gt(15).all()


def test_text_gets_typos_in_test_texts_only_tokenized_again(text) -> None:
    solution, cfg, data, model = text
    assert solution.perturbations == ("typos",)

    def snapshot(d):
        return {
            "texts": np.array(d.records.texts, dtype=object),
            "lengths": d.tokens.lengths.copy(),
            "ids": np.concatenate(d.tokens.ids),
            "labels": d.labels.copy(),
        }

    copy = _check_perturbed(solution, cfg, data, model, Perturbation("typos", 0.6, 3), snapshot)
    test = set(data.rows("test").tolist())
    for i, (a, b) in enumerate(zip(data.records.texts, copy.records.texts, strict=True)):
        if i not in test:
            assert a == b and np.array_equal(data.tokens.ids[i], copy.tokens.ids[i])
    words = sum(len(_words([data.records.texts[i]])) for i in test)
    changed = sum(
        x != y
        for i in test
        for x, y in zip(data.records.texts[i].split(), copy.records.texts[i].split(), strict=True)
    )
    assert changed == round(0.6 * words)
    assert any(not np.array_equal(data.tokens.ids[i], copy.tokens.ids[i]) for i in test)

    attributes = solution.item_attributes(cfg, data)
    assert {"length_words", "length_chars", "length_tokens"} <= set(attributes.columns)
    first = data.rows("test")[0]
    assert attributes["length_chars"].iloc[0] == len(data.records.texts[first])
    assert attributes["length_words"].iloc[0] == len(data.records.texts[first].split())


@pytest.mark.parametrize(
    ("name", "kind", "known"),
    [
        ("fraud", "typos", "drop_edges, feature_noise"),
        ("tabular", "drop_edges", "feature_noise"),
        ("text", "noise", "typos"),
    ],
)
def test_a_kind_the_inputs_lack_is_refused_listing_those_they_take(name, kind, known) -> None:
    from abyssal.solutions import get_solution

    solution = get_solution(name)
    with pytest.raises(
        ConfigError, match=f"solution '{name}' has no perturbation '{kind}'; its kinds: {known}$"
    ):
        solution.perturb(None, None, Perturbation(kind, 0.1))


def test_fraud_attributes_of_an_edge_list_hold_its_node_file_columns_and_no_times() -> None:
    pytest.importorskip("torch_geometric")
    from abyssal.solutions.fraud.bench import account_attributes
    from abyssal.solutions.fraud.dataset import FraudData
    from abyssal.solutions.fraud.graph import graph_from_edges

    edges = pd.DataFrame({"source": list("aabcd"), "target": list("bcdda"), "rating": [1.0] * 5})
    labels = pd.DataFrame({"node": list("abcd"), "label": [0, 1, 0, 1]})
    nodes = pd.DataFrame({"node": list("abcd"), "age": [30.0, 41.0, np.nan, 25.0]})
    graph = graph_from_edges(edges, labels, [3600], nodes)
    test = np.array([False, True, False, True])  # b, d
    masks = {"train": ~test, "val": np.zeros(4, dtype=bool), "test": test}
    frame = account_attributes(FraudData(graph, masks, "fp", "edges", input_format="edges"))
    assert frame["id"].tolist() == ["b", "d"]
    assert frame["in_degree"].tolist() == [1, 2] and frame["out_degree"].tolist() == [1, 1]
    assert frame["age"].tolist() == [41.0, 25.0]
    assert not {"first_seen", "n_transactions", "total_amount"} & set(frame.columns)  # static
