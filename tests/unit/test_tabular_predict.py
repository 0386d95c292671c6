"""Serving a tabular model: parsing raw rows, responses, and predicting a whole file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from abyssal.core.errors import DataError
from abyssal.solutions.loading import LoadedModel
from abyssal.solutions.tabular.config import TabularConfig, TabularDataConfig
from abyssal.solutions.tabular.predict import TabularPredictor
from abyssal.solutions.tabular.solution import TabularSolution
from abyssal.solutions.tabular.task import make_batch, network_outputs


def pets(n: int = 40, classes: tuple[str, ...] = ("cat", "dog")) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    weight = np.round(rng.uniform(1, 40, n), 1).astype(object)
    weight[3] = None
    return pd.DataFrame(
        {
            "pet_id": [f"Q{i}" for i in range(n)],
            "weight": weight,
            "colour": rng.choice(["black", "white", "brown"], n),
            "kind": [classes[i % len(classes)] for i in range(n)],
        }
    )


def loaded(tmp_path: Path, frame: pd.DataFrame, **data: object) -> LoadedModel:
    frame.to_csv(tmp_path / "train.csv", index=False)
    path = str(tmp_path / "train.csv")
    cfg = TabularConfig(
        data=TabularDataConfig(source="file", path=path, target="kind", ignore=["pet_id"], **data)
    )
    solution = TabularSolution()
    prepared = solution.prepare(cfg)
    spec = solution.model_spec(cfg, prepared)
    torch.manual_seed(0)
    model = solution.build_model(cfg, spec).eval()
    version = SimpleNamespace(ref="tabular:7")
    return LoadedModel(version, solution, cfg, spec, model)  # type: ignore[arg-type]


@pytest.fixture
def pet_model(tmp_path: Path) -> LoadedModel:
    return loaded(tmp_path, pets())


def test_rows_parse_from_text_numbers_and_absent_columns(pet_model: LoadedModel) -> None:
    predictor = pet_model.solution.predictor(pet_model)
    text = predictor.parse({"weight": " 12.5", "colour": "black", "kind": "cat", "extra": 1})
    number = predictor.parse({"weight": 12.5, "colour": "black"})
    assert text == number
    empty = predictor.parse({})
    assert np.isnan(empty.numeric[0]) and empty.categorical == (None,)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"weight": "heavy"}, "column 'weight': expected a number, got 'heavy'"),
        ({"weight": "inf"}, "column 'weight': expected a finite number"),
        ({"weight": True}, "column 'weight': expected a number, got True"),
        ({"colour": {"r": 1}}, "column 'colour': expected text or a number"),
        (["weight", 3], "expected a mapping of column to value, got list"),
    ],
)
def test_bad_rows_name_the_column(pet_model: LoadedModel, payload, message: str) -> None:
    with pytest.raises(DataError) as err:
        pet_model.solution.predictor(pet_model).parse(payload)
    assert message in str(err.value)


def test_binary_responses_match_the_networks_outputs(pet_model: LoadedModel) -> None:
    predictor = pet_model.solution.predictor(pet_model)
    data = pet_model.solution.prepare(pet_model.cfg)
    raw = pd.read_csv(pet_model.cfg.data.path, dtype=str, keep_default_na=False)
    rows = data.rows("val")
    items = [predictor.parse(raw.iloc[int(r)].to_dict()) for r in rows]
    responses = predictor.predict(items)
    with torch.no_grad():
        batch = make_batch(data, rows)
        probs = network_outputs(pet_model.model, batch, data.preprocessor.target)["probability"]
    assert set(responses[0]) == {"prediction", "probability", "p_dog"}
    np.testing.assert_allclose([r["p_dog"] for r in responses], probs[:, 1].numpy(), rtol=1e-5)
    for response in responses:
        expected = "dog" if response["p_dog"] >= 0.5 else "cat"
        assert response["prediction"] == expected
        assert response["probability"] == pytest.approx(
            max(response["p_dog"], 1 - response["p_dog"])
        )
    assert predictor.predict([]) == []


def test_multiclass_and_regression_responses(tmp_path: Path) -> None:
    multi = loaded(tmp_path, pets(60, ("cat", "dog", "fox")))
    response = multi.solution.predictor(multi).predict([multi.solution.predictor(multi).parse({})])
    assert set(response[0]) == {"prediction", "probability", "p_cat", "p_dog", "p_fox"}
    assert sum(response[0][f"p_{c}"] for c in ("cat", "dog", "fox")) == pytest.approx(1.0)
    frame = pets().assign(kind=np.linspace(10, 50, 40))
    reg = loaded(tmp_path, frame)
    predictor = reg.solution.predictor(reg)
    (out,) = predictor.predict([predictor.parse({"weight": "3"})])
    assert set(out) == {"prediction"} and isinstance(out["prediction"], float)


def test_predict_file_keeps_ids_and_target_and_writes_atomically(
    pet_model: LoadedModel, tmp_path: Path
) -> None:
    new = pets(5).drop(columns=["kind"])
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "scores.csv"
    report = pet_model.solution.predict_file(pet_model, tmp_path / "new.csv", out=out)
    written = pd.read_csv(out)
    assert written.columns.tolist() == ["pet_id", "prediction", "probability", "p_dog"]
    assert written["pet_id"].tolist() == new["pet_id"].tolist() and report.rows == 5
    assert "tabular:7: predicted 5 rows" in report.render(top=2)
    assert "target 'kind' (classes cat, dog) from 1 numeric and 1 categorical" in report.render()


def test_predict_file_with_a_bad_cell_names_file_row_and_column(
    pet_model: LoadedModel, tmp_path: Path
) -> None:
    new = pets(5).drop(columns=["kind"]).astype(object)
    new.loc[2, "weight"] = "n/a?"
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "scores.csv"
    with pytest.raises(DataError) as err:
        pet_model.solution.predict_file(pet_model, tmp_path / "new.csv", out=out)
    assert f"{tmp_path / 'new.csv'}, row 3, column 'weight'" in str(err.value)
    assert not out.exists()


def test_predict_file_without_any_feature_column_is_refused(
    pet_model: LoadedModel, tmp_path: Path
) -> None:
    pd.DataFrame({"name": ["a"]}).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(DataError, match=r"none of the model's feature columns.*weight, colour"):
        pet_model.solution.predict_file(pet_model, tmp_path / "new.csv")
    pd.DataFrame({"weight": ["4"]}).to_csv(tmp_path / "some.csv", index=False)
    report = pet_model.solution.predict_file(pet_model, tmp_path / "some.csv")
    assert "columns not in this table (treated as missing): colour" in report.render()


def test_predictor_is_a_predictor(pet_model: LoadedModel) -> None:
    from abyssal.contracts.solution import Predictor

    assert isinstance(TabularPredictor.from_spec(pet_model.model, pet_model.spec), Predictor)


def test_predict_file_reads_parquet_and_names_a_missing_file(
    pet_model: LoadedModel, tmp_path: Path
) -> None:
    new = pets(4).drop(columns=["kind"])
    new["weight"] = pd.to_numeric(new["weight"])  # typed, as Parquet keeps it
    new.to_parquet(tmp_path / "new.parquet")
    new.astype(str).replace("nan", "").to_csv(tmp_path / "new.csv", index=False)
    from_parquet = pet_model.solution.predict_file(pet_model, tmp_path / "new.parquet")
    from_csv = pet_model.solution.predict_file(pet_model, tmp_path / "new.csv")
    pd.testing.assert_frame_equal(from_parquet.frame, from_csv.frame)
    with pytest.raises(DataError, match="file not found"):
        pet_model.solution.predict_file(pet_model, tmp_path / "absent.csv")
