"""Prequential evaluation (:mod:`abyssal.decide.prequential`): label delay at each cutoff, the
queue measures, the continual update's rows, bad input, and a real run of the three policies on
a small time-ordered table (the tabular solution, scikit-learn's breast-cancer rows spread over
four periods)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.decide.prequential import (
    _continual_rows,
    _stream,
    intercepted_at_share,
    label_status,
    prequential,
    review_at_recall,
)


def test_late_labels_are_not_counted_as_negatives() -> None:
    t = np.array([0, 0, 0, 80, 95, 120])
    label = np.array([1, 1, 0, 0, 1, 0])
    labelled_at = np.array([40, 150, 0, 0, 99, 0])
    status = label_status(t, label, labelled_at, cutoff=100, window_s=30)
    # came back; positive not back yet but window passed (counted 0, as a bank would see it);
    # window passed; inside its window: pending; positive back in time; not seen yet
    assert status.tolist() == [1, 0, 0, -1, 1, -1]
    assert label_status(t, label, labelled_at, cutoff=200, window_s=30).tolist() == [
        1,
        1,
        0,
        0,
        1,
        0,
    ]


def test_queue_measures() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    assert review_at_recall(y, s, 2 / 3) == pytest.approx(0.3)  # top 3 hold 2 of 3 positives
    assert review_at_recall(y, s, 1.0) == pytest.approx(0.8)
    assert intercepted_at_share(y, s, 0.1) == pytest.approx(1 / 3)
    assert np.isnan(review_at_recall(np.zeros(4), s[:4], 0.8))


def test_a_continual_update_trains_on_what_came_back_since_and_a_replay_of_groups() -> None:
    table = pd.DataFrame({"t": np.arange(12) * 10, "label": [0] * 12,
                          "user": list("aabbccddeeff")})  # fmt: skip
    s = _stream(table, "t", "label", None, period_s=40)
    now = label_status(s.t, s.label, s.labelled_at, 80, 0)  # rows 0-7 known
    rows = _continual_rows(s, now, 40, 0, False, 0.5, "user", np.random.default_rng(0))
    new = [4, 5, 6, 7]
    assert set(new) <= set(rows)
    old = sorted(set(rows) - set(new))
    assert len(old) == 2 and table["user"][old].nunique() == 1  # one of the two old accounts
    assert (
        _continual_rows(s, now, 40, 0, False, 0.0, None, np.random.default_rng(0)).tolist() == new
    )


def test_bad_streams_are_refused(tmp_path: Path) -> None:
    table = pd.DataFrame({"timestamp": [0, 10], "label": [0, 2]})
    with pytest.raises(DataError, match="0/1"):
        prequential("tabular", table, period_s=5, work=tmp_path)
    with pytest.raises(DataError, match="no 'timestamp'"):
        prequential("tabular", table.rename(columns={"timestamp": "t"}), period_s=5, work=tmp_path)
    with pytest.raises(ConfigError, match="policies"):
        prequential("tabular", table.assign(label=0), period_s=5, policies=["nope"],
                    work=tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match="warmup"):
        prequential("tabular", table.assign(label=0), period_s=100, work=tmp_path)


def test_three_policies_on_a_real_table(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame = frame.sample(frac=1, random_state=0).reset_index(drop=True)
    frame["timestamp"] = np.arange(len(frame)) * 100  # four periods of 15,000 s
    overrides = ["data.source=file", "data.target=target", "data.ignore=[timestamp]",
                 "train.epochs=3", "train.progress=false", "baselines=false",
                 "data.leakage_check=false"]  # fmt: skip
    result = prequential("tabular", frame, period_s=15_000, label_col="target",
                         overrides=overrides, continual_overrides=["train.epochs=1"],
                         work=tmp_path / "work", home=tmp_path / "home")  # fmt: skip
    f = result.frame()
    assert f.groupby("policy").size().to_dict() == {"continual": 3, "frozen": 3, "retrain": 3}
    first = f[f["period"] == 1]
    assert first["version"].nunique() == 1  # every policy starts from one model
    assert (f[f["policy"] == "frozen"]["version"].nunique()) == 1
    assert f[f["policy"] == "retrain"]["version"].nunique() == 3
    retrain = f[f["policy"] == "retrain"]["train_rows"].tolist()
    assert retrain == [150, 300, 450]  # everything known at each cutoff
    assert f[f["policy"] == "continual"]["train_rows"].iloc[1] < 300  # new rows + replay
    assert f["rows"].tolist()[:3] == [150, 150, 150]
    assert f["auprc"].between(0.5, 1).all()
    assert (tmp_path / "work" / "prequential.json").is_file()
    s = result.summary()
    assert s.set_index("policy")["updates"].to_dict() == {"frozen": 1, "retrain": 3,
                                                          "continual": 3}  # fmt: skip
